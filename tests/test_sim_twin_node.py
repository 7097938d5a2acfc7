"""sim_twin over DDS: synced from world_sim's ground truth, it rolls out and renders on request."""

import os
import time

import numpy as np
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectoryPoint
from twinloop_interfaces.msg import CandidateTrajectory, DetectedObjectArray
from twinloop_interfaces.srv import RenderViews, RolloutTrajectories, SyncTwin

from twinloop_bringup.client import call_service
from twinloop_execution.kinematics import PandaIk
from twinloop_twin import scene, world
from twinloop_ros import conversions as ros_conversions
from twinloop_ros.topics import GROUND_TRUTH_OBJECTS

SCENE = os.path.join(os.environ['TWINLOOP_ROOT'], 'config', 'scenes', 'tabletop.yaml')


def _call(node, executor, srv_type, name, request, timeout=60):
    return call_service(executor, node.create_client(srv_type, name), request, timeout, name)


def _sync_when_ready(node, executor, timeout):
    """An empty ~/sync, repeated while sim_twin has no topic messages yet (at most timeout [s])."""
    cli = node.create_client(SyncTwin, '/sim_twin/sync')
    deadline = time.monotonic() + timeout
    while True:
        response = call_service(executor, cli, SyncTwin.Request(), 60, '/sim_twin/sync')
        if response.success or 'yet' not in response.message or time.monotonic() > deadline:
            return response
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)


def _candidate(cid, waypoints, durations):
    c = CandidateTrajectory(id=cid)
    c.trajectory.joint_names = list(scene.ARM_JOINTS)
    t = 0.0
    for q, d in zip(waypoints, durations):
        t += d
        c.trajectory.points.append(
            JointTrajectoryPoint(
                positions=[float(v) for v in q], time_from_start=Duration(sec=int(t), nanosec=int((t % 1) * 1e9))
            )
        )
    return c


def test_sync_rollout_render(spawn, ros_node):
    node, executor = ros_node
    spawn('-m', 'twinloop_twin.world_sim_node', '--ros-args', '-p', f'scene:={SCENE}', '-p', 'camera_rate:=2.0')
    spawn(
        '-m',
        'twinloop_twin.sim_twin_node',
        '--ros-args',
        '-p',
        f'scene:={SCENE}',
        '-p',
        f'objects_topic:={GROUND_TRUTH_OBJECTS}',
    )
    latest = {}
    node.create_subscription(DetectedObjectArray, GROUND_TRUTH_OBJECTS, lambda m: latest.__setitem__('truth', m), 10)
    node.create_subscription(JointState, '/joint_states', lambda m: latest.__setitem__('joints', m), 10)
    deadline = time.monotonic() + 60
    while len(latest) < 2 and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    assert len(latest) == 2, 'world_sim topics missing'

    empty = _call(node, executor, RolloutTrajectories, '/sim_twin/rollout', RolloutTrajectories.Request())
    assert not empty.success and 'sync first' in empty.message

    # An empty sync uses the latest topic messages sim_twin received. This test's node seeing world_sim's
    # topics does not mean sim_twin has them yet (it may still be discovering world_sim): ask again until it
    # does, within a bounded time, instead of racing it.
    synced = _sync_when_ready(node, executor, timeout=30)
    assert synced.success and synced.num_objects == 4, synced.message

    w = world.SimWorld(scene.SceneConfig.from_yaml(SCENE))
    q = w.data.qpos.copy()
    q[w.arm_qpos] = latest['joints'].position[:7]
    ik = PandaIk(w.model)
    above = ik.solve(q, (0.35, 0.0, 0.2)).positions
    q[w.arm_qpos] = above
    into = ik.solve(q, (0.35, 0.0, -0.04)).positions
    w.close()
    request = RolloutTrajectories.Request(
        candidates=[_candidate('clean', [above], [1.0]), _candidate('table', [above, into], [1.0, 1.0])]
    )
    rollout = _call(node, executor, RolloutTrajectories, '/sim_twin/rollout', request)
    assert rollout.success
    clean, table = rollout.results
    assert not [c for c in clean.collisions if c.endswith('|table')]
    assert [c for c in table.collisions if c.endswith('|table')]
    assert len(clean.ee_path) > 10 and clean.object_ids

    bad = _call(
        node,
        executor,
        RolloutTrajectories,
        '/sim_twin/rollout',
        RolloutTrajectories.Request(candidates=[CandidateTrajectory(id='empty')]),
    )
    assert not bad.success and 'no trajectory points' in bad.message

    clean_msg = request.candidates[0]
    clean_msg.ee_path = clean.ee_path
    render = _call(
        node,
        executor,
        RenderViews,
        '/sim_twin/render',
        RenderViews.Request(
            cameras=['front', 'left'],
            width=160,
            height=120,
            depth=True,
            segmentation=True,
            candidates=[clean_msg],
            scores=[0.9],
        ),
    )
    assert render.success and [v.camera_name for v in render.views] == ['front', 'left']
    rgb = ros_conversions.image_array(render.views[0].image)
    assert rgb.shape == (120, 160, 3)
    seg = ros_conversions.image_array(render.segmentations[0])
    assert len(set(np.unique(seg)) - {0}) >= 3, 'objects visible in the segmentation'
    assert render.object_ids[0] == 'red_cube'
    unknown = _call(node, executor, RenderViews, '/sim_twin/render', RenderViews.Request(cameras=['ceiling']))
    assert not unknown.success and 'ceiling' in unknown.message
