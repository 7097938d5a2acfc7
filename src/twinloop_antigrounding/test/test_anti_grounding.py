"""The AntiGrounding MPC's parts on the real arm model: stages per sub-task, candidates built by
IK that end where they were sampled, unreachable ones dropped, and stage checks on perceived
state."""

import numpy as np
import pytest

from twinloop_antigrounding.candidates import CandidateBuilder
from twinloop_antigrounding.config import MpcConfig
from twinloop_antigrounding.mpc import AntiGroundingMpc
from twinloop_antigrounding.sampler import GRIPPER_CLOSE, GRIPPER_NONE, Sample
from twinloop_antigrounding.stages import HOVER, Stage, grip_offset, next_stage, stages_for
from twinloop_core.geometry import HOME_GRIP
from twinloop_core.gripper import CLOSED_WIDTH
from twinloop_core.outcomes import ExecutionFailed
from twinloop_core.task import SubTask
from twinloop_execution.kinematics import Arm
from twinloop_twin import scene


@pytest.fixture(scope='module')
def arm():
    return Arm.panda()


def test_stages_for_subtasks():
    stages = stages_for([SubTask('pick', 'a'), SubTask('place', 'b', 'bowl')])
    assert [(s.name, s.subtask_index) for s in stages] == [
        ('grasp', 0),
        ('lift', 0),
        ('grasp', 1),
        ('lift', 1),
        ('carry', 1),
        ('release', 1),
    ]
    with pytest.raises(ValueError, match='push'):
        stages_for([SubTask('push', 'a', 'b')])


def test_candidates_end_at_their_sampled_goal(arm):
    q = np.array(scene.HOME)
    ee = arm.ee_position(q)
    builder = CandidateBuilder(arm.ik, MpcConfig())
    goal = ee + np.array([0.05, -0.08, -0.1])
    proposal = builder.build(
        'c00', Sample(goal, (goal - ee) / np.linalg.norm(goal - ee), 0.1, GRIPPER_NONE), arm.q_full(q), ee, HOME_GRIP
    )
    assert proposal is not None and len(proposal.segments) == 1
    assert np.linalg.norm(arm.ee_position(proposal.waypoints()[-1]) - goal) < 0.002
    assert np.all(np.diff([0.0] + proposal.times) > 0) and proposal.events == [GRIPPER_NONE] * len(proposal.times)


def test_close_candidate_closes_then_lifts(arm):
    q = np.array(scene.HOME)
    ee = arm.ee_position(q)
    config = MpcConfig()
    goal = ee + np.array([0.0, 0.0, -0.1])
    proposal = CandidateBuilder(arm.ik, config).build(
        'c01', Sample(goal, np.array([0, 0, -1.0]), 0.1, GRIPPER_CLOSE), arm.q_full(q), ee, HOME_GRIP, open_first=True
    )
    (first, _, width), (second, _, after) = proposal.segments
    assert width == CLOSED_WIDTH and after is None
    assert arm.ee_position(second[-1])[2] - arm.ee_position(first[-1])[2] == pytest.approx(
        config.lift_after_grasp, abs=0.002
    )
    assert proposal.events.count(GRIPPER_CLOSE) == 1 and proposal.times[0] > config.grip_pause
    assert 'close and lift' in proposal.description


def test_unreachable_and_too_low_goals_are_dropped(arm):
    q = np.array(scene.HOME)
    ee = arm.ee_position(q)
    builder = CandidateBuilder(arm.ik, MpcConfig())
    far = ee + np.array([1.5, 0.0, 0.0])
    assert (
        builder.build('x', Sample(far, np.array([1.0, 0, 0]), 1.5, GRIPPER_NONE), arm.q_full(q), ee, HOME_GRIP) is None
    )
    low = np.array([ee[0], ee[1], 0.0])
    assert (
        builder.build('y', Sample(low, np.array([0, 0, -1.0]), 0.4, GRIPPER_NONE), arm.q_full(q), ee, HOME_GRIP) is None
    )


def test_stage_checks_on_perceived_state():
    cube = ((0.5, 0.1, 0.0), (1, 0, 0, 0), (0.05, 0.05, 0.05))
    bowl = ((0.5, -0.3, 0.0), (1, 0, 0, 0), (0.15, 0.15, 0.05))
    start = {'cube': cube, 'bowl': bowl}
    grasp, lift, carry, release = stages_for([SubTask('place', 'cube', 'bowl')])
    centre = np.array([0.5, 0.1, 0.025])
    assert grasp.done(start, start, 0.048, centre)[0]
    assert not grasp.done(start, start, 0.0, centre)[0]  # closed on nothing
    assert not grasp.done(start, start, 0.048, centre + (0, 0, 0.04))[0]  # not centred
    raised = dict(start, cube=((0.5, 0.1, 0.12), cube[1], cube[2]))
    assert lift.done(raised, start, 0.048, centre + (0, 0, 0.12))[0]
    assert not lift.done(raised, start, 0.08, centre + (0, 0, 0.12))[0]  # open fingers: not held
    above = dict(start, cube=((0.51, -0.3, 0.08), cube[1], cube[2]))
    assert carry.done(above, start, 0.048, np.array([0.51, -0.3, 0.105]))[0]
    inside = dict(start, cube=((0.5, -0.3, 0.01), cube[1], cube[2]))
    assert release.done(inside, start, 0.08, np.array([0.5, -0.3, 0.2]))[0]
    assert not release.done(inside, start, 0.048, np.array([0.5, -0.3, 0.035]))[0]  # still gripping
    assert np.allclose(grasp.sub_goal(start, start), (0.5, 0.1, 0.025))
    beside = np.array([0.5, 0.05, 0.025])  # low beside the cube: over its top first, not sideways into it
    assert np.allclose(grasp.sub_goal(start, start, beside), (0.5, 0.1, 0.05 + HOVER))
    assert np.allclose(grasp.sub_goal(start, start, np.array([0.505, 0.1, 0.09])), (0.5, 0.1, 0.025))  # over it: down


def test_next_stage_passes_done_stages_and_goes_back_to_the_grasp_when_let_go():
    cube = ((0.5, 0.1, 0.0), (1, 0, 0, 0), (0.05, 0.05, 0.05))
    bowl = ((0.5, -0.3, 0.0), (1, 0, 0, 0), (0.15, 0.15, 0.05))
    start = {'cube': cube, 'bowl': bowl}
    stages = stages_for([SubTask('place', 'cube', 'bowl')])
    over_bowl = dict(start, cube=((0.5, -0.3, 0.1), cube[1], cube[2]))
    grip_over_bowl = np.array([0.5, -0.3, 0.125])
    assert next_stage(stages, 3, over_bowl, start, 0.048, grip_over_bowl) == (3, [])  # releasing, still held
    beside = dict(start, cube=((0.5, -0.19, 0.0), cube[1], cube[2]))  # let go off target
    index, events = next_stage(stages, 3, beside, start, 0.08, grip_over_bowl)
    assert index == 0 and len(events) == 1
    assert events[0].startswith('cube is no longer held (release cube to bowl: not done: cube 11.0 cm from bowl)')
    inside = dict(start, cube=((0.51, -0.3, 0.01), cube[1], cube[2]))
    index, events = next_stage(stages, 3, inside, start, 0.08, grip_over_bowl)
    assert index == 4 and events[0].startswith('stage release cube to bowl done')
    held_at_start = np.array([0.5, 0.1, 0.025])  # grasped where it lies: grasp done, lift not yet
    assert next_stage(stages, 0, start, start, 0.048, held_at_start)[0] == 1


def test_carry_aims_the_held_object_not_the_grip_at_the_destination():
    sponge = ((0.40, 0.0, 0.10), (1, 0, 0, 0), (0.09, 0.06, 0.03))
    block = ((0.6, -0.3, 0.0), (1, 0, 0, 0), (0.06, 0.06, 0.03))
    objects = {'sponge': sponge, 'block': block}
    carry, release = stages_for([SubTask('place', 'sponge', 'block')])[2:]
    grip = np.array([0.425, 0.0, 0.115])  # held 2.5 cm off the sponge's centre
    assert np.allclose(carry.sub_goal(objects, objects, grip), (0.625, -0.3, 0.03 + 0.05 + 0.015))
    assert np.allclose(release.sub_goal(objects, objects, grip), (0.625, -0.3, 0.03 + 0.015 + 0.015))


def test_grasp_candidates_must_not_come_down_beside_the_object():
    """Through ROS a finger landed on a soda can's rim 2-4 cm off its axis and tipped it: a grasp
    path may go low only over the grasp point; rising out of the zone beside it is allowed."""
    can = {'can': ((0.4, 0.3, 0.0), (1, 0, 0, 0), (0.06, 0.06, 0.08))}
    grasp, lift = stages_for([SubTask('pick', 'can', '')])
    above = np.array([0.4, 0.26, 0.2])
    assert grasp.comes_down_beside(can, above, [(0.4, 0.27, 0.075)])  # beside it, below its top
    assert not grasp.comes_down_beside(can, above, [(0.4, 0.27, 0.11)])  # above its top
    assert not grasp.comes_down_beside(can, above, [(0.4, 0.29, 0.05)])  # over the grasp point
    assert not grasp.comes_down_beside(can, above, [(0.4, 0.15, 0.03)])  # clear of it
    low_beside = np.array([0.4, 0.27, 0.05])
    assert not grasp.comes_down_beside(can, low_beside, [(0.4, 0.27, 0.09)])  # rising out
    assert grasp.comes_down_beside(can, low_beside, [(0.4, 0.28, 0.05)])  # sliding in sideways
    assert not lift.comes_down_beside(can, above, [(0.4, 0.27, 0.075)])  # only grasps are checked


def test_a_grasp_off_centre_along_a_long_object_is_firm():
    """The grasp check is in the object's frame: a 9 cm sponge turned 30 degrees and held 2.8 cm off
    its centre along its length is grasped (through ROS a norm limit of 3 cm refused it, and the next
    grasp candidate opened the fingers and dropped it); 2.8 cm off across it, or 4 cm above the
    grasp point, is not."""
    yaw = np.radians(30)
    sponge = {'sponge': ((0.6, -0.1, 0.0), (np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)), (0.09, 0.06, 0.03))}
    grasp = Stage('grasp', 0, SubTask('pick', 'sponge'))
    grasp_point = np.array([0.6, -0.1, 0.015])
    along, across = np.array([np.cos(yaw), np.sin(yaw), 0]), np.array([-np.sin(yaw), np.cos(yaw), 0])
    assert np.allclose(grip_offset(sponge['sponge'], grasp_point + 0.028 * along), (0.028, 0, 0))
    assert grasp.done(sponge, sponge, 0.059, grasp_point + 0.028 * along)[0]
    assert not grasp.done(sponge, sponge, 0.059, grasp_point + 0.028 * across)[0]
    assert not grasp.done(sponge, sponge, 0.059, grasp_point + (0, 0, 0.04))[0]


def test_grasp_point_is_mid_height_but_keeps_the_palm_above_tall_objects():
    stage = Stage('grasp', 0, SubTask('pick', 'obj'))
    cube = {'obj': ((0.5, 0.0, 0.0), (1, 0, 0, 0), (0.05, 0.05, 0.05))}
    can = {'obj': ((0.5, 0.0, 0.0), (1, 0, 0, 0), (0.066, 0.066, 0.08))}
    assert stage.sub_goal(cube, cube)[2] == pytest.approx(0.025)  # the middle of a small cube
    assert stage.sub_goal(can, can)[2] == pytest.approx(
        0.08 - 0.03
    )  # 3 cm below the top of a can, not 3 cm above its base
    held = np.array([0.5, 0.0, 0.05])
    assert stage.done(can, can, 0.06, held)[0] and not stage.done(can, can, 0.06, held - (0, 0, 0.04))[0]


@pytest.fixture
def ports(sim):
    """SimPorts on the shared tabletop world with the twin_critic scorer (the gate stands in by fault injection)."""
    import os
    from twinloop_planning.ports.in_process import SimPorts
    from twinloop_scoring import agents, vqa
    from twinloop_twin.twin import MeshLibrary, SimTwin

    root = os.environ['TWINLOOP_ROOT']
    twin = SimTwin(MeshLibrary.from_scene(sim.config), sim.config.cameras)
    yield SimPorts(
        sim,
        twin,
        vqa.PromptConfig.from_yaml(f'{root}/config/vqa_prompts.yaml'),
        agents.load(f'{root}/config/vlm_agents.yaml', ['twin_critic']),
        f'{root}/urdf/panda.urdf',
        f'{root}/config/panda_joint_limits.yaml',
        size=64,
    )
    twin.close()


class _Gate:
    """Refuses the first `refusals` executions, before or after moving (fault injection on SimPorts)."""

    def __init__(self, refusals, before_motion):
        self.refusals, self.before_motion, self.tried = refusals, before_motion, []

    def __call__(self, execute, segments):
        candidate = segments[0].label.split()[0]
        self.tried.append(candidate)
        if len(self.tried) <= self.refusals:
            raise ExecutionFailed(f'refused {candidate}', before_motion=self.before_motion)
        execute(segments)


@pytest.mark.parametrize('before_motion', [True, False])
def test_a_candidate_the_gate_refuses_before_moving_gives_way_to_the_next_best(sim, arm, ports, before_motion):
    gate, execute = _Gate(2, before_motion), ports.execute
    ports.execute = lambda segments: gate(execute, segments)
    mpc = AntiGroundingMpc(ports.ports(), arm, MpcConfig(num_candidates=6))
    state = ports.state()
    objects, q, width = state.objects, state.arm, state.gripper_width
    stage = stages_for([SubTask('pick', 'red_cube')])[0]
    record = mpc.step('pick up the red cube', stage, objects, dict(objects), q, width, 0)
    ranked = sorted((c for c in record.candidates if not c['collisions']), key=lambda c: -c['total'])
    moved = np.abs(sim.arm_positions() - q).max() > 0.01
    if before_motion:  # the best two were refused before moving: the third best ran
        assert gate.tried == [c['id'] for c in ranked[:3]] and record.chosen == ranked[2]['id'] and moved
        assert 'after the safety gate refused' in record.note and gate.tried[0] in record.note
    else:  # stopped while moving: the step ends there, no other candidate is tried
        assert gate.tried == [ranked[0]['id']] and record.chosen == ranked[0]['id'] and 'not completed' in record.note


def test_a_step_with_no_reachable_candidate_is_spent_not_the_end(sim, arm, ports):
    mpc = AntiGroundingMpc(ports.ports(), arm, MpcConfig(num_candidates=4, min_height=5.0))
    q = sim.arm_positions()
    success, reason = mpc.run('pick up the red cube', [SubTask('pick', 'red_cube')], max_steps=2)
    assert not success and 'max_steps 2' in reason
    assert [r.chosen for r in mpc.records] == ['', ''] and all('no reachable candidate' in r.note for r in mpc.records)
    assert np.abs(sim.arm_positions() - q).max() < 1e-3
