"""ament_python build script for the twinloop_ros package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_ros'

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
        'ROS glue every twinloop node shares: topics and QoS, conversions, joint states, the message codec, main().'
    ),
    license='Apache-2.0',
)
