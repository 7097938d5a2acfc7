"""The solvers the IKER engine deploys, one per skill (config/iker.yaml, deploy.solver: {push: ...,
place: ...}): each plans the next end-effector deltas from KeypointEnv's current state, which it
leaves unchanged.

- `ppo`: the goal-conditioned PPO policy of the skill (train.py), rolled out in the env for
  `deploy.chunk_actions` steps; trained once per skill over randomised objects and targets, so a new
  model-written target needs no training at run time. The policies shipped with the package are in
  twinloop_iker/policies/<skill>/ (`python -m twinloop_iker.train --skill S --out DIR/S` rebuilds them;
  deploy.policies names another folder).
- `cem`: the cross-entropy planner of cem.py (no training; it optimises the reward in the twin).
"""

from dataclasses import replace
from pathlib import Path

import numpy as np

from twinloop_core.engine import ConfigError
from twinloop_iker import cem
from twinloop_iker.evaluate import NORMALIZER_FILE, POLICY_FILE, PpoPolicy

SHIPPED = Path(__file__).resolve().parent / 'policies'
SOLVERS = {}


def register_solver(name):
    """Class decorator: the solver's constructor under `name` (deploy.solver)."""

    def add(cls):
        SOLVERS[name] = cls
        return cls

    return add


def make_solvers(config, skills):
    """{skill: the solver deploy.solver names for it}; ConfigError names what is unknown or missing."""
    solvers = {}
    for skill in skills:
        name = getattr(config.deploy.solver, skill)
        if name not in SOLVERS:
            raise ConfigError(f'deploy.solver.{skill} must be one of {sorted(SOLVERS)}, not {name!r}')
        solvers[skill] = SOLVERS[name](config, skill)
    return solvers


@register_solver('cem')
class CemSolver:
    """CEM over the horizon, warm-started from the previous plan of the same stage."""

    label = 'CEM in the keypoint twin (no training)'

    def __init__(self, config, skill):
        self.config = replace(config.cem, replan_every=getattr(config.deploy.chunk_actions, skill))
        self.rng = np.random.default_rng(0)  # one stream of samples: a stage tried again draws new ones

    def stage(self, env):
        """A planner for one stage: plan() -> the (deploy.chunk_actions, action size) deltas to execute next."""
        return cem.receding(env, self.rng, self.config)


@register_solver('ppo')
class PpoSolver:
    """The skill's goal-conditioned PPO policy (deterministic actions)."""

    def __init__(self, config, skill):
        folder = Path(config.deploy.policies).expanduser() if config.deploy.policies else SHIPPED
        path = folder / skill
        missing = [name for name in (POLICY_FILE, NORMALIZER_FILE) if not (path / name).is_file()]
        if missing:
            raise ConfigError(
                f'deploy.solver.{skill} ppo: no policy in {path} (missing {", ".join(missing)}); train one with '
                f'`python -m twinloop_iker.train --skill {skill} --out {path}` or deploy cem'
            )
        self.keep, self.policy = getattr(config.deploy.chunk_actions, skill), PpoPolicy(path)
        self.label = f'PPO policy trained in the keypoint twin ({path})'

    def stage(self, env):
        """A planner for one stage: the policy's next actions, rolled out from a snapshot of the env."""
        policy = self.policy

        def plan():
            snapshot = env.get_state()
            observation, actions = env.observation(), []
            for _ in range(self.keep):
                actions.append(policy(observation))
                observation, *_ = env.step(actions[-1])
            env.set_state(snapshot)
            return np.array(actions)

        return plan
