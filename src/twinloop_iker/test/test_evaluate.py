"""Evaluation (evaluate.py): the Wilson interval at known values, and a fixed policy on fixed seeds
gives the same episodes serially and as Ray tasks on a local 2-worker cluster."""

import pytest
from stable_baselines3.common.vec_env import VecNormalize

from twinloop_iker import evaluate, train
from twinloop_iker.config import IkerConfig

EPISODES = 4


def test_wilson_interval():
    assert evaluate.wilson_interval(0, 4) == pytest.approx((0.0, 0.4899), abs=1e-4)
    assert evaluate.wilson_interval(64, 128) == pytest.approx((0.4146, 0.5854), abs=1e-4)
    assert evaluate.wilson_interval(128, 128)[1] == pytest.approx(1.0) and evaluate.wilson_interval(0, 0) == (0.0, 1.0)


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
    ray = pytest.importorskip('ray')
    arguments = dict(solver='ppo', checkpoint=str(policy_folder), randomize=True, config=IkerConfig())
    serial = evaluate.evaluate('push', EPISODES, **arguments)
    try:
        ray.init(num_cpus=2, include_dashboard=False)
    except Exception as error:  # whatever keeps a cluster from starting here
        pytest.skip(f'ray cannot start a local cluster here: {error}')
    try:
        remote = evaluate.evaluate('push', EPISODES, ray_address='local', **arguments)
    finally:
        ray.shutdown()
    assert (
        [r.seed for r in remote] == [r.seed for r in serial] == list(range(evaluate.EVAL_SEED, evaluate.EVAL_SEED + 4))
    )
    assert [(r.success, r.steps, r.episode_return, r.distance) for r in remote] == [
        (r.success, r.steps, r.episode_return, r.distance) for r in serial
    ]
