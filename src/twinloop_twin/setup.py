"""ament_python build script for the twinloop_twin package."""

from setuptools import find_packages, setup

PACKAGE = 'twinloop_twin'

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
        'MuJoCo scenes, the world_sim and libero_world nodes, the sim twin (sim_twin node), '
        'overlays, markers, physics fit, Panda URDF.'
    ),
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'world_sim = twinloop_twin.world_sim_node:main',
            'sim_twin = twinloop_twin.sim_twin_node:main',
            'libero_world = twinloop_twin.libero_world_node:main',
        ],
    },
)
