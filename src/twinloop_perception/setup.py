"""ament_python build script for the twinloop_perception package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_perception'

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
        'The pose_estimation node: 6D pose estimation of known objects from RGB-D (open3d); IKER keypoint proposal.'
    ),
    license='Apache-2.0',
    entry_points={'console_scripts': ['pose_estimation = twinloop_perception.pose_estimation_node:main']},
)
