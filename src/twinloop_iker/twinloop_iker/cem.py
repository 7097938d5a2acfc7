"""A sampling-based solver of the keypoint reward: the cross-entropy method (CEM) over a horizon of
end-effector deltas, rolled out in the env itself.

The paper trains a PPO policy per task (shared/seeds/002, Sec. III-C); a planner that optimises the
same reward (Sec. III-A) in the same twin needs no training and is the baseline a policy must
beat, and the fallback while none is trained. Each plan samples `population` action sequences of
`horizon` steps from a Gaussian (warm-started from the previous plan, shifted), scores each by its
return from the current state (KeypointEnv.get_state / set_state: MuJoCo's mj_getState /
mj_setState plus the episode counters), refits the Gaussian to the `elites` best for `iterations`
rounds and returns the best sequence found. `solve` runs it closed loop (model-predictive
control): plan, execute the first `replan_every` actions, plan again, until the episode ends. It
plans with the episode's true physics, so it is an oracle of the twin, not of the real world.
"""

import math
import time
from dataclasses import dataclass

import numpy as np

from twinloop_core.engine import ConfigError


@dataclass(frozen=True)
class CemConfig:
    """CEM's sampling budget (config/iker.yaml, block cem)."""

    horizon: int = 6  # policy steps per sequence
    population: int = 24  # sequences per iteration
    elites: int = 4  # best sequences the Gaussian is refitted to
    iterations: int = 2  # refits per plan
    replan_every: int = 2  # actions executed before planning again
    init_std: float = 0.6  # standard deviation of the first samples (actions in [-1, 1])
    min_std: float = 0.05  # floor of the refitted standard deviation

    def __post_init__(self):
        """Positive counts with elites <= population and replan_every <= horizon; positive deviations."""
        counts = (self.horizon, self.population, self.elites, self.iterations, self.replan_every)
        if min(counts) < 1 or self.elites > self.population or self.replan_every > self.horizon:
            raise ConfigError('CemConfig: counts >= 1, elites <= population, replan_every <= horizon are required')
        for name in ('init_std', 'min_std'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f'CemConfig.{name} must be finite and > 0, got {value!r}')


@dataclass
class SolveResult:
    """One closed-loop episode: success (the paper's 5 cm at the end), policy steps, return, time."""

    success: bool
    steps: int
    episode_return: float
    distance: float  # [m] final mean keypoint distance to the targets
    wall_s: float  # [s] planning and execution


def rollout_return(env, snapshot, actions):
    """The return of an action sequence from a snapshot (stops where the episode would end)."""
    env.set_state(snapshot)
    total = 0.0
    for action in actions:
        _, reward, terminated, truncated, _ = env.step(action)
        total += reward
        if terminated or truncated:
            break
    return total


def plan(env, mean, rng, config=CemConfig()):
    """The best (horizon, action size) sequence CEM finds from env's current state (left unchanged)."""
    snapshot = env.get_state()
    std = np.full_like(mean, config.init_std)
    best, best_return = mean, -math.inf
    for _ in range(config.iterations):
        samples = np.clip(mean + std * rng.standard_normal((config.population, *mean.shape)), -1.0, 1.0)
        samples[0] = np.clip(mean, -1.0, 1.0)  # the warm start competes too
        returns = np.array([rollout_return(env, snapshot, sequence) for sequence in samples])
        order = np.argsort(returns)[::-1]
        if returns[order[0]] > best_return:
            best, best_return = samples[order[0]].copy(), returns[order[0]]
        elites = samples[order[: config.elites]]
        mean, std = elites.mean(axis=0), np.maximum(elites.std(axis=0), config.min_std)
    env.set_state(snapshot)
    return best


def receding(env, rng, config=CemConfig()):
    """A receding-horizon planner: plan() -> the next replan_every actions of CEM over the horizon from env's
    state now, each plan warm-started from the rest of the one before (shifted, padded with zeros)."""
    mean = np.zeros((config.horizon, env.action_space.shape[0]))
    keep = config.replan_every

    def next_actions():
        nonlocal mean
        sequence = plan(env, mean, rng, config)
        mean = np.concatenate([sequence[keep:], np.zeros_like(sequence[:keep])])
        return sequence[:keep]

    return next_actions


def solve(env, seed=None, options=None, config=CemConfig()):
    """Reset env (seed, options) and run CEM closed loop to the episode's end; a SolveResult."""
    env = env.unwrapped
    started = time.perf_counter()
    _, info = env.reset(seed=seed, options=options)
    next_actions = receding(env, np.random.default_rng(seed), config)
    steps, total, done = 0, 0.0, False
    while not done:
        for action in next_actions():
            _, reward, terminated, truncated, info = env.step(action)
            steps, total = steps + 1, total + reward
            done = terminated or truncated
            if done:
                break
    return SolveResult(bool(info['is_success']), steps, total, info['distance'], time.perf_counter() - started)
