"""The CEM planner (cem.py) solves close tasks in the twin within its default budget: a push of an
object 8 cm along the table from a gripper start behind it, and a place of a held object, in most
of a few seeds; plan() leaves the env's state as it found it."""

import numpy as np

from twinloop_iker.cem import CemConfig, plan, solve
from twinloop_iker.env import KeypointEnv

PUSH = {'scale': 1.0, 'object_pose': (0.5, 0.0, 0.0), 'target_pose': (0.58, 0.0, 0.0, 0.0)}


def test_cem_pushes_objects_8_cm_to_their_targets():
    episodes = [('cube', 0), ('block', 1), ('can', 3), ('sponge', 0)]
    results = [
        solve(KeypointEnv('push'), seed=seed, options={**PUSH, 'kind': kind, 'gripper_position': (0.42, 0.0, 0.03)})
        for kind, seed in episodes
    ]
    assert sum(r.success for r in results) >= 3, results  # 23 of 24 succeed over seeds 0-7 of the first three
    assert all(r.steps <= 30 for r in results if r.success), results


def test_cem_places_a_held_object():
    options = {'kind': 'block', 'scale': 1.0, 'object_pose': (0.45, -0.1, 0.0), 'target_pose': (0.55, 0.1, 0.05, 0.5)}
    results = [solve(KeypointEnv('place'), seed=seed, options=options) for seed in range(2)]
    assert all(r.success for r in results), results


def test_cem_stands_a_held_book_upright():
    """Book Reorient in the twin: CEM turns the held flat book a quarter turn, either way, onto its end."""
    results = [
        solve(KeypointEnv('reorient'), seed=seed, options={'kind': 'book', 'target_pose': (0.5, 0.05, 0.1, 0.2, sign)})
        for seed, sign in ((0, 1.0), (1, -1.0))
    ]
    assert all(r.success for r in results), results


def test_plan_leaves_the_state_unchanged():
    env = KeypointEnv('push')
    env.reset(seed=0, options={**PUSH, 'kind': 'cube'})
    before = env.get_state()
    sequence = plan(env, np.zeros((4, 3)), np.random.default_rng(0), CemConfig(horizon=4, population=6, iterations=1))
    after = env.get_state()
    assert sequence.shape == (4, 3) and np.all(np.abs(sequence) <= 1)
    assert np.array_equal(before[0], after[0]) and before[1:3] == after[1:3]
