"""ament_python build script for the twinloop_bringup package."""

import os

from setuptools import find_packages, setup

PACKAGE = 'twinloop_bringup'
WORKSPACE = os.path.join('..', '..')


def workspace_tree(folder):
    """data_files entries installing the workspace-level folder into this package's share."""
    entries = []
    for root, _, files in os.walk(os.path.join(WORKSPACE, folder)):
        relative = os.path.relpath(root, WORKSPACE)
        entries.append((f'share/{PACKAGE}/{relative}', [os.path.join(root, f) for f in sorted(files)]))
    return entries


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        # The workspace-level configuration, installed with the package that runs the graphs.
        *workspace_tree('config'),
        *workspace_tree('launch'),
        *workspace_tree('urdf'),
        *workspace_tree('rviz'),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='twinloop developers',
    maintainer_email='dev@twinloop.invalid',
    description='The twinloop command: doctor, DDS settings, graphs, demo, recording, ExecuteInstruction client.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'twinloop = twinloop_bringup.cli:main',
        ],
    },
)
