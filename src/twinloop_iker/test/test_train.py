"""PPO training (train.py) at smoke size: a model with the paper's ELU MLPs learns a few hundred
steps, is saved and reloaded (evaluate.PpoPolicy) with identical actions; the command line trains
for a few seconds, writes policy, statistics, checkpoint, curve and report, and resumes."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from stable_baselines3.common.vec_env import VecNormalize

from twinloop_iker import train
from twinloop_iker.config import IkerConfig, PpoConfig
from twinloop_iker.evaluate import NORMALIZER_FILE, POLICY_FILE, PpoPolicy, make_env

CONFIG = Path(os.environ.get('TWINLOOP_ROOT', Path(__file__).resolve().parents[3])) / 'config' / 'iker.yaml'
SMALL = {'n_steps': 64, 'batch_size': 64, 'n_epochs': 2}


def test_ppo_trains_saves_and_reloads_with_identical_actions(tmp_path):
    config = IkerConfig(ppo=PpoConfig(**SMALL))
    normalizer = VecNormalize(train.make_vec_env('push', config, True, 1, seed=0))
    model = train.build_model(normalizer, config.ppo, seed=0)
    layers = [m for m in model.policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    assert [layer.out_features for layer in layers] == [256, 128, 64]
    assert any(isinstance(m, torch.nn.ELU) for m in model.policy.mlp_extractor.value_net)
    model.learn(total_timesteps=320)
    assert model.num_timesteps >= 320
    model.save(tmp_path / POLICY_FILE)
    normalizer.save(str(tmp_path / NORMALIZER_FILE))
    policy = PpoPolicy(tmp_path)
    env = make_env('push', config)
    for seed in range(3):
        observation, _ = env.reset(seed=seed)
        expected, _ = model.predict(normalizer.normalize_obs(observation), deterministic=True)
        assert np.array_equal(policy(observation), expected)
    normalizer.close()


def small_config(folder):
    """config/iker.yaml with a PPO small enough for seconds of training, written into folder."""
    data = yaml.safe_load(CONFIG.read_text())
    data['ppo'].update(SMALL)
    path = folder / 'iker.yaml'
    path.write_text(yaml.safe_dump(data))
    return path


def test_command_line_trains_reports_and_resumes(tmp_path):
    config = small_config(tmp_path)
    out = tmp_path / 'push'
    args = ['--skill', 'push', '--minutes', '0.05', '--envs', '1', '--out', str(out), '--config', str(config)]
    train.main([*args, '--eval-episodes', '2'])
    report = json.loads((out / 'report.json').read_text())
    assert report['steps'] > 0 and report['evaluation']['episodes'] == 2 and report['randomization']
    assert 0 <= report['evaluation']['wilson95'][0] <= report['evaluation']['wilson95'][1] <= 1
    assert (out / POLICY_FILE).is_file() and (out / NORMALIZER_FILE).is_file() and (out / 'curve.png').is_file()
    steps, _ = train.latest_checkpoint(out)
    assert steps == report['steps']
    assert json.loads((out / train.PROGRESS_FILE).read_text())['wall_s'] == pytest.approx(report['wall_s'])

    train.main([*args, '--resume', '--eval-episodes', '0'])
    resumed = json.loads((out / 'report.json').read_text())
    assert resumed['steps'] > report['steps'] and resumed['wall_s'] > report['wall_s']
    assert len(list((out / 'checkpoints').glob('step_*.zip'))) == 2  # keep_checkpoints

    tuned = tmp_path / 'push-shoe'
    train.main(
        [*args[:-4], '--config', str(config), '--init', str(out), '--finetune-minutes', '0.05']
        + ['--kinds', 'shoe', '--out', str(tuned), '--eval-episodes', '1']
    )
    report = json.loads((tuned / 'report.json').read_text())
    assert report['kinds'] == ['shoe'] and report['init'] == str(out) and 0 < report['steps'] < resumed['steps']
    env = make_env('push', IkerConfig())
    observation, _ = env.reset(seed=5)
    assert not np.array_equal(PpoPolicy(tuned)(observation), PpoPolicy(out)(observation))  # it learned on


def test_command_line_trains_with_ray_actors_as_rollout_workers(tmp_path):
    config = small_config(tmp_path)
    out = tmp_path / 'push'
    args = ['--skill', 'push', '--minutes', '0.05', '--envs', '2', '--out', str(out), '--config', str(config)]
    train.main([*args, '--ray', 'local', '--eval-episodes', '2'])
    report = json.loads((out / 'report.json').read_text())
    assert report['rollout_workers'] == '2 Ray actors at local' and report['envs'] == 2
    assert report['steps'] > 0 and report['steps'] % 2 == 0 and report['evaluation']['episodes'] == 2
    assert (out / POLICY_FILE).is_file() and (out / NORMALIZER_FILE).is_file() and (out / 'curve.png').is_file()
    steps, _ = train.latest_checkpoint(out)
    assert steps == report['steps']

    train.main([*args, '--ray', 'local', '--resume', '--eval-episodes', '0'])
    resumed = json.loads((out / 'report.json').read_text())
    assert resumed['steps'] > report['steps'] and resumed['rollout_workers'] == '2 Ray actors at local'
    import ray  # each run started the local cluster and shut it down

    assert not ray.is_initialized()
