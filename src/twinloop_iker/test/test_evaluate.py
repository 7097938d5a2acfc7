"""Evaluation (evaluate.py): a fixed policy on fixed seeds gives the same episodes serially and as
Ray tasks on a local 2-worker cluster, and a serial run reports each episode as it ends."""

import pytest
from stable_baselines3.common.vec_env import VecNormalize

from twinloop_core.evaluation import ray_cluster
from twinloop_iker import evaluate, train
from twinloop_iker.config import IkerConfig

EPISODES = 4


@pytest.fixture(scope='module')
def policy_folder(tmp_path_factory):
    """An untrained but fixed PPO policy (seed 0) with its normaliser, saved as train.py saves."""
    folder = tmp_path_factory.mktemp('policy')
    normalizer = VecNormalize(train.make_vec_env('push', IkerConfig(), False, 1, seed=0))
    train.build_model(normalizer, IkerConfig().ppo, seed=0).save(folder / evaluate.POLICY_FILE)
    normalizer.save(str(folder / evaluate.NORMALIZER_FILE))
    normalizer.close()
    return folder


def test_ray_evaluation_equals_serial_evaluation(policy_folder):
    arguments = dict(solver='ppo', checkpoint=str(policy_folder), randomize=True, config=IkerConfig())
    serial = evaluate.evaluate('push', EPISODES, **arguments)
    seeds, reported = [r.seed for r in serial], []
    assert evaluate.run_episodes('push', seeds, on_episode=reported.append, **arguments) == reported
    assert [(r.seed, r.success, r.steps, r.distance) for r in reported] == [
        (r.seed, r.success, r.steps, r.distance) for r in serial
    ]
    with ray_cluster('local'):
        remote = evaluate.evaluate('push', EPISODES, ray_address='local', **arguments)
    assert (
        [r.seed for r in remote] == [r.seed for r in serial] == list(range(evaluate.EVAL_SEED, evaluate.EVAL_SEED + 4))
    )
    assert [(r.success, r.steps, r.episode_return, r.distance) for r in remote] == [
        (r.success, r.steps, r.episode_return, r.distance) for r in serial
    ]
