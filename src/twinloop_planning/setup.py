"""ament_python build script for the twinloop_planning package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_planning'

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
    description=("The task_orchestrator node, run reports, and the engines' ports on ROS and in process."),
    license='Apache-2.0',
    entry_points={'console_scripts': ['task_orchestrator = twinloop_planning.orchestrator_node:main']},
)
