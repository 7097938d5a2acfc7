"""The iker engine without ROS: the deployment pieces (catalog fit, target pose fit, chunk timing
within the joint bounds), the config block, and whole runs on an in-process SimWorld whose arm is
driven only through an executor (ruckig paths) and a small streamer that checks each chunk
continues the commanded joints: a push reaches its targets, bad model code moves nothing."""

import functools
import math
import os
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from twinloop_core.engine import ConfigError, Limits, build_engine, load_config
from twinloop_core.geometry import HOME_GRIP, quat_matrix, quat_multiply, z_rotation
from twinloop_core.gripper import HAND_UNDERSIDE, closed_on_something
from twinloop_core.outcomes import Canceled, ExecutionFailed, GoalEnded
from twinloop_core.ports import Ports, QuietProgress, StreamReply
from twinloop_core.regions import placement_offset
from twinloop_core.task import SubTask, TaskSpec
from twinloop_iker import deploy
from twinloop_iker import engine as iker_engine  # noqa: F401  (registers 'iker')
from twinloop_iker.config import IkerConfig, load_iker_config
from twinloop_iker.deploy import DeployConfig, SolverChoice
from twinloop_iker.env import catalog_entry
from twinloop_planning.ports import in_process
from twinloop_planning.ports.in_process import SimPorts, SimStreamer
from twinloop_twin import scene
from twinloop_twin.world import SimWorld

ROOT = os.environ['TWINLOOP_ROOT']


def test_fit_kind_finds_the_catalog_shape_of_a_box():
    assert deploy.fit_kind((0.05, 0.05, 0.05)) == ('cube', pytest.approx(1.0))
    kind, scale = deploy.fit_kind((0.2, 0.13, 0.025))
    assert kind == 'book' and 0.85 < scale < 0.95


def test_kind_mesh_keypoints_are_the_envs():
    from twinloop_perception.keypoints import propose

    proposed = propose([('b', deploy.kind_mesh('block', 1.3), False)])
    assert np.allclose([k.local for k in proposed], 1.3 * catalog_entry('block')[1])


@pytest.mark.parametrize('count', [1, 2, 4])
def test_fit_target_pose_recovers_a_yaw_and_a_translation(count):
    local = 1.3 * catalog_entry('block')[1][:count]
    yaw = 0.7 if count > 1 else 0.2  # one keypoint keeps the given yaw
    shift = np.array([0.1, -0.05, 0.0])
    targets = local @ deploy.yaw_matrix(yaw).T + shift
    position, fitted = deploy.fit_target_pose(local, targets, 0.2)
    assert fitted == pytest.approx(yaw) and position == pytest.approx(shift)


def test_pushes_of_tall_objects_pass_the_hand_body_over_their_top():
    config = DeployConfig()
    assert deploy.push_height(0.025, config) == config.min_tcp_z  # a book: fingertips just above the table
    assert deploy.push_height(0.06, config) == pytest.approx(0.039)  # a shoe: its hand clears the 6 cm top
    for height in (0.06, 0.1, 0.2):
        assert deploy.push_height(height, config) + HAND_UNDERSIDE >= height + 0.01 - 1e-9


def test_joint_chunks_start_at_the_splice_end_at_rest_and_keep_the_bounds():
    config = DeployConfig()
    q0 = np.zeros(7)
    for move in (0.01, 0.2, 2.0):
        times, positions = deploy.joint_chunk(q0, q0 + move, 0.05, config)
        assert times[0] == 0 and np.all(np.diff(times) > 0)
        assert config.min_chunk - 1e-9 <= times[-1] <= config.max_chunk + 1e-9
        assert np.array_equal(positions[0], q0)
        velocity = np.gradient(positions, times, axis=0)
        acceleration = np.gradient(velocity, times, axis=0)
        assert np.abs(velocity).max() <= config.joint_velocity * 1.05
        assert np.abs(acceleration).max() <= config.joint_acceleration * 1.1
        assert np.abs(velocity[-1]).max() < 0.05 * config.joint_velocity
    assert positions[-1, 0] < 2.0  # a move too big for one chunk is shortened


def test_the_deploy_block_is_validated():
    assert load_iker_config(f'{ROOT}/config/iker.yaml').deploy == DeployConfig()
    assert load_config(IkerConfig, {'deploy': {'max_chunks': 5}}).deploy.max_chunks == 5
    with pytest.raises(ConfigError, match='writer'):
        load_config(IkerConfig, {'deploy': {'writer': 'vlm'}})
    with pytest.raises(ConfigError, match='chunk_actions'):
        load_config(IkerConfig, {'deploy': {'chunk_actions': {'push': 0}}})
    with pytest.raises(ConfigError, match='max_chunk'):
        load_config(IkerConfig, {'deploy': {'max_chunk': 2.0}})
    with pytest.raises(ConfigError, match='unknown keys'):
        load_config(IkerConfig, {'deploy': {'speed': 1.0}})


def _sim_ports(scene_name):
    """(world, streamer, progress, ports) of a SimWorld of config/scenes/<scene_name>.yaml."""
    world = SimWorld(scene.SceneConfig.from_yaml(f'{ROOT}/config/scenes/{scene_name}.yaml'))
    world.reset()
    arm = SimPorts(
        world, None, None, [], f'{ROOT}/urdf/panda.urdf', f'{ROOT}/config/panda_joint_limits.yaml', views=['front']
    )
    streamer = SimStreamer(world, arm.limits, arm.jerk)
    progress = QuietProgress()
    ports = Ports(perception=arm, executor=arm, streamer=streamer, progress=progress, cancel=arm.cancel)
    yield world, streamer, progress, ports
    world.close()


@pytest.fixture
def sim():
    yield from _sim_ports('iker_align')


@pytest.fixture
def shoes():
    yield from _sim_ports('iker_shoes')


def align(ports):
    """The task as the parsers ground it on the perceived scene: the spot in line with the green book."""
    offset = placement_offset('aligned_with', 'red_book', ['green_book'], ports.perception.state().objects)
    subtask = SubTask('push', 'red_book', 'green_book', 'aligned_with', offset=offset)
    return TaskSpec('push the red book in line with the green book', [subtask])


def test_a_push_reaches_its_keypoint_targets_through_streamed_chunks(sim):
    world, streamer, progress, ports = sim
    engine = build_engine('iker', f'{ROOT}/config')
    start = world.object_pose('red_book')[0]
    result = engine.run(align(ports), ports, Limits())
    assert result.success, (result.detail, progress.lines)
    assert result.backend.startswith('template writer (not a VLM) + push: CEM in the keypoint twin (no training)')
    assert 'place: CEM in the keypoint twin' in result.backend
    record = progress.records[-1]
    assert record.object_id == 'red_book' and not record.grasp and 0 <= record.distance <= 0.05
    assert 'def get_interaction_data' in record.code and record.images[0][1].shape == (240, 320, 3)
    assert streamer.chunks >= 1 and streamer.stops >= 1 and result.steps == streamer.chunks
    end, green = world.object_pose('red_book')[0], world.object_pose('green_book')[0]
    assert abs(end[0] - green[0]) < abs(start[0] - green[0]) - 0.05 and abs(end[2] - start[2]) < 0.02


def test_a_receding_push_replans_every_control_period_while_the_arm_moves(sim):
    """deploy.loop receding: a step planned and spliced every 0.1 s of simulated time into one running stream
    (each spliced before the one before ends: the arm does not stop between steps), the twin's hand driven a
    splice lead ahead; the book reaches its spot."""
    world, streamer, progress, ports = sim
    engine = build_engine('iker', f'{ROOT}/config')
    engine.config = replace(engine.config, deploy=replace(engine.config.deploy, loop='receding'))
    splices = []
    send = streamer.send_chunk

    def recording(stream_id, times, positions, splice_time=-1.0, velocities=None):
        before = streamer.streams.get(stream_id)
        running_until = None if before is None else before.last_chunk_end + streamer.started[stream_id]
        splices.append((streamer.clock(), running_until))
        return send(stream_id, times, positions, splice_time, velocities)

    streamer.send_chunk = recording
    start = world.object_pose('red_book')[0]
    result = engine.run(align(ports), ports, Limits())
    assert result.success, (result.detail, progress.lines)
    record = progress.records[-1]
    assert 0 <= record.distance <= 0.05 and 'control steps at 10.0 Hz' in record.outcome, record.outcome
    times = np.array([t for t, _ in splices])
    assert np.allclose(np.diff(times)[np.diff(times) < 0.5], 0.1, atol=0.006)  # a stream's steps, 0.1 s apart
    running = [t < until for t, until in splices if until is not None]
    assert len(running) >= 10 and np.mean(running) > 0.9, running  # spliced into a motion still running
    end, green = world.object_pose('red_book')[0], world.object_pose('green_book')[0]
    assert abs(end[0] - green[0]) < abs(start[0] - green[0]) - 0.05 and abs(end[2] - start[2]) < 0.02


def test_bad_model_code_ends_the_iteration_and_nothing_moves(sim):
    world, streamer, progress, ports = sim

    class BadWriter:
        label = 'a writer of bad code (test)'

        def write(self, request):
            from twinloop_iker.writers import WrittenCode

            return WrittenCode(
                'import os\ndef get_interaction_data(keypoint_coordinates):\n    return {}\n', self.label
            )

    engine = build_engine('iker', f'{ROOT}/config')
    engine.writer = BadWriter()
    arm = world.arm_positions()
    result = engine.run(align(ports), ports, Limits())
    assert not result.success and 'forbidden' in result.detail and 'nothing moved' in result.detail
    assert streamer.chunks == 0 and np.allclose(world.arm_positions(), arm)
    assert progress.records[-1].code.startswith('import os')


class RefusingFirstChunks:
    """The streamer refusing the first `count` chunks as the gate does (the stream ends), then playing them."""

    def __init__(self, streamer, count):
        self.streamer, self.count, self.refused, self.streams = streamer, count, 0, set()

    def send_chunk(self, stream_id, times, positions, splice_time=-1.0, velocities=None):
        self.streams.add(stream_id)
        if self.refused < self.count:
            self.refused += 1
            return StreamReply(False, 'the trajectory collides in the twin: panda_right_gripper|box', 'collision')
        return self.streamer.send_chunk(stream_id, times, positions, splice_time, velocities)

    def __getattr__(self, name):  # stop_stream, clock, wait: the streamer's
        return getattr(self.streamer, name)


@pytest.mark.parametrize('replans', [0, 2])
def test_a_push_chunk_the_gate_refuses_is_planned_again(sim, replans):
    """Through ROS the gate refused push chunks that drove the hand into an object the keypoint twin does not
    hold, stage after stage: a push plans a refused chunk again (deploy.push_replans) in a new stream."""
    world, streamer, progress, ports = sim
    start = world.object_pose('red_book')[0]
    engine = build_engine('iker', f'{ROOT}/config')
    engine.config = replace(engine.config, deploy=replace(engine.config.deploy, max_iterations=1, push_replans=replans))
    refusing = RefusingFirstChunks(streamer, 2)
    engine.run(align(ports), replace(ports, streamer=refusing), Limits())
    (record,) = progress.records
    if replans:
        assert record.chunks >= 1 and len(refusing.streams) == 3, record.outcome
        assert '2 refused chunk(s) planned again' in record.outcome
        assert np.linalg.norm(world.object_pose('red_book')[0] - start) > 0.03
    else:
        assert record.chunks == 0 and 'panda_right_gripper|box' in record.outcome


def test_dry_run_checks_the_targets_and_moves_nothing(sim):
    world, streamer, progress, ports = sim
    arm = world.arm_positions()
    result = build_engine('iker', f'{ROOT}/config').run(align(ports), ports, Limits(dry_run=True))
    assert result.success and 'dry run' in result.detail and streamer.chunks == 0
    assert np.allclose(world.arm_positions(), arm) and len(progress.records[-1].targets) >= 1
    assert all(math.isfinite(v) for target in progress.records[-1].targets for v in target)


@pytest.mark.parametrize('solver', ['cem', 'ppo'])
def test_a_place_grasps_carries_over_and_releases_on_the_rack(shoes, solver):
    world, streamer, progress, ports = shoes
    task = TaskSpec('put the left shoe on the rack', [SubTask('place', 'left_shoe', 'rack', 'on')])
    config = load_iker_config(f'{ROOT}/config/iker.yaml')
    config = replace(config, deploy=replace(config.deploy, solver=SolverChoice('cem', solver)))
    engine = iker_engine.IkerEngine(config, f'{ROOT}/config')
    assert f'place: {"PPO policy" if solver == "ppo" else "CEM"}' in engine.backend
    result = engine.run(task, ports, Limits())
    assert result.success, (result.detail, progress.lines)
    record = progress.records[-1]
    assert record.grasp and record.object_id == 'left_shoe' and 0 <= record.distance <= 0.05
    assert streamer.chunks == result.steps >= 1 and 'placed left_shoe' in record.outcome
    position, quat = world.object_pose('left_shoe')
    rack, _ = world.object_pose('rack')
    assert position[2] == pytest.approx(0.12, abs=0.005), 'resting on the rack top (12 cm), upright'
    assert abs(position[0] - rack[0]) < 0.03 and abs(quat[1]) + abs(quat[2]) < 0.05
    assert world.gripper_width() > 0.07, 'released'


def test_a_grasp_on_nothing_is_reported_and_carries_nothing(shoes):
    world, streamer, progress, ports = shoes
    engine = build_engine('iker', f'{ROOT}/config')
    engine.config = replace(engine.config, deploy=replace(engine.config.deploy, max_iterations=2))
    grasp = engine._grasp

    def beside(state, oid, shape):  # 15 cm beside the shoe: the fingers close on air
        point, quat, yaw = grasp(state, oid, shape)
        return point + (0.0, 0.15, 0.0), quat, yaw

    engine._grasp = beside
    before = world.object_pose('left_shoe')[0]
    task = TaskSpec('put the left shoe on the rack', [SubTask('place', 'left_shoe', 'rack', 'on')])
    result = engine.run(task, ports, Limits())
    assert not result.success and streamer.chunks == 0
    assert any('missed' in record.outcome for record in progress.records), progress.lines
    assert np.linalg.norm(world.object_pose('left_shoe')[0] - before) < 0.01


def test_an_object_perception_loses_ends_the_goal_with_the_reason(sim):
    world, streamer, progress, ports = sim
    state = ports.perception.state
    ports.perception.state = lambda: replace(
        state(), objects={k: v for k, v in state().objects.items() if k != 'red_book'}
    )
    engine = build_engine('iker', f'{ROOT}/config')
    with pytest.raises(GoalEnded, match='red_book is no longer perceived'):
        engine._push(ports, Limits(), 'red_book', ('book', 1.0), np.zeros((1, 3)), np.zeros((1, 3)), 0, 0.03)
    assert streamer.chunks == 0


def test_a_grasp_out_of_the_wrists_reach_is_taken_with_the_hand_turned_half_a_turn(shoes):
    world, streamer, progress, ports = shoes
    engine = build_engine('iker', f'{ROOT}/config')
    state = ports.perception.state()
    point, _, _ = engine._grasp(state, 'left_shoe', ('shoe', 1.0))
    turned = math.radians(-150)  # beyond the last wrist joint's range here; +30 degrees grips the same
    quat = quat_multiply(z_rotation(turned), HOME_GRIP)
    size = state.objects['left_shoe'][2]
    assert not engine.arm.ik.solve(
        engine.arm.q_full(state.arm), point + (0, 0, size[2] + engine.config.deploy.approach_height), quat
    ).converged
    q_arm, hand_yaw = engine._pick(ports, state, point, quat, turned, size, point[2] + 0.1)
    assert hand_yaw == pytest.approx(math.radians(30))
    assert closed_on_something(ports.perception.state().gripper_width), 'the shoe is held'
    assert world.object_pose('left_shoe')[0][2] > 0.05, 'and lifted'


def test_a_grasp_comes_down_from_the_clear_height_or_from_lower_where_that_is_out_of_reach(shoes):
    """The arm moves above a grasp at the height clear of every object's top (a joint-space move must not come
    down across a tall neighbour); beside a 1 m tower that height is out of reach and it comes from lower."""
    world, streamer, progress, ports = shoes
    engine = build_engine('iker', f'{ROOT}/config')
    state = ports.perception.state()
    point, quat, hand_yaw = engine._grasp(state, 'left_shoe', ('shoe', 1.0))
    size = state.objects['left_shoe'][2]
    low = point[2] + size[2] + engine.config.deploy.approach_height
    towered = replace(
        state, objects={**state.objects, 'tower': ((0.9, 0.5, 0.0), (1.0, 0.0, 0.0, 0.0), (0.1, 0.1, 1.0))}
    )
    high, _ = engine._heights_above(towered, low)
    assert not engine.arm.ik.solve(engine.arm.q_full(state.arm), np.r_[point[:2], high], quat).converged
    engine._pick(ports, towered, point, quat, hand_yaw, size, point[2] + 0.1)
    assert closed_on_something(ports.perception.state().gripper_width), 'the shoe is held'


def test_a_carry_rises_over_the_objects_near_its_way_only():
    """A shoe carried to the end of the rack away from the shoe box passes over the rack, not the box (the box's
    top would lift the hand out of reach at the rack's far end); carried past the box, it rises over it."""
    engine = build_engine('iker', f'{ROOT}/config')
    level = (1.0, 0.0, 0.0, 0.0)
    objects = {
        'left_shoe': ((0.36, 0.3, 0.0), level, (0.18, 0.07, 0.06)),
        'rack': ((0.72, 0.0, 0.0), level, (0.26, 0.6, 0.12)),
        'shoe_box': ((0.72, -0.14, 0.12), level, (0.2, 0.3, 0.1)),
    }
    state = SimpleNamespace(objects=objects)
    clearance = engine.config.deploy.carry_clearance
    rack_end = [(0.72, 0.24, 0.15), (0.72, 0.2, 0.15)]
    assert engine._carry_height(state, 'left_shoe', rack_end) == pytest.approx(0.15 + clearance)
    past_the_box = [(0.72, -0.25, 0.15)]
    assert engine._carry_height(state, 'left_shoe', past_the_box) == pytest.approx(0.22 + clearance)


def test_ik_near_the_base_finds_a_solution_whose_links_are_clear_of_each_other():
    """Through ROS every push start near the base was refused for panda_link1|panda_link5: the IK from the
    home pose converged into the arm folded onto itself. The engine's IK takes another start then."""
    engine = build_engine('iker', f'{ROOT}/config')
    target, quat = np.array([0.25, 0.0, 0.1]), quat_multiply(z_rotation(0.5), HOME_GRIP)
    folded = engine.arm.ik.solve(engine.arm.q_full(scene.HOME), target, quat)
    assert folded.converged and engine._self_colliding(folded.positions)  # what the home start gives
    q = engine._ik(scene.HOME, target, 'near the base', quat)
    assert not engine._self_colliding(q)
    assert np.linalg.norm(engine.arm.ee_position(q) - target) < 0.002


held_out_layout = functools.partial(in_process.held_out_layout, ROOT)  # (scene name, seed): the world in process


def test_the_code_writer_is_shown_the_keypoints_on_the_camera_image():
    """Deliverable 1: the keypoints are numbered on a camera's image (the perception port's, here world_sim's front
    camera), not on a drawing; a perception without cameras gets a schematic view, and the record says which."""
    with held_out_layout('iker_align', 1000) as (_, world, ports, _, progress):
        engine = build_engine('iker', f'{ROOT}/config')
        engine.run(align(ports), ports, Limits(dry_run=True))
        (record,) = progress.records
        image = dict(record.images)['keypoints']
        frame = world.render('front', 320, 240, depth=False).rgb
        assert record.view == 'camera front' and image.shape == frame.shape
        assert np.mean(np.all(image == frame, axis=2)) > 0.8  # the camera's pixels but for markers and legend
        blind = Ports(perception=SimpleNamespace(state=ports.perception.state), progress=QuietProgress())
        engine.run(align(ports), blind, Limits(dry_run=True))
        assert 'schematic' in blind.progress.records[0].view


def test_a_push_keeps_the_hand_at_push_height_and_the_shoe_upright():
    """Held-out shoe layout 1003 pushes a shoe sideways 36 cm across the front of the robot. The twin's hand rose
    while pushing and came down on the shoe, and the stiff arm flipped it over (it then lay 6 cm higher and every
    later push passed over it). Pushes now keep the TCP at push height: the shoe arrives upright."""
    with held_out_layout('iker_shoes', 1003) as (_, world, ports, streamer, progress):
        offset = placement_offset('next_to', 'left_shoe', ['right_shoe'], ports.perception.state().objects)
        task = TaskSpec(
            'push the left shoe next to the right shoe',
            [SubTask('push', 'left_shoe', 'right_shoe', 'next_to', offset=offset)],
        )
        engine = build_engine('iker', f'{ROOT}/config')
        result = engine.run(task, ports, Limits(max_steps=60))
        assert result.success, (result.detail, progress.lines)
        heights = [engine.arm.ee_position(q)[2] for q in streamer.ends]
        push = deploy.push_height(0.06, engine.config.deploy)
        assert abs(np.median(heights) - push) < 0.005 and max(heights) < push + 0.03  # never up onto the shoe
        position, quat = world.object_pose('left_shoe')[:2]
        assert abs(position[2]) < 0.01 and np.hypot(quat[0], quat[3]) > math.cos(math.radians(5))  # upright


def test_a_push_start_beyond_the_upright_reach_is_approached_leaning_out(sim):
    """Through ROS 4 of 10 book layouts put the push start behind the red book out of reach (x ~0.8 m):
    the hand leans its fingertips out (deploy.push_leans) and pushes the book back towards the robot."""
    world, streamer, progress, ports = sim
    world.move_object('green_book', (0.36, 0.29, 0.0))
    world.move_object('red_book', (0.69, -0.03, 0.0), tuple(z_rotation(0.2)))
    world.step(50)
    start, task = world.object_pose('red_book')[0], align(ports)
    engine = build_engine('iker', f'{ROOT}/config')
    upright = replace(engine.config.deploy, max_iterations=1, push_leans=(0.0,), push_sides=(0.0,))
    engine.config = replace(engine.config, deploy=upright)
    with pytest.raises(GoalEnded, match='above the push start: no IK solution'):  # what the suite met
        engine.run(task, ports, Limits())
    assert streamer.chunks == 0 and np.allclose(world.object_pose('red_book')[0], start, atol=0.005)
    engine.config = replace(engine.config, deploy=replace(upright, push_leans=DeployConfig().push_leans))  # straight on
    engine.run(task, ports, Limits())
    record = progress.records[-1]
    assert record.chunks >= 1, record.outcome
    assert world.object_pose('red_book')[0][0] < start[0] - 0.05  # pushed towards the robot


class RefusingOnOneSide:
    """Motions ending with the TCP beyond y_max refused before they start (the gate's answer where a box
    stands there); every other motion runs."""

    def __init__(self, executor, arm, y_max):
        self.executor, self.arm, self.y_max, self.refused = executor, arm, y_max, 0

    def execute(self, segments):
        if self.arm.ee_position(segments[-1].waypoints[-1])[1] > self.y_max:
            self.refused += 1
            raise ExecutionFailed(
                'safety gate (collision): the trajectory collides in the twin: hand|box', refused=True
            )
        return self.executor.execute(segments)


def test_a_push_start_that_is_blocked_is_taken_from_a_side_turned_about_the_object(sim):
    """Through ROS a box beside the red book refused every start behind it (panda_right_gripper|box, five
    iterations in a row): the push then starts from a side (deploy.push_sides), a first leg."""
    world, streamer, progress, ports = sim
    world.move_object('green_book', (0.45, -0.25, 0.0))
    world.move_object('red_book', (0.45, 0.15, 0.0))
    world.move_object('box', (0.75, 0.35, 0.0))
    world.step(50)
    engine = build_engine('iker', f'{ROOT}/config')
    engine.config = replace(engine.config, deploy=replace(engine.config.deploy, max_iterations=1))
    blocking = RefusingOnOneSide(ports.executor, engine.arm, y_max=0.2)  # the start behind it is at y ~0.3
    engine.run(align(ports), replace(ports, executor=blocking), Limits())
    (record,) = progress.records
    assert blocking.refused >= 1 and record.chunks >= 1 and 'refused' not in record.outcome, record.outcome


class RefusingExecutor:
    """Every motion refused before it starts, as the execution node answers a gate refusal."""

    def __init__(self, reason):
        self.reason, self.calls = reason, 0

    def execute(self, segments):
        self.calls += 1
        raise ExecutionFailed(self.reason, before_motion=True)


def test_a_refused_motion_ends_the_iteration_and_the_next_one_tries_again(sim):
    world, streamer, progress, ports = sim
    engine = build_engine('iker', f'{ROOT}/config')
    engine.config = replace(engine.config, deploy=replace(engine.config.deploy, max_iterations=2))
    refusing = RefusingExecutor('segment 2: safety gate (collision): the trajectory collides in the twin: a|b')
    arm = world.arm_positions()
    result = engine.run(align(ports), replace(ports, executor=refusing), Limits())
    assert not result.success and '2 iterations' in result.detail
    assert refusing.calls >= 4 and refusing.calls % 2 == 0, (
        'each iteration tries the other approaches the gate may take'
    )
    assert all('a motion was refused' in record.outcome for record in progress.records), progress.lines
    assert streamer.chunks == 0 and np.allclose(world.arm_positions(), arm)


class RefusingSecondSegment:
    """The first motion's first segment runs, its second is refused by the gate (a push start the hand
    would reach into a box at); every later motion runs."""

    def __init__(self, executor):
        self.executor, self.calls = executor, 0

    def execute(self, segments):
        self.calls += 1
        if self.calls > 1:
            return self.executor.execute(segments)
        self.executor.execute(segments[:1])
        raise ExecutionFailed(
            'segment 2: safety gate (collision): the trajectory collides in the twin: a|b', refused=True
        )


def test_a_push_start_refused_after_the_arm_moved_is_approached_another_way(sim):
    """The gate refusing the way down to the push start (the arm above it) is not the end of the
    iteration: the next approach is tried from where the arm stands (CI stop 28 failed five iterations
    in a row on the same refused approach)."""
    world, streamer, progress, ports = sim
    engine = build_engine('iker', f'{ROOT}/config')
    engine.config = replace(engine.config, deploy=replace(engine.config.deploy, max_iterations=1))
    refusing = RefusingSecondSegment(ports.executor)
    engine.run(align(ports), replace(ports, executor=refusing), Limits())
    (record,) = progress.records
    assert refusing.calls >= 3 and record.chunks >= 1, record.outcome  # refused, approached, retreated
    assert 'refused' not in record.outcome


def test_a_cancel_during_an_approach_ends_the_goal_without_trying_another_way(sim):
    world, streamer, progress, ports = sim

    class Cancelling:
        calls = 0

        def execute(self, segments):
            self.calls += 1
            ports.cancel.cancel()
            raise Canceled()

    cancelling = Cancelling()
    with pytest.raises(Canceled):
        build_engine('iker', f'{ROOT}/config').run(align(ports), replace(ports, executor=cancelling), Limits())
    assert cancelling.calls == 1 and streamer.chunks == 0


def test_a_stale_state_refusal_ends_the_goal(sim):
    world, streamer, progress, ports = sim
    refusing = RefusingExecutor('safety gate (watchdog): joint state is stale')
    with pytest.raises(GoalEnded, match='stale'):
        build_engine('iker', f'{ROOT}/config').run(align(ports), replace(ports, executor=refusing), Limits())
    assert refusing.calls == 1


def test_a_push_aside_stage_is_done_once_the_object_moved_aside_on_its_support():
    task = TaskSpec(
        'push the box aside, then put the shoe on the rack', [SubTask('push', 'box'), SubTask('place', 'shoe', 'rack')]
    )
    q, size = (1.0, 0.0, 0.0, 0.0), (0.3, 0.2, 0.1)
    before = {'box': ((0.5, 0.0, 0.17), q, size), 'shoe': ((0.4, 0.2, 0.03), q, size)}
    moved = {**before, 'box': ((0.5, -0.08, 0.17), q, size)}
    done, note = iker_engine.pushed_aside(task, 0, 'box', before, moved)
    assert done and 'box pushed 8.0 cm aside' in note
    assert not iker_engine.pushed_aside(task, 0, 'box', before, {**before, 'box': ((0.5, -0.03, 0.17), q, size)})[0]
    assert not iker_engine.pushed_aside(task, 0, 'box', before, {**before, 'box': ((0.5, -0.08, 0.05), q, size)})[0]
    assert not iker_engine.pushed_aside(task, 1, 'shoe', before, {**before, 'shoe': ((0.4, 0.1, 0.03), q, size)})[0]
    assert not iker_engine.pushed_aside(task, 0, 'shoe', before, moved)[0]  # the code moved another object


def test_a_push_whose_way_crosses_another_object_goes_to_a_via_point_first():
    """Held-out layout 1006 through ROS: the straight push drove the red book into the green one. Objects
    the pushed one passes over or under (a rack's top) are not in its way."""
    engine = build_engine('iker', f'{ROOT}/config')
    flat = (1.0, 0.0, 0.0, 0.0)
    red = ((0.62, -0.28, 0.0), tuple(z_rotation(-0.22)), (0.2, 0.13, 0.025))
    green = ((0.45, 0.07, 0.0), flat, (0.2, 0.13, 0.025))
    above = ((0.45, 0.07, 0.1), flat, (0.3, 0.3, 0.02))  # a shelf above the way
    target = np.array([0.45, 0.31, 0.0])
    state = SimpleNamespace(objects={'red_book': red, 'green_book': green})
    via = engine._via_point(state, 'red_book', red, target, 0.0)
    assert via is not None and np.linalg.norm(via - np.array([0.45, 0.07])) > 0.2
    assert (
        engine._via_point(SimpleNamespace(objects={'red_book': red, 'shelf': above}), 'red_book', red, target, 0.0)
        is None
    )
    assert engine._via_point(state, 'red_book', red, np.array([0.75, -0.1, 0.0]), 0.0) is None  # a way clear of it


def test_a_via_leg_ends_once_the_object_is_past_what_blocked_it():
    """Held-out layouts 1006 and 1008 through ROS: the via legs ran their 30 chunks towards a point at the edge of
    reach, 1-5 cm a chunk. A leg has done its job once the straight way on is clear (the push stops there)."""
    engine = build_engine('iker', f'{ROOT}/config')
    flat = (1.0, 0.0, 0.0, 0.0)
    green = ((0.45, 0.07, 0.0), flat, (0.2, 0.13, 0.025))
    target = np.array([0.45, 0.31, 0.0])
    blocked = ((0.62, -0.28, 0.0), tuple(z_rotation(-0.22)), (0.2, 0.13, 0.025))
    past = ((0.68, 0.2, 0.0), flat, (0.2, 0.13, 0.025))  # beside the green book, on the target's side of it
    for red, clear in ((blocked, False), (past, True)):
        state = SimpleNamespace(objects={'red_book': red, 'green_book': green})
        assert engine._straight_way_clear(state, 'red_book', red, target, 0.0) is clear


def test_a_flat_book_is_stood_upright_on_the_shelf_in_process():
    """Book Reorient (shared/seeds/002) on held-out shelf layout 1000: the template writer's upright targets tilt the
    book, so the engine grips it flat from above, turns it with the reorient twin's pitch (about the fingers'
    closing axis, fingertips away from the robot), sets it down on its end exactly and draws the hand back."""
    with held_out_layout('iker_shelf', 1000) as (layout, world, ports, _, progress):
        task = TaskSpec('put the book upright on the shelf', [SubTask('reorient', 'book', 'shelf', 'on')])
        result = build_engine('iker', f'{ROOT}/config').run(task, ports, Limits(max_steps=60))
        assert result.success and 'stood book up' in result.detail and 'set down' in result.detail, progress.lines
        position, quat = world.object_pose('book')[:2]
        long_side = quat_matrix(quat)[:, 0]  # the book's length
        assert abs(long_side[2]) > math.cos(math.radians(10)), long_side  # standing on its end
        shelf = next(o for o in layout.objects if o.id == 'shelf')
        (x, y), (length, width, height) = shelf.pos[:2], shelf.params['size']
        assert abs(position[2] - (height + 0.08)) < 0.01  # on its end on the shelf's top: its frame half its length up
        assert abs(position[0] - x) < length / 2 and abs(position[1] - y) < width / 2
