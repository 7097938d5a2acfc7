"""ament_python build script for the twinloop_scripted package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_scripted'

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
        'The scripted pick-and-place baseline engine (not AntiGrounding: no candidates are scored), '
        'registered as scripted_pick_place.'
    ),
    license='Apache-2.0',
)
