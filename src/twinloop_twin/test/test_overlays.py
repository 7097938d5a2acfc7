"""Overlays are drawn in 3D: a path shows up where it projects in every view; numbers skip hidden keypoints."""

import numpy as np
import pytest

from twinloop_twin import cameras, overlays


@pytest.mark.parametrize('camera', ['front', 'left'])
def test_path_appears_where_it_projects(sim, camera):
    path = np.array([[0.3, 0.3, 0.15], [0.45, 0.3, 0.15], [0.6, 0.3, 0.15]])
    plain = sim.render(camera, 320, 240, depth=False)
    drawn = sim.render(camera, 320, 240, depth=False, overlay=overlays.candidate_overlay([path], [1.0]))
    u, v = np.round(plain.intrinsics.project(cameras.world_to_optical(sim.data, camera, path[1]))[0]).astype(int)
    assert np.abs(drawn.rgb[v, u].astype(int) - plain.rgb[v, u].astype(int)).sum() > 60
    assert drawn.rgb[v, u, 1] > drawn.rgb[v, u, 0], 'score 1.0 is green'
    changed = np.abs(drawn.rgb.astype(int) - plain.rgb.astype(int)).sum(axis=2) > 30
    assert 20 < changed.sum() < 0.2 * changed.size


def test_keypoint_labels_skip_hidden_points(sim):
    cube, _ = sim.object_pose('red_cube')
    visible = cube + (0, 0, 0.06)
    hidden = cube + (0, 0, 0.025)  # inside the cube
    frame = sim.render('front', 320, 240, overlay=overlays.keypoint_overlay([visible, hidden]))
    drawn = overlays.label_keypoints(frame, [visible, hidden], [1, 2])
    assert drawn == [1]


def test_score_colours():
    assert overlays.score_rgba(0.0)[:2] == (1.0, 0.0)
    assert overlays.score_rgba(1.0)[:2] == (0.0, 1.0)
