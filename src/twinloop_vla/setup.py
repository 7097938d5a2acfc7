"""ament_python build script for the twinloop_vla package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_vla'

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
        'Learned policies (VLA) behind RunPolicy: the policy registry, VGA (vision-geometry-action) '
        'and an HTTP client for external policy servers.'
    ),
    license='Apache-2.0',
)
