"""Fixtures shared by the packages' own tests (no ROS needed)."""

import os
from pathlib import Path

import pytest

TABLETOP = (
    Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[1])) / 'config' / 'scenes' / 'tabletop.yaml'
)


@pytest.fixture(scope='module')
def sim():
    """The default tabletop world, one per test module."""
    from twinloop_twin import scene, world

    w = world.SimWorld(scene.SceneConfig.from_yaml(TABLETOP))
    yield w
    w.close()
