"""ament_python build script for the twinloop_iker package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_iker'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    package_data={PACKAGE: ['policies/*/*']},  # the trained PPO policies (solvers.SHIPPED)
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='twinloop developers',
    maintainer_email='dev@twinloop.invalid',
    description=(
        'The IKER engine (shared/seeds/002): a sandbox for VLM-written keypoint code and the keypoint reward.'
    ),
    license='Apache-2.0',
)
