"""The query image on real MuJoCo renders of config/scenes/tabletop.yaml: markers sit on the objects
they belong to (the segmentation says so) where the camera projects their keypoints, numbers are
unique proposal labels and markers do not overlap, a keypoint hidden behind another object is not
drawn, the axes legend is drawn and described, and a RealSense-style CameraInfo gives the same image."""

import numpy as np
import pytest

from twinloop_iker import query_image as qi
from twinloop_twin import cameras, scene, world

WHITE = (255, 255, 255)


def query(sim, width=320, height=240, camera='front', depth=True):
    frame = sim.render(camera, width, height)
    view = qi.CameraView.from_frame(frame)
    if not depth:
        view = qi.CameraView(view.rgb, view.K, view.position, view.rotation)
    poses = {oid: sim.object_pose(oid) for oid in sim.object_ids}
    return frame, qi.render_query_image(view, qi.scene_objects(sim.config, poses))


@pytest.mark.parametrize('size', [(320, 240), (640, 480)])
def test_markers_land_on_their_objects(sim, size):
    frame, q = query(sim, *size)
    radius = qi.marker_radius(*size)
    segmentation = sim.segmentation('front', *size)
    assert q.image.shape == (size[1], size[0], 3)
    assert set(q.object_ids) == set(sim.object_ids)
    assert len(q.keypoints) >= 6 and {oid for oid, _ in q.keypoints.values()} == set(sim.object_ids)
    labels = {k.label: k.object_id for k in q.proposed}
    for number, (oid, xyz) in q.keypoints.items():
        assert labels[number] == oid, 'the number is the proposal label of that object'
        u, v = frame.intrinsics.project(cameras.world_to_optical(sim.data, 'front', np.array(xyz)))[0]
        assert np.allclose(q.pixels[number], (u, v), atol=1e-6)
        iu, iv = int(round(u)), int(round(v))
        around = segmentation[iv - 2 : iv + 3, iu - 2 : iu + 3]
        assert (around == sim.object_ids.index(oid)).any(), f'keypoint {number} is not on {oid}'
        rows, cols = np.mgrid[: size[1], : size[0]]
        distance = np.hypot(cols - u, rows - v)
        disc = q.image[distance < radius - 1.5]
        assert (disc == WHITE).all(axis=1).mean() > 0.5, 'a white disc'
        assert (disc.max(axis=1) < 128).sum() >= 4, 'with a black number'
        for du, dv in ((1, 0), (-1, 0), (0, 1), (0, -1)):  # a black outline on every side
            ray = [
                q.image[int(round(v + dv * t)), int(round(u + du * t))]
                for t in np.arange(radius - 2, radius + 1.1, 0.5)
            ]
            assert min(int(p.max()) for p in ray) < 80
    pixels = np.array(list(q.pixels.values()))
    gaps = np.linalg.norm(pixels[:, None] - pixels[None], axis=2)[np.triu_indices(len(pixels), 1)]
    assert gaps.min() >= 2 * radius + 2, 'markers do not overlap'
    assert q.object_keypoints() == {
        oid: sorted(n for n, (o, _) in q.keypoints.items() if o == oid) for oid in sim.object_ids
    }


def test_axes_legend_is_drawn_and_described(sim):
    frame, q = query(sim)
    # the front camera looks back at the robot: +x comes towards it (down), +y is to the right
    assert q.axes['x'].startswith('down') and q.axes['y'] == 'right' and q.axes['z'] == 'up'
    corner = q.image[150:, 230:].reshape(-1, 3).astype(int)
    for colour in qi.AXIS_COLOURS.values():
        assert (np.abs(corner - colour).sum(axis=1) < 30).sum() > 5, f'the {colour} arrow is drawn'
    assert not np.array_equal(q.image[150:, 230:], frame.rgb[150:, 230:])


def test_hidden_keypoints_are_not_drawn():
    """A tall box between the camera and a cube hides the cube: without depth its keypoints would be drawn."""
    config = scene.SceneConfig.from_dict(
        {
            'objects': [
                {'id': 'cube', 'kind': 'cube', 'params': {'size': 0.04}, 'pos': [0.5, 0.0]},
                {'id': 'wall', 'kind': 'box', 'params': {'size': [0.06, 0.3, 0.3]}, 'pos': [0.62, 0.0], 'mass': 1.0},
            ],
            'cameras': [{'name': 'low', 'pos': [1.2, 0.0, 0.1], 'look_at': [0.4, 0.0, 0.02], 'fovy': 45}],
        }
    )
    w = world.SimWorld(config)
    try:
        _, hidden = query(w, camera='low')
        _, seen_through = query(w, camera='low', depth=False)
    finally:
        w.close()
    assert hidden.object_keypoints()['cube'] == []
    assert seen_through.object_keypoints()['cube'], 'without depth the cube keypoints project inside the image'


def test_camera_info_view_matches_the_frame(sim):
    frame = sim.render('front', 320, 240)
    k = [frame.intrinsics.fx, 0, frame.intrinsics.cx, 0, frame.intrinsics.fy, frame.intrinsics.cy, 0, 0, 1]
    from_info = qi.CameraView.from_camera_info(frame.rgb, k, frame.position, frame.rotation, frame.depth)
    poses = {oid: sim.object_pose(oid) for oid in sim.object_ids}
    objects = qi.scene_objects(sim.config, poses)
    a = qi.render_query_image(qi.CameraView.from_frame(frame), objects)
    b = qi.render_query_image(from_info, objects)
    assert a.keypoints == b.keypoints and np.array_equal(a.image, b.image)
