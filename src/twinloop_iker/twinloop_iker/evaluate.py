"""Success rate of a skill's solver in the twin: a trained PPO policy or the CEM planner, over
episodes of fresh seeds, serially or as Ray tasks on a cluster.

    python -m twinloop_iker.evaluate --skill push --checkpoint DIR --episodes 128 [--solver ppo|cem] [--ray ADDRESS]

Success is the paper's criterion (shared/seeds/002, Sec. IV-A: the mean keypoint distance to
target within 5 cm at the end of the episode), reported with a 95 % Wilson score interval, and
the paper's 128 evaluation episodes by default. Evaluation seeds start at EVAL_SEED, far from the
training seeds (0, 1, ... per env), so no evaluated episode was trained on. Each episode is fixed
by its seed, so serial and Ray runs of the same policy give the same results. With --ray the
episodes are split into chunks run as Ray tasks (`ray.init(address=...)`; `--ray local` starts a
2-CPU local cluster); the workers must have this package installed, as a cluster of this checkout
does.
"""

import argparse
import math
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twinloop_core.evaluation import ray_cluster, wilson_interval
from twinloop_iker.cem import solve
from twinloop_iker.config import default_config, load_iker_config
from twinloop_iker.env import SKILLS, KeypointEnv

EVAL_SEED = 1_000_000
SOLVERS = ('ppo', 'cem')
POLICY_FILE, NORMALIZER_FILE = 'policy.zip', 'vecnormalize.pkl'


@dataclass
class EpisodeResult:
    """One evaluated episode."""

    seed: int
    success: bool
    steps: int
    episode_return: float
    distance: float  # [m] final mean keypoint distance to the targets
    wall_s: float


def make_env(skill, config, randomize=True):
    """KeypointEnv of a skill from an IkerConfig's env, randomization and reward blocks."""
    return KeypointEnv(skill, config.env, config.randomization if randomize else None, config.reward)


class PpoPolicy:
    """A trained policy as a function observation -> action: the saved PPO and its VecNormalize
    observation statistics (the files train.py writes into its output folder)."""

    def __init__(self, checkpoint):
        """Load POLICY_FILE and NORMALIZER_FILE from a folder."""
        from stable_baselines3 import PPO  # torch: imported only where a policy runs

        folder = Path(checkpoint)
        self.model = PPO.load(folder / POLICY_FILE, device='cpu')
        with open(folder / NORMALIZER_FILE, 'rb') as f:
            self.normalizer = pickle.load(f)

    def __call__(self, observation):
        """The deterministic action for one observation."""
        action, _ = self.model.predict(self.normalizer.normalize_obs(observation), deterministic=True)
        return action


def run_episodes(skill, seeds, solver='ppo', checkpoint=None, randomize=True, config=None, on_episode=None):
    """EpisodeResults of the solver on the episodes of these seeds, one after the other (the policy loaded
    once); on_episode(result) is called after each."""
    config = config or default_config()
    env = make_env(skill, config, randomize)
    policy = PpoPolicy(checkpoint) if solver == 'ppo' else None
    results = []
    for seed in seeds:
        seed = int(seed)
        if policy is None:
            r = solve(env, seed=seed, config=config.cem)
            results.append(EpisodeResult(seed, r.success, r.steps, r.episode_return, r.distance, r.wall_s))
        else:
            started = time.perf_counter()
            observation, info = env.reset(seed=seed)
            steps, total, done = 0, 0.0, False
            while not done:
                observation, reward, terminated, truncated, info = env.step(policy(observation))
                steps, total, done = steps + 1, total + reward, terminated or truncated
            wall = time.perf_counter() - started
            results.append(EpisodeResult(seed, bool(info['is_success']), steps, total, info['distance'], wall))
        if on_episode is not None:
            on_episode(results[-1])
    return results


def evaluate(skill, episodes, solver='ppo', checkpoint=None, randomize=True, config=None, ray_address=None):
    """EpisodeResults of `episodes` episodes from EVAL_SEED on, serially or as Ray tasks."""
    if solver not in SOLVERS:
        raise ValueError(f'solver must be one of {SOLVERS}, not {solver!r}')
    if solver == 'ppo' and checkpoint is None:
        raise ValueError('the ppo solver needs a checkpoint folder')
    seeds = list(range(EVAL_SEED, EVAL_SEED + episodes))
    arguments = dict(solver=solver, checkpoint=checkpoint, randomize=randomize, config=config)
    if ray_address is None:
        return run_episodes(skill, seeds, **arguments)
    with ray_cluster(ray_address) as ray:
        task = ray.remote(run_episodes)
        chunks = np.array_split(seeds, min(len(seeds), 4 * max(1, int(ray.available_resources().get('CPU', 1)))))
        futures = [task.remote(skill, chunk.tolist(), **arguments) for chunk in chunks if len(chunk)]
        return [result for chunk in ray.get(futures) for result in chunk]


def summary(results, wall_s):
    """A dict of the evaluation: episodes, successes, rate, its Wilson 95 % interval, time per episode."""
    successes = sum(r.success for r in results)
    n = len(results)
    low, high = wilson_interval(successes, n)
    return {
        'episodes': n,
        'successes': successes,
        'success_rate': successes / n if n else 0.0,
        'wilson95': [low, high],
        'mean_distance': float(np.mean([r.distance for r in results])) if n else math.nan,
        'seconds_per_episode': wall_s / n if n else 0.0,
        'episode_seconds': float(np.mean([r.wall_s for r in results])) if n else 0.0,
        'first_seed': EVAL_SEED,
    }


def main(argv=None):
    """Command line: evaluate a skill's PPO checkpoint or the CEM planner and print the success rate."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--skill', choices=SKILLS, required=True)
    parser.add_argument('--checkpoint', help='folder with policy.zip and vecnormalize.pkl (train.py --out)')
    parser.add_argument('--episodes', type=int, default=128)
    parser.add_argument('--solver', choices=SOLVERS, default='ppo')
    parser.add_argument('--ray', metavar='ADDRESS', help="Ray cluster address, or 'local' for 2 local CPUs")
    parser.add_argument('--no-randomization', action='store_true', help='nominal physics (no domain randomisation)')
    parser.add_argument('--config', help='IKER config (default: config/iker.yaml of $TWINLOOP_ROOT)')
    args = parser.parse_args(argv)
    if args.solver == 'ppo' and not args.checkpoint:
        parser.error('--solver ppo needs --checkpoint')
    config = load_iker_config(args.config) if args.config else default_config()
    started = time.perf_counter()
    results = evaluate(
        args.skill, args.episodes, args.solver, args.checkpoint, not args.no_randomization, config, args.ray
    )
    s = summary(results, time.perf_counter() - started)
    print(
        f'{args.skill} {args.solver}: success {s["successes"]}/{s["episodes"]} = {s["success_rate"]:.3f} '
        f'(95 % Wilson {s["wilson95"][0]:.3f}-{s["wilson95"][1]:.3f}), mean final keypoint distance '
        f'{100 * s["mean_distance"]:.1f} cm, {s["seconds_per_episode"]:.2f} s per episode wall '
        f'({s["episode_seconds"]:.2f} s in each episode)'
    )


if __name__ == '__main__':
    main()
