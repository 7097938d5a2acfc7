"""ament_python build script for the twinloop_scoring package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_scoring'

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
    description='VLM backends, structured VQA, view fusion, the trajectory_scoring node.',
    license='Apache-2.0',
    entry_points={'console_scripts': ['trajectory_scoring = twinloop_scoring.scoring_node:main']},
)
