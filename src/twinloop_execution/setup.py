"""ament_python build script for the twinloop_execution package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_execution'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='twinloop developers',
    maintainer_email='dev@twinloop.invalid',
    description='The execution node: Panda IK (mink), ruckig trajectories, the safety gate, the MoveIt backend.',
    license='Apache-2.0',
    entry_points={'console_scripts': ['execution = twinloop_execution.execution_node:main']},
)
