"""twin_critic through the structured VQA on real twin rollouts and real renders: a colliding
candidate scores below a clean one, moving the wrong object below moving the right one, and
every result says the scorer is not a VLM."""

import os

import numpy as np
import pytest

from twinloop_execution.kinematics import PandaIk
from twinloop_scoring import vqa
from twinloop_twin.facts import rollout_facts
from twinloop_scoring.twin_critic import LABEL, TwinCritic
from twinloop_twin import overlays, scene, world
from twinloop_twin.twin import Candidate, Detection, MeshLibrary, SimTwin

ROOT = os.environ['TWINLOOP_ROOT']
SCENE = os.path.join(ROOT, 'config', 'scenes', 'tabletop.yaml')
TASK = {'object': 'red_cube', 'destination': 'bowl', 'destination_height': 0.05}


@pytest.fixture(scope='module')
def scored():
    sim = world.SimWorld(scene.SceneConfig.from_yaml(SCENE))
    twin = SimTwin(MeshLibrary.from_scene(sim.config), sim.config.cameras)
    twin.sync(
        [Detection(o.id, o.mesh_id, *sim.object_pose(o.id), o.label) for o in sim.config.objects], sim.arm_positions()
    )
    sim.close()
    ik = PandaIk(twin.model)

    def candidate(*targets, duration=1.2):
        q, out = twin.data.qpos.copy(), []
        for t in targets:
            r = ik.solve(q, t)
            assert r.converged, t
            q[ik.arm_qpos] = r.positions
            out.append(r.positions)
        return Candidate(list(duration * np.arange(1, len(out) + 1)), out, gripper=[(0.0, 0.0)])

    red, blue = twin.world.object_pose('red_cube')[0], twin.world.object_pose('blue_cube')[0]
    candidates = {
        'clean': candidate(red + (0, 0, 0.15)),
        'table': candidate((0.35, 0.0, 0.2), (0.35, 0.0, -0.04)),
        'right_object': candidate(red + (0, 0.09, 0.1), red + (0, 0.09, 0.03), red + (0, -0.03, 0.03)),
        'wrong_object': candidate(blue + (0, 0.08, 0.1), blue + (0, 0.08, 0.03), blue + (0, -0.04, 0.03)),
    }
    ids = list(candidates)
    results = {cid: twin.rollout(c) for cid, c in candidates.items()}
    assert results['right_object'].displacements['red_cube'][1] < -0.01, 'the push must move the red cube'
    assert np.linalg.norm(results['wrong_object'].displacements['blue_cube']) > 0.01
    paths = [results[c].ee_path for c in ids]
    views = []
    for name in ('front', 'left'):
        frame = twin.render(name, 224, 224, depth=False, overlay=overlays.candidate_overlay(paths))
        seg = twin.segmentation(name, 224, 224)
        visibility = min(1.0, float((seg == twin.world.object_ids.index('red_cube')).sum()) / 60.0)
        views.append(
            vqa.View(name, frame.rgb, dict(zip(ids, overlays.DISTINCT_NAMES)), {'visibility': {name: visibility}})
        )
    config = vqa.PromptConfig.from_yaml(os.path.join(ROOT, 'config', 'vqa_prompts.yaml'))
    facts = {'task': TASK, 'rollouts': {cid: rollout_facts(r) for cid, r in results.items()}}
    outcome = vqa.score(config, 'put the red cube in the bowl', views, ids, [vqa.Agent(TwinCritic())], facts)
    twin.close()
    return dict(zip(ids, outcome.fused.totals)), outcome


def test_collision_scores_below_clean(scored):
    totals, _ = scored
    assert totals['table'] < totals['clean'] - 0.2, totals


def test_wrong_object_scores_below_right_object(scored):
    totals, _ = scored
    assert totals['wrong_object'] < totals['right_object'] - 0.1, totals


def test_results_say_it_is_not_a_vlm(scored):
    _, outcome = scored
    assert outcome.backends == [f'{LABEL}:rollout-rules-v1@T0']
    assert all(r.startswith(f'[{LABEL}') for rs in outcome.rationales.values() for r in rs)
    assert all(LABEL in r for rs in outcome.rationales.values() for r in rs)
    assert not outcome.failures and outcome.requests == 2


def test_touching_an_object_the_instruction_protects_scores_as_a_collision():
    """The same rollout, with and without "without touching the blue cube": safety drops to 0 and says why."""
    from twinloop_scoring.twin_critic import judge

    facts = {
        'collisions': ['panda_leftfinger|blue_cube'],
        'initial_positions': {'red_cube': [0.5, 0.12, 0.0], 'blue_cube': [0.42, -0.15, 0.0]},
        'final_positions': {'red_cube': [0.5, 0.12, 0.0], 'blue_cube': [0.42, -0.13, 0.0]},
        'displacements': {'blue_cube': 0.02},
        'rotations': {},
        'joint_margins': [0.5],
        'holding': '',
        'ee_start': [0.3, 0.0, 0.3],
        'ee_end': [0.45, 0.05, 0.2],
        'ee_path_length': 0.2,
    }
    free, _ = judge(facts, TASK)
    protected, rationale = judge(facts, {**TASK, 'avoid': ['blue_cube']})
    assert protected['safety'] == 0.0 < free['safety'] and 'not to touch' in rationale


def test_a_release_into_a_bowl_counts_as_progress():
    """Let go over a bowl, the object settles inside it, below the rim the release aims at: that is
    progress, and it beats holding on; a drop beside the bowl is not."""
    from twinloop_scoring.twin_critic import judge

    rim = (0.55, -0.30, 0.06)
    task = {'stage': 'release', 'object': 'red_cube', 'goal_position': rim, 'holding': 'unwanted'}

    def release(end, holding=''):
        return {
            'initial_positions': {'red_cube': (0.55, -0.30, 0.09)},
            'final_positions': {'red_cube': end},
            'holding': holding,
            'ee_start': (0.55, -0.30, 0.11),
            'ee_end': (0.55, -0.30, 0.14),
            'ee_path_length': 0.03,
        }

    inside, _ = judge(release((0.55, -0.30, 0.03)), task)
    held, _ = judge(release((0.55, -0.30, 0.09), holding='red_cube'), task)
    beside, _ = judge(release((0.55, -0.18, 0.0)), task)
    assert inside['task_alignment'] > 8.0
    assert inside['task_alignment'] > held['task_alignment']
    assert beside['task_alignment'] < 5.0


def test_a_carry_all_the_way_beats_one_half_way():
    """Carrying, the held object's progress decides: the grip bonus of a grasp must not make a carry
    half way score as high as one that arrives."""
    from twinloop_scoring.twin_critic import judge

    goal = (0.55, -0.30, 0.20)
    task = {
        'stage': 'carry',
        'object': 'red_cube',
        'goal_position': goal,
        'holding': 'required',
        'object_size': [0.04] * 3,
    }

    def carry(end):
        start = (0.50, 0.12, 0.20)
        return {
            'initial_positions': {'red_cube': start},
            'final_positions': {'red_cube': end},
            'holding': 'red_cube',
            'ee_start': np.add(start, (0, 0, 0.02)),
            'ee_end': np.add(end, (0, 0, 0.02)),
            'ee_path_length': float(np.linalg.norm(np.subtract(end, start))),
        }

    arrived, _ = judge(carry(goal), task)
    half_way, _ = judge(carry((0.525, -0.09, 0.20)), task)
    assert arrived['task_alignment'] > half_way['task_alignment'] + 1.0
