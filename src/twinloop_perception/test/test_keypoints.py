"""IKER keypoints: extremities of movable objects, spread points on static ones, object-grouped
labels, rigid motion with the object, occlusion and the overlap-removal rule."""

import numpy as np
from scipy.spatial.transform import Rotation

from twinloop_perception import keypoints as kp
from twinloop_twin import objects


def _mesh(kind, **params):
    return objects.shape_mesh(objects.make_shape(kind, **params))


def test_extremities_labels_and_static_spread():
    block = _mesh('block', size=(0.10, 0.04, 0.04))
    points = kp.propose([('block', block, False), ('bin', _mesh('bin'), True)], static_count=5)
    assert [k.label for k in points] == list(range(1, 10))
    assert [k.object_id for k in points] == ['block'] * 4 + ['bin'] * 5
    ends = np.array([k.local for k in points[:2]])
    assert np.allclose(sorted(np.abs(ends[:, 0])), [0.05, 0.05], atol=0.003)  # the long axis' two ends
    spread = np.array([k.local for k in points[4:]])
    gaps = np.linalg.norm(spread[:, None] - spread[None], axis=2)[np.triu_indices(5, 1)]
    assert gaps.min() > 0.04  # spread, not clumped


def test_keypoints_follow_their_object():
    points = kp.propose([('cube', _mesh('cube', size=0.05), False)])
    before = kp.world_positions(points, {'cube': ((0.5, 0.0, 0.0), (1, 0, 0, 0))})
    turn = Rotation.from_euler('z', 0.7)
    q = turn.as_quat()
    after = kp.world_positions(points, {'cube': ((0.4, 0.2, 0.1), (q[3], q[0], q[1], q[2]))})
    assert np.allclose(after, turn.apply(before - (0.5, 0.0, 0.0)) + (0.4, 0.2, 0.1))
    assert not np.allclose(after, before)


def test_overlaps_drop_background_first_then_the_higher_label():
    points = [
        kp.Keypoint(1, 'a', np.zeros(3), False),
        kp.Keypoint(2, 'a', np.zeros(3), False),
        kp.Keypoint(3, 'b', np.zeros(3), False),
        kp.Keypoint(4, 'rack', np.zeros(3), True),
        kp.Keypoint(5, 'rack', np.zeros(3), True),
    ]
    pixels = np.array([[100, 100], [300, 300], [104, 100], [300, 305], [50, 50]], float)
    kept = kp.remove_overlaps(points, pixels, np.ones(5, bool), min_pixels=12)
    assert [k.label for k in kept] == [1, 2, 5]  # 3 loses to the lower label 1, background 4 to object 2
    kept = kp.remove_overlaps(points, pixels, np.array([False, True, True, True, True]), min_pixels=12)
    assert [k.label for k in kept] == [2, 3, 5]  # hidden 1 no longer suppresses 3


def test_projection_hides_occluded_keypoints():
    K = np.array([[100.0, 0, 50], [0, 100.0, 50], [0, 0, 1]])
    points = np.array([[0.0, 0.0, 1.0], [0.1, 0.0, 1.0]])
    depth = np.full((100, 100), 2.0)
    depth[45:55, 45:55] = 0.5  # something in front of the first point
    pixels, visible = kp.project(points, K, np.zeros(3), np.eye(3), depth)
    assert np.allclose(pixels[0], (50, 50)) and list(visible) == [False, True]
