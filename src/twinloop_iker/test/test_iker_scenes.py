"""IKER's scenes (config/scenes/iker_*.yaml) and their object kinds: each scene builds in
twinloop_twin and its objects rest where the file puts them through a simulated second; the shoes
are a mirrored pair, the rack is static and bears things at its height, the box is too wide to grasp."""

import os
from pathlib import Path

import numpy as np
import pytest

from twinloop_core.gripper import OPEN_WIDTH
from twinloop_twin import objects, scene, world

SCENES = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3])) / 'config' / 'scenes'


@pytest.mark.parametrize('name', ['iker_shoes', 'iker_align', 'iker_shelf', 'iker_three_stage'])
def test_scene_builds_and_its_objects_rest(name):
    config = scene.SceneConfig.from_yaml(SCENES / f'{name}.yaml')
    w = world.SimWorld(config)  # reset() settles 300 steps
    try:
        w.step(500)  # one more second
        for o in config.objects:
            position, quat = w.object_pose(o.id)
            z = o.pos[2] if len(o.pos) > 2 else 0.0
            assert np.allclose(position, (o.pos[0], o.pos[1], z), atol=0.01), f'{o.id} moved to {position}'
            expected = (np.cos(o.yaw / 2), 0.0, 0.0, np.sin(o.yaw / 2))
            turn = 2 * np.degrees(np.arccos(min(1.0, abs(float(np.dot(quat, expected))))))
            assert turn < 3.0, f'{o.id} turned {turn:.1f} degrees'
    finally:
        w.close()


def test_shoes_are_a_mirrored_pair():
    left, right = (objects.shape_mesh(objects.make_shape('shoe', side=side)) for side in ('left', 'right'))
    mirrored = right.copy()
    mirrored.vertices[:, 1] *= -1
    assert np.allclose(np.sort(left.vertices, axis=0), np.sort(mirrored.vertices, axis=0), atol=1e-9)
    assert not np.allclose(np.sort(left.vertices, axis=0), np.sort(right.vertices, axis=0), atol=1e-3)
    shape = objects.make_shape('shoe', side='left')
    assert shape.extents == pytest.approx((0.24, 0.09, 0.08)) and not shape.static
    with pytest.raises(ValueError, match='left or right'):
        objects.make_shape('shoe', side='middle')


@pytest.mark.parametrize('bars', [False, True])
def test_rack_is_static_with_its_top_at_its_height(bars):
    shape = objects.make_shape('rack', size=(0.2, 0.6, 0.12), bars=bars)
    assert shape.static and shape.extents == pytest.approx((0.2, 0.6, 0.12))
    mesh = objects.shape_mesh(shape)
    top = mesh.vertices[mesh.vertices[:, 2] > 0.12 - 1e-9]
    assert np.ptp(top[:, 0]) == pytest.approx(0.2) and np.ptp(top[:, 1]) == pytest.approx(0.6)


def test_book_is_thin_and_the_box_is_pushed():
    assert objects.make_shape('book').extents == pytest.approx((0.22, 0.15, 0.03))
    assert min(objects.make_shape('box').extents[:2]) > OPEN_WIDTH, 'wider than the gripper opens'
