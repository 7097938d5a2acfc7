from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'twinloop_bringup'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        # The workspace-level configuration, installed with the package that runs the graphs.
        (f'share/{PACKAGE}/config', glob('../../config/*')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='twinloop developers',
    maintainer_email='dev@twinloop.invalid',
    description='The twinloop command: doctor, DDS settings, graphs.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'twinloop = twinloop_bringup.cli:main',
        ],
    },
)
