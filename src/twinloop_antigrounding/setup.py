"""ament_python build script for the twinloop_antigrounding package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_antigrounding'

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
        'The AntiGrounding decision engine (shared/seeds/000): annealed candidate sampling, stages, '
        'IK candidates, the rotation module and the MPC loop, registered as anti_grounding.'
    ),
    license='Apache-2.0',
)
