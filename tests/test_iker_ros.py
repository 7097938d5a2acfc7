"""The iker engine through ROS end to end: world_sim, the execution node (its safety gate and ~/stream),
pose estimation and the task orchestrator with twinloop_iker.engine loaded from the command line;
an ExecuteInstruction goal with strategy 'iker' pushes the red book in line with the green one
(IKER's book push, config/scenes/iker_align.yaml), closed loop on perceived poses, and the perceived
outcome shows it; RViz gets the numbered keypoints and the code's targets. A disturbance: world_sim
slides the book 8 cm across its way while it is being pushed, and the engine still lines it up.
A grasp-and-place stage: the left shoe is grasped, carried over and released on the rack
(config/scenes/iker_shoes.yaml)."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from action_msgs.msg import GoalStatus
from geometry_msgs.msg import Point, Pose
from PIL import Image
from rclpy.action import ActionClient
from twinloop_interfaces.action import ExecuteInstruction
from twinloop_interfaces.msg import DetectedObjectArray
from twinloop_interfaces.srv import MoveObject
from visualization_msgs.msg import Marker, MarkerArray

from twinloop_bringup import graphs
from twinloop_ros import topics

ROOT = os.environ['TWINLOOP_ROOT']
SCENE = os.path.join(ROOT, 'config', 'scenes', 'iker_align.yaml')
INSTRUCTION = 'push the red book in line with the green book'


def _start(spawn, ros_node, tmp_path, scene=SCENE):
    """The sim_perception graph and a task orchestrator with the iker engine; (node, executor, the
    perceived object arrays as they come, the ExecuteInstruction client) once both are up."""
    for spec in graphs.load('sim_perception', {'scene': scene}):
        spawn(*spec.arguments())
    parameters = {
        'objects_topic': '/perception/objects',
        'runs_dir': str(tmp_path),
        'engines': '[twinloop_iker.engine]',
        'default_strategy': 'iker',
        'engine_config_dir': f'{ROOT}/config',
        'categories_file': f'{ROOT}/config/waste_categories.yaml',
    }
    spawn(
        '-m',
        'twinloop_planning.orchestrator_node',
        '--ros-args',
        *[arg for key, value in parameters.items() for arg in ('-p', f'{key}:={value}')],
    )
    node, executor = ros_node
    perceived = []
    node.create_subscription(DetectedObjectArray, '/perception/objects', perceived.append, topics.STATE_QOS)
    action = ActionClient(node, ExecuteInstruction, topics.EXECUTE_INSTRUCTION)
    deadline = time.monotonic() + 90
    while not (action.server_is_ready() and perceived) and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    assert action.server_is_ready() and perceived, 'task_orchestrator or pose_estimation did not come up'
    return node, executor, perceived, action


def _send(executor, action, timeout, instruction=INSTRUCTION):
    goal = ExecuteInstruction.Goal(instruction=instruction, strategy='iker', timeout=timeout)
    sent = action.send_goal_async(goal)
    executor.spin_until_future_complete(sent, timeout_sec=30)
    assert sent.result() is not None and sent.result().accepted
    return sent.result().get_result_async()


def _report(executor, result, timeout):
    executor.spin_until_future_complete(result, timeout_sec=timeout)
    assert result.done(), 'the goal did not end within its timeout'
    response = result.result()
    return response, json.loads(Path(response.result.report_path).with_name('report.json').read_text())


def test_iker_pushes_a_book_in_line_through_the_gate(spawn, ros_node, tmp_path):
    node, executor, perceived, action = _start(spawn, ros_node, tmp_path)
    keypoint_markers = []
    node.create_subscription(MarkerArray, topics.IKER_KEYPOINTS, keypoint_markers.append, topics.STATE_QOS)
    before = _position(perceived[-1], 'red_book')
    green = _position(perceived[-1], 'green_book')

    response, report = _report(executor, _send(executor, action, 150.0), 170)
    assert response.status == GoalStatus.STATUS_SUCCEEDED, (response.result.reason, report['log'])

    executor.spin_once(timeout_sec=0.5)
    after = _position(perceived[-1], 'red_book')
    assert abs(after[0] - green[0]) < abs(before[0] - green[0]) - 0.05, (before, after)  # in line: same x
    assert abs(after[2] - before[2]) < 0.02, 'pushed, not lifted'
    assert report['strategy'] == 'iker' and 'template writer (not a VLM)' in report['scorer']
    assert 'push: CEM in the keypoint twin' in report['scorer'] and 'place: CEM' in report['scorer']
    # one push, or a second iteration when the first left the book short of its spot (Algorithm 1)
    steps = [s for s in report['steps'] if s.get('object_id') == 'red_book']
    assert 1 <= len(steps) <= 3 and steps[0]['chunks'] >= 1, [s['chunks'] for s in steps]
    step = steps[-1]  # the markers show the newest iteration's keypoints and targets
    assert 'def get_interaction_data' in step['code'] and not step['grasp']
    assert 0 <= step['distance'] < 0.05 and len(step['targets']) == len(step['keypoint_indices'])
    query = Path(response.result.report_path).parent / step['images'][0]
    assert step['view'] == 'camera front' and Image.open(query).size == (320, 240)  # world_sim's front camera

    executor.spin_once(timeout_sec=0.5)
    assert keypoint_markers, f'nothing on {topics.IKER_KEYPOINTS}'
    shown = keypoint_markers[-1].markers
    labels = {m.text for m in shown if m.type == Marker.TEXT_VIEW_FACING}
    assert {str(n) for n in step['keypoint_indices']} <= labels  # every moved keypoint is numbered
    arrows = [m for m in shown if m.type == Marker.ARROW and m.action == Marker.ADD]
    assert len(arrows) == len(step['keypoint_indices'])
    ends = sorted(tuple(round(c, 4) for c in (a.points[1].x, a.points[1].y, a.points[1].z)) for a in arrows)
    assert np.allclose(ends, sorted(tuple(round(c, 4) for c in t) for t in step['targets']), atol=1e-3)


def _position(msg, object_id):
    (pose,) = [o.pose.position for o in msg.objects if o.id == object_id]
    return np.array([pose.x, pose.y, pose.z])


# One rerun: where the first push leaves the book decides the later approaches; a fresh-clone CI (2026-12-03,
# 1b0f99a) once had every re-planned approach refused by the gate (panda_link1|panda_link5 in the twin) for 6
# iterations, root cause open. The CI of e68f281 failed it twice another way: the first push's stream braked
# with the fingertips on the table in the twin and every motion after it was refused (panda_leftfinger|table);
# the gate now lets a motion start in a contact and move off it (354f787). The CI of d095ce6 failed it twice on
# the gate carrying the pushed book with the hand (red_book|green_book): shut fingers pressed on while pushing
# part to 3.5 mm and read as closed on something; now only a finger's inner face grips (ArmKinematics).
# A second failure fails the run.
@pytest.mark.flaky(reruns=1)
def test_iker_recovers_when_world_sim_moves_the_book_aside_mid_push(spawn, ros_node, tmp_path):
    node, executor, perceived, action = _start(spawn, ros_node, tmp_path)
    truth = []
    node.create_subscription(DetectedObjectArray, topics.GROUND_TRUTH_OBJECTS, truth.append, topics.STATE_QOS)
    mover = node.create_client(MoveObject, topics.WORLD_MOVE_OBJECT)
    deadline = time.monotonic() + 30
    while not (truth and mover.service_is_ready()) and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    assert truth and mover.service_is_ready(), 'no ground truth or no ~/move_object'
    (start,) = [o.pose for o in truth[-1].objects if o.id == 'red_book']
    green = _position(perceived[-1], 'green_book')
    result = _send(executor, action, 240.0)
    deadline = time.monotonic() + 150
    moved_by = np.zeros(2)
    while not result.done() and time.monotonic() < deadline:  # the push has moved the book 3 cm
        executor.spin_once(timeout_sec=0.05)
        moved_by = _position(truth[-1], 'red_book')[:2] - _point(start.position)[:2]
        if np.linalg.norm(moved_by) > 0.03:
            break
    assert not result.done(), 'the goal ended before the book was pushed'
    # someone slides it 8 cm across its way, farther from the green book's line: off the fingers' path, never
    # into them (put back where it started, it would land on the fingers pushing on it and tip over)
    (now,) = [o.pose for o in truth[-1].objects if o.id == 'red_book']
    across = np.array([-moved_by[1], moved_by[0]]) / np.linalg.norm(moved_by)
    across *= np.sign(across[0] * (now.position.x - green[0])) or 1.0
    aside = Pose(
        position=Point(x=now.position.x + 0.08 * across[0], y=now.position.y + 0.08 * across[1], z=now.position.z)
    )
    aside.orientation = now.orientation
    moved = mover.call_async(MoveObject.Request(object_id='red_book', pose=aside))
    executor.spin_until_future_complete(moved, timeout_sec=10)
    assert moved.result().success, moved.result().message
    seen = len(truth)  # the first ground truth after the move
    moved_at = time.monotonic()
    while len(truth) <= seen + 1 and time.monotonic() < moved_at + 2.0:
        executor.spin_once(timeout_sec=0.05)
    off = np.linalg.norm(_position(truth[seen + 1], 'red_book')[:2] - _point(aside.position)[:2])
    assert off < 0.02, f'the book is {off:.3f} m from where it was put'
    response, report = _report(executor, result, 260)
    assert response.status == GoalStatus.STATUS_SUCCEEDED, (response.result.reason, report['log'])
    pushes = [s for s in report['steps'] if s.get('object_id') == 'red_book']
    assert pushes and 0 <= pushes[-1]['distance'] < 0.05, [p['outcome'] for p in pushes]
    executor.spin_once(timeout_sec=0.5)
    after = _position(perceived[-1], 'red_book')
    assert abs(after[0] - green[0]) < abs(aside.position.x - green[0]) - 0.05, (aside.position, after)


def _point(p):
    return np.array([p.x, p.y, p.z])


def test_iker_places_a_shoe_on_the_rack_through_the_gate(spawn, ros_node, tmp_path):
    scene = os.path.join(ROOT, 'config', 'scenes', 'iker_shoes.yaml')
    node, executor, perceived, action = _start(spawn, ros_node, tmp_path, scene)
    truth = []
    node.create_subscription(DetectedObjectArray, topics.GROUND_TRUTH_OBJECTS, truth.append, topics.STATE_QOS)
    result = _send(executor, action, 200.0, 'put the left shoe on the rack')
    response, report = _report(executor, result, 220)
    assert response.status == GoalStatus.STATUS_SUCCEEDED, (response.result.reason, report['log'])
    steps = [s for s in report['steps'] if s.get('object_id') == 'left_shoe']
    # an iteration the gate stopped may come first; the engine re-plans from what it perceives
    assert 1 <= len(steps) <= 3, [s['outcome'] for s in steps]
    step = steps[-1]
    assert step['grasp'] and step['chunks'] >= 1 and 0 <= step['distance'] < 0.05, step['outcome']
    executor.spin_once(timeout_sec=0.5)
    shoe, rack = _position(truth[-1], 'left_shoe'), _position(truth[-1], 'rack')
    assert abs(shoe[2] - 0.12) < 0.01, f'the shoe is at {shoe}, not on the 12 cm rack top'
    assert abs(shoe[0] - rack[0]) < 0.1 and abs(shoe[1] - rack[1]) < 0.3, (shoe, rack)
