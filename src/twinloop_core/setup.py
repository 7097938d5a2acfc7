"""ament_python build script for the twinloop_core package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_core'

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
    description=(
        'ROS-free contracts: shared types, gripper and grasp geometry, judging, outcomes, '
        'port protocols, DecisionEngine + registry.'
    ),
    license='Apache-2.0',
)
