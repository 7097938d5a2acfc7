"""Message fuzzing over DDS: trajectory_scoring, sim_twin, pose_estimation and world_sim, each a real
process, get >= 200 malformed requests on every service and >= 200 malformed messages on every topic
they subscribe to (random fields, wrong sizes, NaN/inf, empty, huge - a few MB at most; seeded numpy
RNG). Every service call must be answered within a bounded wait; a request known to be invalid must
be answered with success=false and a message naming the field. Afterwards the process must still be
alive and answer a good request correctly. One process per node type, for all of its fuzzing."""

import copy
import json
import os
import re
import time

import numpy as np
import yaml
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, PoseStamped
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64, Header
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from twinloop_interfaces.msg import CandidateTrajectory, DetectedObject, DetectedObjectArray, RenderedView
from twinloop_interfaces.srv import (
    MoveObject,
    RenderViews,
    ResetWorld,
    RolloutTrajectories,
    ScoreTrajectories,
    SyncTwin,
)

from twinloop_bringup import graphs
from twinloop_twin import cameras, scene, world
from twinloop_ros import conversions as ros_conversions
from twinloop_ros import topics

ROOT = os.environ['TWINLOOP_ROOT']
SCENE = os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')
N = 200  # malformed requests per service, malformed messages per topic
CALL_TIMEOUT = 30.0  # [s] every service call must be answered within this
VALID = ''  # a mutation's expectation: the request is valid and must succeed (None: either answer is fine)
WEIRD_FLOATS = (float('nan'), float('inf'), -float('inf'), 1e308, -1e308, 1e30, -1e30, 5e-324, -0.0)
FLOAT32_WEIRD = (float('nan'), float('inf'), -float('inf'), 3.0e38, -3.0e38, -1.0, 1e9)
MB = 1 << 20


# --- plumbing -------------------------------------------------------------------------------------
class Fuzz:
    """The test node's side: service calls that must be answered, paced publishing, a watched process."""

    def __init__(self, node, executor, process, rng):
        self.node, self.executor, self.process, self.rng = node, executor, process, rng
        self.clients = {}

    def alive(self, what=''):
        assert self.process.poll() is None, f'the node died (exit code {self.process.returncode}) {what}'

    def spin(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)

    def spin_until(self, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.alive(f'while waiting for {what}')
            self.executor.spin_once(timeout_sec=0.02)
            if condition():
                return
        raise AssertionError(f'timed out after {timeout:.0f} s waiting for {what}')

    def call(self, srv_type, name, request, what='', timeout=CALL_TIMEOUT):
        if name not in self.clients:
            self.clients[name] = self.node.create_client(srv_type, name)
            self.spin_until(self.clients[name].service_is_ready, 60, f'the service {name}')
        client = self.clients[name]
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            self.alive(f'on {name} {what}')
            self.executor.spin_once(timeout_sec=0.02)
        if not future.done():
            client.remove_pending_request(future)
            self.alive(f'on {name} {what}')
            raise AssertionError(f'{name} did not answer {what} within {timeout:.0f} s')
        return future.result()

    def check(self, srv_type, name, request, expect, what):
        """Call and check the answer against a mutation's expectation (VALID, None or the field named)."""
        response = self.call(srv_type, name, request, what)
        assert 'internal error' not in response.message, f'{name} {what}: not validated: {response.message}'
        if expect == VALID:
            assert response.success, f'{name} {what}: a valid request failed: {response.message}'
        elif expect is not None:
            assert not response.success, f'{name} {what}: an invalid request succeeded'
            assert expect in response.message, (
                f'{name} {what}: the message does not name {expect!r}: {response.message}'
            )
        return response

    def publisher(self, msg_type, topic, qos=None):
        pub = self.node.create_publisher(msg_type, topic, qos or QoSProfile(depth=50))
        self.spin_until(lambda: pub.get_subscription_count() > 0, 60, f'a subscriber on {topic}')
        return pub

    def publish(self, pub, msg, pause=0.004):
        pub.publish(msg)
        self.executor.spin_once(timeout_sec=pause)


def weird_float(rng):
    return (
        float(rng.choice(WEIRD_FLOATS)) if rng.random() < 0.6 else float(rng.normal(0.0, 10.0 ** rng.integers(-3, 9)))
    )


def weird_text(rng):
    """Any text: empty, blank, unicode, NUL, punctuation, long, huge (a few MB)."""
    choices = (
        '',
        ' ',
        ',',
        'ü€😀',
        'a\x00b',
        '{"a": [1, 2',
        'x|y|z',
        '../../etc/passwd',
        ''.join(chr(c) for c in rng.integers(32, 127, int(rng.integers(1, 40)))),
        'x' * int(rng.integers(1000, 5000)),
        'y' * int(rng.integers(1, 3) * MB),
    )
    return choices[int(rng.integers(len(choices)))]


def stamp(seconds):
    return ros_conversions.stamp(seconds)


def weird_stamp(rng):
    return Time(sec=int(rng.integers(-(2**31), 2**31 - 1)), nanosec=int(rng.integers(0, 2**32 - 1)))


def duration(t):
    return ros_conversions.duration(t)


def pick(rng, options):
    return options[int(rng.integers(len(options)))]


def run_mutations(fuzz, srv_type, name, base, mutators, count=N):
    """count requests: base with a random mutator applied (a few combined now and then)."""
    for i in range(count):
        request = copy.deepcopy(base)
        if fuzz.rng.random() < 0.1:  # several at once: only "answered" and, if any is invalid, "failed"
            breaking = [m for m in mutators if 'valid' not in m.__name__]  # a valid one may overwrite a bad field
            chosen = [pick(fuzz.rng, breaking) for _ in range(int(fuzz.rng.integers(2, 4)))]
            named = []
            for m in chosen:
                try:
                    named.append(m(fuzz.rng, request))
                except (IndexError, ValueError):  # nothing left to mutate (an earlier one emptied the list)
                    pass
            named = [e for e in named if e]
            response = fuzz.check(srv_type, name, request, None, f'#{i} {[m.__name__ for m in chosen]}')
            assert not (named and response.success), f'{name} #{i}: invalid fields {named} but success'
        else:
            mutator = pick(fuzz.rng, mutators)
            expect = mutator(fuzz.rng, request)
            fuzz.check(srv_type, name, request, expect, f'#{i} {mutator.__name__}')
        if i % 20 == 0:
            fuzz.alive(f'after {i} {name} requests')


# --- trajectory_scoring ---------------------------------------------------------------------------
def _facts(collisions, moved_cm):
    return {
        'collisions': collisions,
        'initial_positions': {'red_cube': [0.5, 0.12, 0.0], 'bowl': [0.55, -0.3, 0.0]},
        'final_positions': {'red_cube': [0.5, 0.12 - moved_cm / 100, 0.0], 'bowl': [0.55, -0.3, 0.0]},
        'displacements': {'red_cube': moved_cm / 100, 'bowl': 0.0},
        'rotations': {'red_cube': 0.0, 'bowl': 0.0},
        'joint_margins': [0.5] * 7,
        'holding': '',
        'ee_start': [0.46, 0.0, 0.41],
        'ee_end': [0.5, 0.1, 0.05],
        'ee_path_length': 0.45,
    }


def score_request():
    request = ScoreTrajectories.Request(
        instruction='put the red cube in the bowl',
        task_json=json.dumps({'object': 'red_cube', 'destination': 'bowl', 'holding': 'wanted'}),
    )
    request.candidates = [
        CandidateTrajectory(id='clean', rollout_json=json.dumps(_facts([], 5.0))),
        CandidateTrajectory(id='collide', rollout_json=json.dumps(_facts(['panda_link7|table'], 5.0))),
    ]
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    request.views = [
        RenderedView(
            camera_name='front',
            candidate_ids=['clean', 'collide'],
            image=ros_conversions.image_msg(image, 'rgb8', Header()),
        )
    ]
    return request


BAD_TASKS = (
    '[1]',
    'null',
    '1',
    '"x"',
    'not json',
    '{',
    '[' * 100_000,
    '{"object": 5}',
    '{"destination": [1]}',
    '{"goal_position": [1]}',
    '{"goal_position": [NaN, 0, 0]}',
    '{"goal_position": "abc"}',
    '{"goal_position": [true, 0, 0]}',
    '{"holding": 3}',
    '{"holding": "maybe"}',
    '{"object_size": [1, 2]}',
    '{"object_size": [1, 2, Infinity]}',
    '{"grasp_offset": [0, "x", 0]}',
    '{"destination_height": Infinity}',
    '{"object": "' + 'x' * (3 * MB) + '"}',
)
BAD_FACT_VALUES = {
    'collisions': (None, 'x', [5], ['no-bar'], {}),
    'initial_positions': (None, [], {'red_cube': [1, 2]}, {'red_cube': [float('nan'), 0, 0]}, {'red_cube': 'x'}),
    'final_positions': (None, 5, {'red_cube': [1, 2, 3, 4]}, {'red_cube': [0, 0, float('inf')]}, {'x': [0, 0, 0]}),
    'displacements': (None, [], {'red_cube': 'x'}, {'red_cube': float('inf')}),
    'rotations': (None, 'x', {'red_cube': None}, {'red_cube': float('nan')}),
    'joint_margins': (None, [], ['x'], [float('nan')], 5),
    'holding': (5, None, []),
    'ee_start': (None, [1], [float('nan'), 0, 0], 'x', [0, 0, 1e400]),
    'ee_end': (None, [1, 2, 3, 4], [0, float('-inf'), 0], {}),
    'ee_path_length': ('x', -1, float('nan'), None),
}


def m_task_json(rng, r):
    r.task_json = pick(rng, BAD_TASKS)
    return 'task_json'


def m_rollout_json_text(rng, r):
    r.candidates[int(rng.integers(len(r.candidates)))].rollout_json = pick(
        rng, ('{}', '[1]', 'null', 'garbage', '{"ee_start": [0, 0, 0]}', '[' * 50_000, '"' + 'z' * (2 * MB) + '"')
    )
    return 'rollout_json'


def m_rollout_json_field(rng, r):
    candidate = r.candidates[int(rng.integers(len(r.candidates)))]
    facts = _facts([], 1.0)
    key = pick(rng, sorted(BAD_FACT_VALUES))
    if rng.random() < 0.2 and key in ('ee_start', 'ee_end'):
        del facts[key]
    else:
        facts[key] = pick(rng, BAD_FACT_VALUES[key])
    candidate.rollout_json = json.dumps(facts)
    return 'rollout_json'


def m_rollout_json_missing(rng, r):
    r.candidates[int(rng.integers(len(r.candidates)))].rollout_json = ''
    return 'rollout_json'


def m_candidates(rng, r):
    kind = int(rng.integers(5))
    if kind == 0:
        r.candidates = []
    elif kind == 1:
        r.candidates[1].id = r.candidates[0].id
    elif kind == 2:
        r.candidates[int(rng.integers(2))].id = ''
    elif kind == 3:  # more than the distinct colours
        r.candidates = [CandidateTrajectory(id=f'c{i}', rollout_json=r.candidates[0].rollout_json) for i in range(6)]
    else:  # huge
        facts = r.candidates[0].rollout_json
        r.candidates = [CandidateTrajectory(id=f'c{i}', rollout_json=facts) for i in range(int(rng.integers(50, 500)))]
    return 'candidates'


def m_views(rng, r):
    kind = int(rng.integers(6))
    if kind == 0:
        r.views = []
        return 'views'
    view = r.views[0]
    if kind == 1:
        view.camera_name = pick(rng, ('', 'x' * 5000))
        return 'camera_name'
    if kind == 2:
        r.views.append(copy.deepcopy(view))  # the same camera twice
        return 'camera_name'
    if kind == 3:
        view.candidate_ids = pick(
            rng, (['ghost'], ['clean', 'clean'], [weird_text(rng)[:100] or 'x'], ['clean'] * 1000)
        )
        return 'candidate_ids'
    if kind == 4:
        r.views = [copy.deepcopy(view) for _ in range(int(rng.integers(100, 300)))]
        for i, v in enumerate(r.views):
            v.camera_name = f'cam{i}'
        return 'views'
    view.image = bad_image(rng, view.image, ('rgb8',))
    return 'image'


def m_backend(rng, r):
    r.backend = pick(rng, (weird_text(rng), 'gpt-99', 'twin_critic,nope', ',' * 1000 + 'x', 'twin_critic;rm'))
    return None if not r.backend.replace(',', '').strip() else 'backend'


def m_instruction(rng, r):
    r.instruction = pick(rng, ('ü€😀 a\x00b', '', 'z' * (3 * MB)))
    return 'instruction' if len(r.instruction) > MB else VALID


def m_big_valid_image(rng, r):  # ~4.5 MB of rgb8: large but well formed
    image = rng.integers(0, 255, (1000, 1500, 3), dtype=np.uint8)
    r.views[0].image = ros_conversions.image_msg(image, 'rgb8', Header())
    return VALID


SCORE_MUTATORS = (
    m_task_json,
    m_rollout_json_text,
    m_rollout_json_field,
    m_rollout_json_field,
    m_rollout_json_missing,
    m_candidates,
    m_views,
    m_views,
    m_backend,
    m_instruction,
    m_big_valid_image,
)


def bad_image(rng, good, encodings):
    """A malformed copy of an Image: encoding, sizes, step, data length, endianness, huge dimensions."""
    msg = copy.deepcopy(good)
    kind = int(rng.integers(9))
    if kind == 0:
        msg.encoding = pick(
            rng, ('', 'rgb16', 'yuv422', 'bgra8', '8UC3', 'mono8', 'rgb8', '16UC1', weird_text(rng)[:50])
        )
        if msg.encoding in encodings:  # another encoding than the topic's
            msg.encoding = 'mono16'
    elif kind == 1:
        msg.width, msg.height = pick(rng, ((0, msg.height), (msg.width, 0), (0, 0), (msg.width + 1, msg.height)))
    elif kind == 2:
        msg.height = msg.height + int(rng.integers(1, 100))
    elif kind == 3:
        msg.step = pick(rng, (0, 1, msg.step - 1, 2**32 - 1, msg.step + 1))
    elif kind == 4:
        data = bytes(msg.data)
        msg.data = pick(rng, (b'', data[:-1], data + b'\x00', data[: len(data) // 2]))
    elif kind == 5:
        msg.width, msg.height, msg.step = 2**31, 2**31, 2**32 - 1  # huge dimensions, tiny data
    elif kind == 6:  # a few MB of data that does not match the header
        msg.data = bytes(int(rng.integers(1, 4) * MB))
    elif kind == 7:  # multi-byte pixels in big-endian order, or a step that splits a pixel
        msg.is_bigendian = 1
        if msg.encoding in ('rgb8', 'bgr8', 'mono8'):
            msg.step += 1
    else:
        msg.width, msg.height = msg.height, msg.width  # transposed header, same data length
        if msg.width == msg.height:
            msg.width += 1
    return msg


# --- sim_twin -------------------------------------------------------------------------------------
def scene_objects():
    """DetectedObjectArray of the tabletop scene at its settled poses (as perception would see them)."""
    config = scene.SceneConfig.from_yaml(SCENE)
    w = world.SimWorld(config)
    msg = DetectedObjectArray(header=Header(frame_id='world'))
    for o in config.objects:
        position, quat = w.object_pose(o.id)
        msg.objects.append(
            DetectedObject(
                id=o.id, label=o.label, mesh_id=o.mesh_id, pose=ros_conversions.pose_msg(position, quat), confidence=1.0
            )
        )
    w.close()
    return msg


def home_joints():
    return JointState(
        name=list(scene.ARM_JOINTS) + list(scene.FINGER_JOINTS),
        position=[float(v) for v in scene.HOME] + [0.04, 0.04],
    )


def candidate(cid, offsets, dt=0.25):
    msg = CandidateTrajectory(id=cid)
    msg.trajectory.joint_names = list(scene.ARM_JOINTS)
    for k, offset in enumerate(offsets, 1):
        msg.trajectory.points.append(
            JointTrajectoryPoint(
                positions=[float(v) for v in np.add(scene.HOME, offset)], time_from_start=duration(k * dt)
            )
        )
    return msg


def bad_objects(rng, msg):
    """Mutate a DetectedObjectArray in place; the objects' field name it breaks."""
    objects = msg.objects
    o = objects[int(rng.integers(len(objects)))]
    kind = int(rng.integers(9))
    if kind == 0:
        o.id = pick(rng, ('', objects[0].id if o is not objects[0] else objects[1].id, 'table', 'floor', 'panda_hand'))
    elif kind == 1:
        printable = weird_text(rng)[:300].replace('\x00', '')  # a NUL would end the string on the wire
        o.id = pick(rng, ('a b', 'x\ty', 'ü', 'q' * 500, printable + '\t'))
    elif kind == 2:
        o.mesh_id = pick(rng, ('', 'cube_50mm', weird_text(rng)[:100] + '?'))
    elif kind == 3:
        o.pose.position.x, o.pose.position.y, o.pose.position.z = (weird_float(rng) for _ in range(3))
        if all(np.isfinite([o.pose.position.x, o.pose.position.y, o.pose.position.z])):
            o.pose.position.z = 1e9
    elif kind == 4:
        q = pick(
            rng, ((0.0, 0.0, 0.0, 0.0), (float('nan'), 0.0, 0.0, 1.0), (float('inf'), 0.0, 0.0, 0.0), (1e-300,) * 4)
        )
        o.pose.orientation.w, o.pose.orientation.x, o.pose.orientation.y, o.pose.orientation.z = q
    elif kind == 5:  # huge
        msg.objects = [copy.deepcopy(o) for _ in range(int(rng.integers(65, 300)))]
        for i, obj in enumerate(msg.objects):
            obj.id = f'o{i}'
    elif kind == 6:
        o.label = 'l' * int(2 * MB)
    elif kind == 7:
        o.pose.position.x = float('nan')
        o.confidence = float('nan')
    else:
        msg.objects = [copy.deepcopy(o), copy.deepcopy(o)]  # the same id twice
    return 'objects'


def bad_joints(rng, msg):
    """Mutate a JointState in place (names, sizes, NaN/inf/huge, huge)."""
    kind = int(rng.integers(7))
    if kind == 0:
        del msg.name[int(rng.integers(7))]
        del msg.position[0]
    elif kind == 1:
        msg.position = list(msg.position)[: int(rng.integers(0, 7))]
    elif kind == 2:
        positions = list(msg.position)
        positions[int(rng.integers(len(positions)))] = pick(rng, WEIRD_FLOATS[:6])
        msg.position = positions
    elif kind == 3:
        positions = list(msg.position)
        positions[int(rng.integers(7))] = float(rng.choice([-1, 1]) * rng.uniform(10, 1e6))
        msg.position = positions
    elif kind == 4:  # fingers far outside their range
        msg.position = list(msg.position[:7]) + [float(rng.uniform(1, 1e6)), float(rng.uniform(1, 1e6))]
    elif kind == 5:  # huge
        n = int(rng.integers(10_000, 30_000))
        msg.name = [f'j{i}' for i in range(n)]
        msg.position = [0.0] * n
    else:
        msg.name = [weird_text(rng)[:50] for _ in range(9)]
    return 'joint_state'


def test_sim_twin_survives_fuzz(spawn, ros_node):
    fuzz = Fuzz(
        *ros_node,
        spawn(
            '-m',
            'twinloop_twin.sim_twin_node',
            '--ros-args',
            '-p',
            f'scene:={SCENE}',
            '-p',
            'objects_topic:=/fuzz/objects',
        ),
        np.random.default_rng(1),
    )
    objects, joints = scene_objects(), home_joints()

    def sync():
        return SyncTwin.Request(objects=objects, joint_state=joints)

    fuzz.check(SyncTwin, '/sim_twin/sync', sync(), VALID, 'the good sync')

    def m_objects(rng, r):
        return bad_objects(rng, r.objects)

    def m_joints(rng, r):
        bad_joints(rng, r.joint_state)
        return 'joint_state'

    run_mutations(fuzz, SyncTwin, '/sim_twin/sync', sync(), (m_objects, m_objects, m_joints))

    ids = ('a', 'b')

    def m_points(rng, r):
        c = r.candidates[int(rng.integers(len(r.candidates)))]
        points = c.trajectory.points
        kind = int(rng.integers(10))
        if kind == 0:
            c.trajectory.points = []
        elif kind == 1:
            points[0].positions = list(points[0].positions)[: int(rng.integers(0, 7))]  # fewer than 7
        elif kind == 2:
            points[-1].positions = list(points[-1].positions) + [0.0] * int(rng.integers(1, 5))
        elif kind == 3:
            positions = list(points[0].positions)
            positions[int(rng.integers(7))] = pick(rng, WEIRD_FLOATS[:3])
            points[0].positions = positions
        elif kind == 4:
            c.trajectory.joint_names = pick(
                rng, ([], list(scene.ARM_JOINTS[:6]), ['x'] * 7, [weird_text(rng)[:20] for _ in range(7)])
            )
        elif kind == 5:  # times: backwards, equal, negative, huge
            points[-1].time_from_start = pick(
                rng, (Duration(sec=0), points[0].time_from_start, Duration(sec=-5), Duration(sec=2**31 - 1))
            )
        elif kind == 6:
            c.gripper_events = pick(rng, ([1] * (len(points) + 1), [255] * len(points), [7]))
        elif kind == 7:  # huge: very many points over a long time
            c.trajectory.points = [
                JointTrajectoryPoint(positions=list(points[0].positions), time_from_start=duration(0.01 * (k + 1)))
                for k in range(int(rng.integers(10_001, 10_100)))
            ]
        elif kind == 8:
            points[0].time_from_start = Duration(sec=int(rng.integers(100, 10**6)))
            c.trajectory.points = points[:1]
        else:
            c.trajectory.joint_names = list(c.trajectory.joint_names) * 2  # 14 names, 7 positions
        return 'candidates'

    def m_ids(rng, r):
        kind = int(rng.integers(4))
        if kind == 0:
            r.candidates[0].id = ''
        elif kind == 1:
            r.candidates[1].id = r.candidates[0].id
        elif kind == 2:
            r.candidates = []
        else:
            r.candidates = [copy.deepcopy(r.candidates[0]) for _ in range(int(rng.integers(100, 300)))]
            for i, c in enumerate(r.candidates):
                c.id = f'c{i}'
        return 'candidates'

    def m_settle(rng, r):
        r.settle = pick(rng, FLOAT32_WEIRD)
        return 'settle'

    def m_valid_rollout(rng, r):
        r.settle = float(pick(rng, (0.02, 0.05, 0.1)))
        r.candidates[0] = candidate('a', rng.uniform(-0.2, 0.2, (int(rng.integers(1, 3)), 7)), dt=0.1)
        if rng.random() < 0.5:  # huge positions are clipped to the joint limits, as a controller would
            r.candidates[0].trajectory.points[0].positions = [float(v) for v in rng.choice([-1e300, 1e300], 7)]
        return VALID

    base = RolloutTrajectories.Request(
        candidates=[candidate(ids[0], [[0.05] * 7, [0.1] * 7]), candidate(ids[1], [[-0.05] * 7, [-0.1] * 7])],
        settle=0.05,
    )
    run_mutations(
        fuzz, RolloutTrajectories, '/sim_twin/rollout', base, (m_points, m_points, m_ids, m_settle, m_valid_rollout)
    )

    def m_size(rng, r):
        field = pick(rng, ('width', 'height'))
        setattr(r, field, int(pick(rng, (2049, 100_000, 2**32 - 1, int(rng.integers(2049, 2**32))))))
        return field

    def m_cameras(rng, r):
        r.cameras = pick(rng, (['ceiling'], [''], ['front', 'front'], ['front'] * 1000, [weird_text(rng)[:100]]))
        return 'cameras'

    def m_render_candidates(rng, r):
        c = CandidateTrajectory(id='a', ee_path=[Point(x=0.4, y=0.0, z=0.2), Point(x=0.5, y=0.1, z=0.1)])
        kind = int(rng.integers(6))
        if kind == 0:
            c.ee_path[int(rng.integers(2))].z = pick(rng, WEIRD_FLOATS[:6])
        elif kind == 1:
            c.ee_path = [Point(x=float(v), y=0.0, z=0.1) for v in rng.uniform(0, 1, int(rng.integers(10_001, 20_000)))]
        elif kind == 2:
            c.id = ''
        elif kind == 3:
            r.candidates = [copy.deepcopy(c), copy.deepcopy(c)]  # the same id twice
            return 'candidates'
        elif kind == 4:
            r.candidates = [
                CandidateTrajectory(id=f'c{i}', ee_path=c.ee_path) for i in range(int(rng.integers(65, 200)))
            ]
            return 'candidates'
        else:
            c.ee_path = [Point(x=1e12, y=-1e12, z=0.0), Point()]
        r.candidates = [c]
        return 'candidates'

    def m_scores(rng, r):
        r.candidates = [CandidateTrajectory(id='a', ee_path=[Point(x=0.4, z=0.2), Point(x=0.5, z=0.1)])]
        r.scores = pick(rng, ([0.5, 0.5], [pick(rng, FLOAT32_WEIRD)], [-0.1], [1.5], [0.5] * 1000))
        return 'scores'

    def m_axes(rng, r):
        r.axes_objects = pick(rng, (['ghost'], ['red_cube', 'red_cube'], ['red_cube'] * 5000, ['']))
        return 'axes_objects'

    def m_valid_render(rng, r):
        r.width, r.height = pick(rng, ((0, 0), (32, 24), (64, 48)))
        r.cameras = pick(rng, ([], ['front'], ['left', 'wrist']))
        r.depth, r.segmentation, r.pretty = (bool(rng.integers(2)) for _ in range(3))
        n = int(rng.integers(0, 4))
        r.candidates = [
            CandidateTrajectory(
                id=f'c{i}',
                ee_path=[Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in rng.uniform(-1, 1, (30, 3))],
            )
            for i in range(n)
        ]
        r.scores = [float(s) for s in rng.uniform(0, 1, n)] if rng.random() < 0.5 else []
        r.axes_objects = ['red_cube'] if rng.random() < 0.3 else []
        return VALID

    render_base = RenderViews.Request(cameras=['front'], width=32, height=24)
    run_mutations(
        fuzz,
        RenderViews,
        '/sim_twin/render',
        render_base,
        (m_size, m_cameras, m_render_candidates, m_scores, m_axes, m_valid_render, m_valid_render),
    )

    # topics: the objects topic for an empty sync and /joint_states
    objects_pub = fuzz.publisher(DetectedObjectArray, '/fuzz/objects', topics.STATE_QOS)
    joints_pub = fuzz.publisher(JointState, topics.JOINT_STATES, topics.STATE_QOS)
    for i in range(N):
        msg = copy.deepcopy(objects)
        bad_objects(fuzz.rng, msg)
        fuzz.publish(objects_pub, msg)
        msg = copy.deepcopy(joints)
        bad_joints(fuzz.rng, msg)
        fuzz.publish(joints_pub, msg)
        if i % 20 == 0:
            fuzz.alive(f'after {i} topic messages')
    response = fuzz.call(SyncTwin, '/sim_twin/sync', SyncTwin.Request(), 'an empty sync after the topic fuzz')
    assert not response.success, 'only malformed topic messages were sent: an empty sync cannot succeed'

    # good requests: an empty sync from good topic messages, then sync, rollout and render
    deadline = time.monotonic() + 20
    while True:
        fuzz.publish(objects_pub, objects, 0.05)
        fuzz.publish(joints_pub, joints, 0.05)
        response = fuzz.call(SyncTwin, '/sim_twin/sync', SyncTwin.Request(), 'an empty sync')
        if response.success or time.monotonic() > deadline:
            break
    assert response.success and response.num_objects == 4, response.message
    fuzz.check(SyncTwin, '/sim_twin/sync', sync(), VALID, 'the good sync')
    rollout = fuzz.check(RolloutTrajectories, '/sim_twin/rollout', base, VALID, 'the good rollout')
    assert [r.candidate_id for r in rollout.results] == list(ids)
    for result in rollout.results:
        path = np.array([(p.x, p.y, p.z) for p in result.ee_path])
        assert len(path) > 10 and np.all(np.isfinite(path)), 'a finite grip path'
        assert sorted(result.object_ids) == sorted(o.id for o in objects.objects)
        assert max(result.displacements) < 0.01, 'nothing touched'
    render = fuzz.check(
        RenderViews,
        '/sim_twin/render',
        RenderViews.Request(width=64, height=48, depth=True, segmentation=True),
        VALID,
        'the good render',
    )
    assert [v.camera_name for v in render.views] == ['front', 'left', 'wrist']
    assert ros_conversions.image_array(render.views[0].image).shape == (48, 64, 3)
    seg = ros_conversions.image_array(render.segmentations[0])
    assert len(set(np.unique(seg)) - {0}) >= 3, 'objects visible in the segmentation'
    fuzz.alive('at the end')


# --- trajectory_scoring ---------------------------------------------------------------------------
def test_scoring_survives_fuzz(spawn, ros_node, tmp_path):
    agents = tmp_path / 'agents.yaml'
    agents.write_text('agents:\n  twin_critic: {backend: twin_critic}\n')
    fuzz = Fuzz(
        *ros_node,
        spawn(
            '-m',
            'twinloop_scoring.scoring_node',
            '--ros-args',
            '-p',
            f'prompts_file:={ROOT}/config/vqa_prompts.yaml',
            '-p',
            f'agents_file:={agents}',
            '-p',
            'agents:=[twin_critic]',
        ),
        np.random.default_rng(2),
    )
    name = topics.SCORE_TRAJECTORIES
    fuzz.check(ScoreTrajectories, name, score_request(), VALID, 'the good request')
    run_mutations(fuzz, ScoreTrajectories, name, score_request(), SCORE_MUTATORS)
    response = fuzz.check(ScoreTrajectories, name, score_request(), VALID, 'the good request')
    clean, collide = response.scores
    assert 'twin_critic' in response.backend and collide.total < clean.total
    fuzz.alive('at the end')


# --- pose_estimation ------------------------------------------------------------------------------
def camera_messages(frame, header):
    """{kind: message} of one rendered camera frame, as world_sim publishes it."""
    info = ros_conversions.camera_info_msg(frame.intrinsics, header)
    quat = cameras.rotation_to_quat_xyzw(frame.rotation)
    pose = PoseStamped(header=Header(stamp=header.stamp, frame_id='world'))
    pose.pose = ros_conversions.pose_msg(frame.position, (quat[3], quat[0], quat[1], quat[2]))
    return {
        'color': ros_conversions.image_msg(frame.rgb, 'rgb8', header),
        'depth': ros_conversions.image_msg(frame.depth.astype(np.float32), '32FC1', header),
        'color_info': info,
        'pose': pose,
    }


def small_frame_set(rng, names, t):
    """A well-formed but random frame set (8 x 6 px) of every camera stamped t, and a joint state."""
    header = Header(stamp=stamp(t), frame_id='x')
    out = {}
    for name in names:
        rgb = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        depth = rng.uniform(0.3, 2.0, (6, 8)).astype(np.float32)
        info = CameraInfo(header=header, width=8, height=6, k=[10.0, 0.0, 4.0, 0.0, 10.0, 3.0, 0.0, 0.0, 1.0])
        pose = PoseStamped(header=header)
        pose.pose = ros_conversions.pose_msg((1.0, 0.0, 0.5), (0.0, 1.0, 0.0, 0.0))
        out[name] = {
            'color': ros_conversions.image_msg(rgb, 'rgb8', header),
            'depth': ros_conversions.image_msg(depth, '32FC1', header),
            'color_info': info,
            'pose': pose,
        }
    joints = home_joints()
    joints.header = header
    return out, joints


def absurd_depth(rng, msg):
    """A well-formed 32FC1 depth image with half its pixels NaN, inf, negative, zero or huge."""
    depth = ros_conversions.image_array(msg).copy()
    depth.flat[rng.integers(0, depth.size, depth.size // 2)] = pick(rng, WEIRD_FLOATS[:6] + (-1.0, 0.0))
    return ros_conversions.image_msg(depth.astype(np.float32), '32FC1', msg.header)


def bad_camera_message(rng, kind, msg):
    """A malformed (or well-formed but absurd) copy of a camera topic message."""
    msg = copy.deepcopy(msg)
    if kind == 'color':
        return bad_image(rng, msg, ('rgb8', 'bgr8'))
    if kind == 'depth':
        return absurd_depth(rng, msg) if rng.random() < 0.25 else bad_image(rng, msg, ('32FC1', '16UC1'))
    if kind == 'color_info':
        k = list(msg.k)
        variant = int(rng.integers(5))
        if variant == 0:
            msg.k = [0.0] * 9
        elif variant == 1:
            k[int(rng.integers(9))] = pick(rng, WEIRD_FLOATS[:3])
            msg.k = k
        elif variant == 2:
            k[0], k[4] = -abs(k[0]), -abs(k[4])
            msg.k = k
        elif variant == 3:
            msg.width, msg.height = pick(rng, ((0, 0), (2**32 - 1, 2**32 - 1), (msg.width + 3, msg.height)))
        else:
            msg.d = rng.normal(0.0, 1e6, int(rng.integers(0, 200_000))).tolist()
            msg.width = 0
        return msg
    # pose
    p, q = msg.pose.position, msg.pose.orientation
    variant = int(rng.integers(4))
    if variant == 0:
        q.w, q.x, q.y, q.z = 0.0, 0.0, 0.0, 0.0
    elif variant == 1:
        q.w, q.x, q.y, q.z = (pick(rng, WEIRD_FLOATS[:3]), 0.0, 0.0, 0.0)
    elif variant == 2:
        p.x, p.y, p.z = (weird_float(rng) for _ in range(3))
        if all(np.isfinite([p.x, p.y, p.z])):
            p.z = float('nan')
    else:
        q.w, q.x, q.y, q.z = 1e-200, 1e-200, 0.0, 0.0
    return msg


def test_pose_estimation_survives_fuzz(spawn, ros_node):
    specs = {s.name: s for s in graphs.load('sim_perception', {'scene': SCENE})}
    fuzz = Fuzz(*ros_node, spawn(*specs['pose_estimation'].arguments()), np.random.default_rng(3))
    names = ('front', 'left')
    kinds = {
        'color': (Image, topics.SENSOR_QOS),
        'depth': (Image, topics.SENSOR_QOS),
        'color_info': (CameraInfo, topics.SENSOR_QOS),
        'pose': (PoseStamped, topics.LATCHED_QOS),
    }
    pubs = {
        (name, kind): fuzz.publisher(msg_type, topics.camera_topic(name, kind), qos)
        for name in names
        for kind, (msg_type, qos) in kinds.items()
    }
    joints_pub = fuzz.publisher(JointState, topics.JOINT_STATES, topics.STATE_QOS)
    objects = []
    fuzz.node.create_subscription(DetectedObjectArray, '/perception/objects', objects.append, 10)

    # N rounds: every topic gets a malformed message, most rounds in one synchronised stamp
    for i in range(N):
        t = 100.0 + i * 0.1
        sets, joints = small_frame_set(fuzz.rng, names, t)
        for name in names:
            for kind in kinds:
                msg = bad_camera_message(fuzz.rng, kind, sets[name][kind])
                if fuzz.rng.random() < 0.2:
                    msg.header.stamp = weird_stamp(fuzz.rng)
                fuzz.publish(pubs[name, kind], msg, 0.001)
        bad_joints(fuzz.rng, joints)
        fuzz.publish(joints_pub, joints, 0.002)
        if i % 10 == 0:  # each redetect makes the next usable set a global detection (seconds on 2 loaded cores)
            redetect = fuzz.call(Trigger, '/pose_estimation/redetect', Trigger.Request(), f'round {i}')
            assert redetect.success
    # then synchronised sets with one part broken (dropped, or inconsistent with the others) or well
    # formed but absurd (NaN/inf/negative/huge depths, black images, a camera far away): these reach the estimator
    for i in range(60):
        t = 200.0 + i * 0.1
        sets, joints = small_frame_set(fuzz.rng, names, t)
        parts = sets[names[int(fuzz.rng.integers(2))]]
        variant = int(fuzz.rng.integers(5))
        if variant == 0:
            kind = pick(fuzz.rng, tuple(kinds))
            parts[kind] = bad_camera_message(fuzz.rng, kind, parts[kind])
        elif variant == 1:
            parts['color'] = ros_conversions.image_msg(np.zeros((12, 16, 3), np.uint8), 'rgb8', parts['color'].header)
        elif variant == 2:
            parts['depth'] = absurd_depth(fuzz.rng, parts['depth'])
        elif variant == 3:
            parts['color'] = ros_conversions.image_msg(np.zeros((6, 8, 3), np.uint8), 'rgb8', parts['color'].header)
        else:
            parts['pose'].pose.position.x = 999.0
        fuzz.publish(joints_pub, joints, 0.002)
        for name in names:
            for kind in kinds:
                fuzz.publish(pubs[name, kind], sets[name][kind], 0.001)
        fuzz.spin(0.1)
        fuzz.alive(f'after synchronised set {i}')
    assert [m for m in objects if 200 <= m.header.stamp.sec < 210], 'no synchronised set reached the estimator'

    # good frames again, as a live camera sends them (a static scene, fresh stamps): every object found where it
    # is, within a bounded time; a full detection is asked for again now and then, as a client would
    fuzz.check(Trigger, '/pose_estimation/redetect', Trigger.Request(), VALID, 'the good redetect')
    w = world.SimWorld(scene.SceneConfig.from_yaml(SCENE))
    frames = {name: w.render(name, 320, 240) for name in names}
    truth = {oid: w.object_pose(oid)[0] for oid in w.object_ids}
    w.close()

    def errors(msg):
        """{id: (confidence, distance from the truth [m])} of a published DetectedObjectArray."""
        return {
            o.id: (o.confidence, np.linalg.norm(np.subtract(ros_conversions.pose_position(o.pose), truth[o.id])))
            for o in msg.objects
        }

    def correct(msg):
        found = errors(msg)
        return sorted(found) == sorted(truth) and all(c > 0.5 and e < 0.01 for c, e in found.values())

    objects.clear()
    deadline, k = time.monotonic() + 60, 0
    while not (objects and correct(objects[-1])):
        last = {oid: f'{c:.2f}, {e * 100:.1f} cm' for oid, (c, e) in errors(objects[-1]).items()} if objects else None
        assert time.monotonic() < deadline, f'the good frames were not perceived correctly: {last}'
        k += 1
        header = Header(stamp=stamp(1000.0 + 0.2 * k))
        joints = home_joints()
        joints.header = header
        fuzz.publish(joints_pub, joints, 0.01)
        for name in names:
            messages = camera_messages(frames[name], Header(stamp=header.stamp, frame_id=f'{name}_optical_frame'))
            for kind in kinds:
                fuzz.publish(pubs[name, kind], messages[kind], 0.005)
        fuzz.spin(0.2)
        if k % 50 == 0:
            fuzz.call(Trigger, '/pose_estimation/redetect', Trigger.Request(), 'a redetect while converging')
    fuzz.alive('at the end')


# --- world_sim ------------------------------------------------------------------------------------
def bad_trajectory(rng):
    """A malformed JointTrajectory for the arm controller."""
    names = list(scene.ARM_JOINTS)
    points = [JointTrajectoryPoint(positions=[float(v) for v in scene.HOME], time_from_start=duration(1.0))]
    msg = JointTrajectory(joint_names=names, points=points)
    kind = int(rng.integers(9))
    if kind == 0:
        msg.joint_names = pick(rng, ([], names[:6], ['x'] * 7, [weird_text(rng)[:30] for _ in range(7)]))
    elif kind == 1:
        points[0].positions = list(points[0].positions)[: int(rng.integers(0, 7))]
    elif kind == 2:
        positions = list(points[0].positions)
        positions[int(rng.integers(7))] = weird_float(rng)
        points[0].positions = positions
    elif kind == 3:
        msg.points = [copy.deepcopy(points[0]) for _ in range(3)]  # equal times
    elif kind == 4:
        points[0].time_from_start = pick(rng, (Duration(sec=-1), Duration(sec=-(2**31))))
    elif kind == 5:  # huge
        msg.points = [
            JointTrajectoryPoint(positions=[float('nan')] * 7, time_from_start=duration(0.001 * (k + 1)))
            for k in range(int(rng.integers(3000, 5000)))
        ]
    elif kind == 6:
        msg.joint_names = names * int(rng.integers(2, 1000))
    elif kind == 7:
        points[0].positions = [float(v) for v in rng.choice([-1e308, 1e308, 1e5, -50.0], 7)]
    else:
        points[0].velocities = [weird_float(rng) for _ in range(int(rng.integers(0, 20)))]
        points[0].positions = [float('inf')] * 7
    if rng.random() < 0.3:  # time 0 of the points anywhere: far past, far future, negative
        msg.header.stamp = weird_stamp(rng)
    return msg


def m_move_unknown_object(rng, r):
    r.object_id = weird_text(rng)
    return 'unknown object'


def m_move_weird_position(rng, r):
    setattr(r.pose.position, pick(rng, ('x', 'y', 'z')), pick(rng, WEIRD_FLOATS[:7]))
    return 'position'


def m_move_weird_orientation(rng, r):
    o = r.pose.orientation
    o.w = o.x = o.y = o.z = 0.0
    setattr(o, pick(rng, ('w', 'x', 'y', 'z')), pick(rng, WEIRD_FLOATS[:3]))
    return 'orientation'


def m_move_valid(rng, r):
    r.pose.position.x, r.pose.position.y = 0.4 + 0.2 * rng.random(), -0.2 + 0.4 * rng.random()
    return VALID


def test_world_sim_survives_fuzz(spawn, ros_node):
    fuzz = Fuzz(
        *ros_node,
        spawn(
            *('-m', 'twinloop_twin.world_sim_node', '--ros-args', '-p', f'scene:={SCENE}', '-p', 'camera_rate:=1.0'),
            *('-p', 'object_friction:=[0.5, 1.1]', '-p', 'object_mass_scale:=[0.6, 1.6]'),
        ),
        np.random.default_rng(4),
    )
    latest = {}
    fuzz.node.create_subscription(JointState, topics.JOINT_STATES, lambda m: latest.__setitem__('joints', m), 10)
    fuzz.node.create_subscription(
        DetectedObjectArray, topics.GROUND_TRUTH_OBJECTS, lambda m: latest.__setitem__('truth', m), 10
    )
    # ~/reset: its one field (a uint32 seed) has no invalid value; extremes, random and repeated seeds
    seeds = [0, 1, 2**32 - 1, *(int(s) for s in fuzz.rng.integers(0, 2**32, 5))]
    for i, seed in enumerate(np.repeat(fuzz.rng.choice(seeds, N // 20), 20)):
        response = fuzz.call(ResetWorld, topics.WORLD_RESET, ResetWorld.Request(seed=int(seed)), f'#{i} seed {seed}')
        assert response.success or 'do not fit' in response.message, response.message
        if i % 20 == 0:
            fuzz.alive(f'after {i} resets')

    # ~/move_object: unknown ids, non-finite or far-off positions, non-quaternions; valid moves succeed
    move = MoveObject.Request(object_id='red_cube')
    move.pose.position.x, move.pose.position.y, move.pose.position.z = 0.5, 0.1, 0.05
    mutators = [m_move_unknown_object, m_move_weird_position, m_move_weird_orientation, m_move_valid]
    run_mutations(fuzz, MoveObject, topics.WORLD_MOVE_OBJECT, move, mutators)

    trajectory_pub = fuzz.publisher(JointTrajectory, topics.ARM_TRAJECTORY, topics.STATE_QOS)
    gripper_pub = fuzz.publisher(Float64, topics.GRIPPER_COMMAND, topics.STATE_QOS)
    for i in range(N):
        fuzz.publish(trajectory_pub, bad_trajectory(fuzz.rng), 0.005)
        value = pick(fuzz.rng, WEIRD_FLOATS + (float(fuzz.rng.normal(0, 1e6)), -0.01, 1.0))
        fuzz.publish(gripper_pub, Float64(data=value), 0.005)
        if i % 20 == 0:
            fuzz.alive(f'after {i} command messages')

    # a random layout's physics are drawn in the parameters' ranges, the same for the same seed
    drawn = [fuzz.check(ResetWorld, topics.WORLD_RESET, ResetWorld.Request(seed=s), VALID, 'reset') for s in (7, 8, 7)]
    assert drawn[0].message == drawn[2].message != drawn[1].message.replace('seed 8', 'seed 7')
    physics = re.findall(r'(\w+) friction ([\d.]+), ([\d.]+) kg', drawn[0].message)
    masses = {o['id']: o.get('mass', 0.1) for o in yaml.safe_load(open(SCENE))['objects']}
    assert len(physics) >= 3 and all(0.5 <= float(f) <= 1.1 for _, f, _ in physics), drawn[0].message
    assert all(0.6 * masses[i] - 1e-3 <= float(m) <= 1.6 * masses[i] + 1e-3 for i, _, m in physics), physics
    # good requests: a reset to the scene layout (its own physics), a trajectory followed, the gripper closed
    scene_reset = fuzz.check(ResetWorld, topics.WORLD_RESET, ResetWorld.Request(seed=0), VALID, 'reset to the scene')
    assert 'red_cube friction 1.00, 0.100 kg' in scene_reset.message, scene_reset.message
    latest.clear()
    fuzz.spin_until(lambda: 'truth' in latest and 'joints' in latest, 30, 'ground truth after the reset')
    cube = next(o for o in latest['truth'].objects if o.id == 'red_cube').pose.position
    assert abs(cube.x - 0.50) < 0.01 and abs(cube.y - 0.12) < 0.01, 'the red cube back where the scene puts it'
    start = np.array(latest['joints'].position[:7])
    assert np.abs(start - scene.HOME).max() < 0.05, 'the arm at home after the reset'
    goal = start + np.array([0.3, 0.1, 0.0, 0.2, 0.0, -0.1, 0.2])
    trajectory_pub.publish(
        JointTrajectory(
            joint_names=list(scene.ARM_JOINTS),
            points=[JointTrajectoryPoint(positions=[float(v) for v in goal], time_from_start=Duration(sec=1))],
        )
    )
    gripper_pub.publish(Float64(data=0.0))
    fuzz.spin_until(
        lambda: (
            np.abs(np.array(latest['joints'].position[:7]) - goal).max() < 0.01
            and sum(latest['joints'].position[7:9]) < 0.005
        ),
        30,
        'the arm at the goal and the gripper closed',
    )
    fuzz.alive('at the end')
