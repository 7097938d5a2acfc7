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
    entry_points={'console_scripts': ['vla_policy = twinloop_vla.vla_policy_node:main']},
    zip_safe=True,
    maintainer='twinloop developers',
    maintainer_email='dev@twinloop.invalid',
    description=(
        'Learned policies (VLA) behind RunPolicy: the policy registry, VGA (vision-geometry-action) '
        'an HTTP client for external policy servers and the vla_policy node (RunPolicy).'
    ),
    license='Apache-2.0',
)
