"""ament_python build script for the twinloop_cameras package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_cameras'

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
    description='The realsense_camera node: RealSense cameras as ROS 2 topics.',
    license='Apache-2.0',
    entry_points={'console_scripts': ['realsense_camera = twinloop_cameras.realsense_camera_node:main']},
)
