"""Training: a tiny VGA learns on recorded demonstrations, validation holds out whole episodes,
an interrupted run resumed from its checkpoint ends exactly where an uninterrupted one does, the
saved policy reloads to the same actions, and decoded frames and frozen-encoder features are cached per
dataset."""

import json

import numpy as np
import pytest
import torch
from vla_samples import TINY, HashEmbedder

from twinloop_data.world_sim_expert import TASKS
from twinloop_vla.datasets import ChunkDataset, collate, split_episodes
from twinloop_vla.encoders import make_encoder
from twinloop_vla.policies import load_policy, make_policy
from twinloop_vla.processing import to_pixels
from twinloop_vla.train import TrainSettings, train

SETTINGS = dict(batch_size=8, lr=3e-3, warmup=3, val_fraction=0.25, log_every=1, save_every=100, cache_features=False)


def run(demos, out, **settings):
    return train(
        demos,
        out,
        overrides=TINY,
        settings=TrainSettings(**{**SETTINGS, **settings}),
        policy_kwargs={'embedder': HashEmbedder()},
        progress=False,
    )


def test_samples_are_chunks_within_one_episode_and_validation_holds_out_episodes(demos):
    train_eps, val_eps = split_episodes(4, 0.25, seed=0)
    assert len(val_eps) == 1 and sorted(train_eps + val_eps) == [0, 1, 2, 3]
    data = ChunkDataset(demos, chunk_size=8, episodes=val_eps)
    assert len(data) == 10 and set(data.episode_of[data.indices]) == set(val_eps)
    rows = data.indices
    first, last = data[0], data[len(data) - 1]
    np.testing.assert_array_equal(first['action'], data.actions[rows[:8]])
    np.testing.assert_array_equal(last['action'], np.repeat(data.actions[rows[-1:]], 8, axis=0))
    assert first['images'].shape == (2, 42, 56, 3) and first['depth'].shape == (2, 42, 56)
    assert first['camera'].shape == (2, 9) and first['instruction'] in TASKS
    assert 0.2 < np.median(first['depth']) < 3.0  # metres


def test_loss_falls_and_the_checkpoint_reloads_to_the_same_actions(demos, tmp_path):
    result = run(demos, tmp_path / 'run', steps=30, val_every=10)
    train_losses = [h['loss'] for h in result.history if h['split'] == 'train']
    assert len(train_losses) == 30 and np.mean(train_losses[-3:]) < 0.7 * np.mean(train_losses[:3])
    assert [h['step'] for h in result.history if h['split'] == 'val'] == [10, 20, 30]
    report = json.loads((tmp_path / 'run' / 'report.json').read_text())
    assert report['dataset']['frames'] == 40 and report['steps'] == 30 and len(report['val_episodes']) == 1
    assert (tmp_path / 'run' / 'loss_curves.png').stat().st_size > 1000
    sample = ChunkDataset(demos, chunk_size=8)[5]
    observation = {k: sample[k] for k in ('images', 'state', 'instruction')}
    reloaded = load_policy(tmp_path / 'run' / 'policy', embedder=HashEmbedder())
    np.testing.assert_array_equal(
        reloaded.select_action_chunk(observation), result.policy.select_action_chunk(observation)
    )


def test_resumed_run_ends_where_an_uninterrupted_one_does(demos, tmp_path):
    straight = run(demos, tmp_path / 'a', steps=8, val_every=4)
    first = run(demos, tmp_path / 'b', steps=8, val_every=4, stop_at=5)  # 3 batches an epoch: stops mid-epoch
    assert first.history[-1]['step'] == 5
    assert json.loads((tmp_path / 'b' / 'checkpoints' / 'step_000005' / 'trainer.json').read_text()) == {'step': 5}
    with pytest.raises(FileExistsError):
        run(demos, tmp_path / 'b', steps=8)
    resumed = train(
        demos,
        tmp_path / 'b',
        settings=TrainSettings(**SETTINGS, steps=8, val_every=4),
        resume=True,
        policy_kwargs={'embedder': HashEmbedder()},
        progress=False,
    )
    assert [h['step'] for h in resumed.history if h['split'] == 'train'] == list(range(1, 9))
    a, b = straight.policy.state_dict(), resumed.policy.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_decoded_frames_are_cached_once_per_dataset_and_training_on_them_is_unchanged(demos, tmp_path):
    plain, cached = ChunkDataset(demos, chunk_size=8), ChunkDataset(demos, chunk_size=8, episodes=[2, 3])
    path = cached.use_decoded_frames(tmp_path / 'cache', batch_size=16, progress=False)
    assert sorted(p.name for p in path.iterdir()) == ['camera.npy', 'depth.npy', 'gaze.npy', 'images.npy']
    for i in (0, 7, 19):
        expected, got = plain[int(np.flatnonzero(plain.indices == cached.indices[i])[0])], cached[i]
        assert sorted(got) == sorted(expected)
        for key in ('images', 'camera', 'depth', 'gaze', 'state', 'action'):
            assert got[key].dtype == expected[key].dtype
            np.testing.assert_array_equal(got[key], expected[key])
    stamp = path.stat().st_mtime_ns
    assert ChunkDataset(demos, chunk_size=8).use_decoded_frames(tmp_path / 'cache', progress=False) == path
    assert path.stat().st_mtime_ns == stamp and len(list((tmp_path / 'cache').iterdir())) == 1

    runs = [
        run(demos, tmp_path / name, steps=4, val_every=2, cache_features=on, cache_dir=str(tmp_path / 'cache'))
        for name, on in (('decoding', False), ('cached', True))
    ]
    assert runs[1].report['frame_cache'] == str(path) and runs[0].report['frame_cache'] is None
    losses = [[h['loss'] for h in r.history] for r in runs]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def test_frozen_encoder_tokens_are_cached_once_per_dataset_and_replace_the_images(demos, tmp_path):
    encoder = make_encoder('conv', 28, 14, 32).requires_grad_(False)
    data = ChunkDataset(demos, chunk_size=8)
    path = data.use_cached_features(encoder, tmp_path, progress=False)
    stamp = path.stat().st_mtime_ns
    again = ChunkDataset(demos, chunk_size=8, episodes=[1])
    assert again.use_cached_features(encoder, tmp_path, progress=False) == path
    assert path.stat().st_mtime_ns == stamp and len(list(tmp_path.iterdir())) == 1
    other = make_encoder('conv', 28, 14, 32).requires_grad_(False)  # other weights: another key, another file
    assert data.use_cached_features(other, tmp_path, progress=False) != path

    plain, cached = ChunkDataset(demos, chunk_size=8), ChunkDataset(demos, chunk_size=8)
    cached.use_cached_features(encoder, tmp_path, progress=False)
    images = collate([plain[i] for i in (0, 17, 33)])
    tokens = collate([cached[i] for i in (0, 17, 33)])
    assert 'images' not in tokens
    expected = encoder(to_pixels(images['images'], 28, encoder.mean, encoder.std).flatten(0, 1))
    np.testing.assert_allclose(tokens['patch_tokens'].reshape(expected.shape), expected.numpy(), atol=2e-2)

    policy = make_policy('vga', TINY, embedder=HashEmbedder())
    policy.encoder.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        from_images = policy(images)['loss']
        from_tokens = policy(tokens)['loss']
    assert abs(from_images.item() - from_tokens.item()) < 1e-2 * abs(from_images.item())


def test_an_interrupted_feature_cache_continues_where_it_stopped(demos, tmp_path):
    encoder = make_encoder('conv', 28, 14, 32).requires_grad_(False)
    calls = []

    def fail_on_second_batch(*_):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    hook = encoder.register_forward_hook(fail_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        ChunkDataset(demos, chunk_size=8).use_cached_features(encoder, tmp_path / 'a', batch_size=16, progress=False)
    hook.remove()
    calls.clear()
    encoder.register_forward_hook(lambda *_: calls.append(1))
    resumed = ChunkDataset(demos, chunk_size=8)
    resumed.use_cached_features(encoder, tmp_path / 'a', batch_size=16, progress=False)
    assert len(calls) == 2  # 40 frames in batches of 16: the first batch was kept
    fresh = ChunkDataset(demos, chunk_size=8)
    fresh.use_cached_features(encoder, tmp_path / 'b', batch_size=16, progress=False)
    np.testing.assert_array_equal(resumed.patch_tokens, fresh.patch_tokens)
    assert sorted(p.name.split('-', 1)[0] for p in (tmp_path / 'a').iterdir()) == ['demos']
