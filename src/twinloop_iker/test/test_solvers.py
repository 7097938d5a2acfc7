"""The deployed solvers (solvers.py): the registry's errors, and each solver planning from a
KeypointEnv state it leaves unchanged; the PPO policies shipped with the package move objects to
fresh targets closed loop (episodes of evaluation seeds, never trained on)."""

from dataclasses import replace

import numpy as np
import pytest

from twinloop_core.engine import ConfigError
from twinloop_iker.config import IkerConfig
from twinloop_iker.evaluate import EVAL_SEED, make_env
from twinloop_iker.deploy import SolverChoice
from twinloop_iker.solvers import SHIPPED, make_solvers


def _config(solver, **deploy):
    config = IkerConfig()
    return replace(config, deploy=replace(config.deploy, solver=SolverChoice(solver, solver), **deploy))


def test_an_unknown_solver_or_a_missing_policy_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"deploy.solver.push must be one of \['cem', 'ppo'\]"):
        make_solvers(_config('mppi'), ('push',))
    (tmp_path / 'push').mkdir()
    (tmp_path / 'push' / 'policy.zip').write_bytes(b'')
    with pytest.raises(
        ConfigError, match=r'solver.push ppo: no policy in .*missing vecnormalize.pkl.*twinloop_iker.train'
    ):
        make_solvers(_config('ppo', policies=str(tmp_path)), ('push',))


@pytest.mark.parametrize('solver', ['ppo', 'cem'])
def test_a_plan_leaves_the_env_where_it_was(solver):
    config = _config(solver)
    env = make_env('push', config)
    env.reset(seed=EVAL_SEED)
    plan = make_solvers(config, ('push',))['push'].stage(env)
    before = env.observation()
    actions = plan()
    assert actions.shape == (config.deploy.chunk_actions.push, 3) and np.all(np.abs(actions) <= 1.0)
    assert np.array_equal(env.observation(), before)


# measured over 128 evaluation episodes (bench/RESULTS.md): place 1.00, push 0.56, reorient 1.00; an untrained
# policy: ~0.05
@pytest.mark.parametrize(('skill', 'least'), [('place', 7), ('push', 3), ('reorient', 7)])
def test_the_shipped_policy_reaches_fresh_targets_closed_loop(skill, least):
    assert (SHIPPED / skill / 'policy.zip').is_file()
    config = _config('ppo')
    env = make_env(skill, config)
    solver = make_solvers(config, (skill,))[skill]
    successes = 0
    for seed in range(EVAL_SEED + 500, EVAL_SEED + 508):
        env.reset(seed=seed)
        plan, done = solver.stage(env), False
        while not done:
            for action in plan():
                _, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                if done:
                    break
        successes += info['is_success']
    assert successes >= least, f'{successes}/8 {skill} episodes within 5 cm'
