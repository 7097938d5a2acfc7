"""VGA: joint training overfits, decoupled inference, the ablation switches, VGGT weight loading."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from vla_samples import HashEmbedder, observation, synthetic_batch, tiny_vga

from twinloop_vla.policies import load_policy
from twinloop_vla.policies.modeling_vga import group_mask
from twinloop_vla.policies.processor_vga import compute_stats


def _fit(policy, batch, steps=40):
    """AdamW steps on one batch: every step's losses."""
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    history = []
    for _ in range(steps):
        losses = policy(batch)
        optimizer.zero_grad()
        losses['loss'].backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    return history


def test_tiny_vga_overfits_four_samples():
    batch = synthetic_batch(seed=1)
    policy = tiny_vga(stats=compute_stats([batch]))
    history = _fit(policy, batch)
    assert set(history[0]) == {'loss', 'action', 'camera', 'depth'}
    assert all(np.isfinite(list(h.values())).all() for h in history)
    assert history[-1]['action'] < 0.5 * history[0]['action'], (history[0], history[-1])
    assert history[-1]['camera'] < history[0]['camera']


def test_decoupled_inference_skips_the_auxiliary_heads():
    policy = tiny_vga()
    calls = {'camera_head': 0, 'depth_head': 0}
    for name in calls:
        getattr(policy, name).register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    batch = synthetic_batch()
    chunk = policy.select_action_chunk(observation(batch))
    assert chunk.shape == (8, 8) and calls == {'camera_head': 0, 'depth_head': 0}
    policy(batch)
    assert calls == {'camera_head': 1, 'depth_head': 1}
    losses = policy({k: v for k, v in batch.items() if k not in ('camera', 'depth')})  # action-only data
    assert set(losses) == {'loss', 'action'} and calls == {'camera_head': 1, 'depth_head': 1}


def _names(policy):
    return {name for name, _ in policy.named_parameters()}


def test_switches_change_the_parameter_set():
    full = _names(tiny_vga())
    assert any('.pvm_a.' in n for n in full) and any('.pvm_b.' in n for n in full)
    assert any(n.startswith('camera_head.') for n in full) and any(n.startswith('depth_head.') for n in full)

    plain = _names(tiny_vga(use_pvm=False))
    assert not any('pvm' in n for n in plain) and any('.cross_attn.' in n for n in plain)
    assert {n for n in full if not n.startswith('action_head.')} == {
        n for n in plain if not n.startswith('action_head.')
    }

    no_camera = _names(tiny_vga(use_camera_head=False))
    assert no_camera == {n for n in full if not n.startswith('camera_head.')}
    no_depth = _names(tiny_vga(use_depth_head=False))
    assert no_depth == {n for n in full if not n.startswith('depth_head.')}

    policy = tiny_vga(use_pvm=False, use_camera_head=False, use_depth_head=False)
    batch = synthetic_batch()
    assert set(policy(batch)) == {'loss', 'action'}  # targets present, heads off: action loss only
    assert policy.select_action_chunk(observation(batch)).shape == (8, 8)


def test_frame_attention_keeps_modalities_apart():
    mask = group_mask([1, 1, 3])
    assert mask.shape == (5, 5) and mask[2:, 2:].all()
    assert not mask[0, 1] and not mask[1, 2] and mask.sum() == 1 + 1 + 9


def _as_vggt(policy):
    """The policy's backbone and camera queries under VGGT-1B's key names."""
    state = {}
    for key, value in policy.backbone.state_dict().items():
        _, index, rest = key.split('.', 2)
        kind = 'frame' if int(index) % 2 == 0 else 'global'
        state[f'aggregator.{kind}_blocks.{int(index) // 2}.{rest}'] = value.clone()
    width = policy.config.width
    state['aggregator.camera_token'] = torch.randn(1, 2, 1, width)
    state['aggregator.register_token'] = torch.randn(1, 2, 4, width)
    state['aggregator.patch_embed.cls_token'] = torch.zeros(1, 1, width)  # present in VGGT, not used
    return state


def test_vggt_weights_load_into_the_backbone(tmp_path):
    source = tiny_vga()
    state = _as_vggt(source)
    save_file(state, tmp_path / 'model.safetensors')
    policy = tiny_vga(vggt_weights=str(tmp_path), camera_tokens=3)
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(policy.backbone.state_dict()[key], value, rtol=0, atol=0)
    torch.testing.assert_close(policy.camera_queries[0, 0], state['aggregator.camera_token'][0, 0, 0])
    torch.testing.assert_close(policy.camera_queries[1, 1:], state['aggregator.register_token'][0, 1, :2])

    with pytest.raises(FileNotFoundError, match='no model.safetensors or model.pt there'):
        tiny_vga(vggt_weights=str(tmp_path / 'absent'))
    with pytest.raises(ValueError, match=r'does not fit VGA width 64, depth 2: missing \[\] \(0 keys\), wrong shapes'):
        tiny_vga(vggt_weights=str(tmp_path), width=64, heads=4)
    with pytest.raises(ValueError, match=r"missing \['aggregator.frame_blocks.1.norm1.weight'"):
        tiny_vga(vggt_weights=str(tmp_path), depth=4)


def test_checkpoints_do_not_reload_vggt(tmp_path):
    (tmp_path / 'vggt').mkdir()
    save_file(_as_vggt(tiny_vga()), tmp_path / 'vggt' / 'model.safetensors')
    tiny_vga(vggt_weights=str(tmp_path / 'vggt')).save(tmp_path / 'ckpt')
    (tmp_path / 'vggt' / 'model.safetensors').unlink()
    restored = load_policy(tmp_path / 'ckpt', embedder=HashEmbedder())  # the weights come from the checkpoint
    assert restored.config.vggt_weights == str(tmp_path / 'vggt')


def test_relative_actions_are_offsets_from_the_state_and_come_back_absolute():
    batch = synthetic_batch(seed=2)
    stats = compute_stats([batch], relative_action_dims=7)
    offsets = batch['action'][..., :7] - batch['state'][:, None, :7]
    np.testing.assert_allclose(stats['action']['mean'][:7], offsets.reshape(-1, 7).mean(0), atol=1e-5)
    np.testing.assert_allclose(stats['action']['mean'][7], batch['action'][..., 7].mean(), atol=1e-5)
    policy = tiny_vga(stats=stats, relative_action_dims=7)
    normalized = policy.processor(batch)['action']
    np.testing.assert_allclose(policy.processor.actions(normalized, batch['state']), batch['action'], atol=1e-5)
    # the same prediction from a state moved by d lands d further in the joints, not in the gripper
    obs = observation(batch)
    moved = {**obs, 'state': obs['state'] + np.r_[np.full(7, 0.1), 0.0].astype(np.float32)}
    with torch.no_grad():
        policy.state_proj.fc2.weight.zero_()  # the prediction itself ignores the state
    chunk, chunk_moved = policy.select_action_chunk(obs), policy.select_action_chunk(moved)
    np.testing.assert_allclose(chunk_moved[:, :7] - chunk[:, :7], 0.1, atol=1e-5)
    np.testing.assert_allclose(chunk_moved[:, 7], chunk[:, 7], atol=1e-6)
    with pytest.raises(Exception, match='relative_action_dims 9 must be in 0..min'):
        tiny_vga(relative_action_dims=9)


def test_a_policy_reads_the_leading_entries_of_a_longer_state():
    batch = synthetic_batch(seed=3)
    policy = tiny_vga().eval()
    obs = observation(batch)
    longer = {**obs, 'state': np.append(obs['state'], np.full(7, 5.0, np.float32))}  # appended velocities
    np.testing.assert_allclose(policy.select_action_chunk(longer), policy.select_action_chunk(obs), atol=1e-6)
    shorter = {**obs, 'state': obs['state'][:-1]}
    with pytest.raises(ValueError, match='needs a state of'):
        policy.select_action_chunk(shorter)


def test_random_shift_moves_views_and_depth_together_in_training_only():
    from twinloop_vla.processing import random_shift

    image = torch.zeros(3, 1, 20, 20)
    image[:, :, 10, 10] = 1.0
    depth = image.clone() * 2.0
    generator = torch.Generator().manual_seed(0)
    shifted, (shifted_depth,) = random_shift(image, 0.2, [depth], generator=generator)
    for i in range(3):
        peak = np.unravel_index(int(shifted[i, 0].argmax()), (20, 20))
        assert peak != (10, 10) and max(abs(peak[0] - 10), abs(peak[1] - 10)) <= 4
        assert np.unravel_index(int(shifted_depth[i, 0].argmax()), (20, 20)) == peak
    unchanged, _ = random_shift(image, 0.0)
    torch.testing.assert_close(unchanged, image)

    batch = synthetic_batch(seed=3)
    policy = tiny_vga(stats=compute_stats([batch]), augment_shift=0.1)
    seen = []
    policy.encoder.register_forward_hook(lambda _m, args, _o: seen.append(args[0].clone()))
    policy.train()
    policy(batch)
    policy(batch)
    assert not torch.allclose(seen[0], seen[1])  # a fresh shift per step
    policy.eval()
    policy(batch)
    policy(batch)
    torch.testing.assert_close(seen[2], seen[3])  # none in evaluation


def _object_batch(seed, size=8, pixels=28):
    """Grey noise views with a red square in a random quadrant of each; the gaze masks mark the squares."""
    rng = np.random.default_rng(seed)
    batch = synthetic_batch(seed, size=size, pixels=pixels)
    images = rng.integers(90, 140, (size, 2, pixels, pixels, 3), dtype=np.uint8)
    gaze = np.zeros((size, 2, pixels, pixels), np.float32)
    half = pixels // 2
    for b in range(size):
        for v in range(2):
            row, col = rng.integers(0, 2, 2) * half
            images[b, v, row : row + half, col : col + half] = (220, 30, 30)
            gaze[b, v, row : row + half, col : col + half] = 1.0
    gaze[0, 1] = 0.0  # a view that does not see the object: no gaze target there
    return {**batch, 'images': images, 'gaze': gaze}


def test_gaze_head_learns_where_the_object_is_and_is_off_by_default():
    assert not any(n.startswith('gaze_head.') for n in _names(tiny_vga()))
    assert set(tiny_vga()(_object_batch(0))) == {'loss', 'action', 'camera', 'depth'}  # off: gaze targets unused
    batch = _object_batch(0)
    policy = tiny_vga(stats=compute_stats([batch]), use_gaze_head=True, augment_shift=0.0)
    history = _fit(policy, batch)
    assert {'gaze', 'gaze_inside'} <= set(history[0])
    assert history[0]['gaze_inside'] < 0.5  # about a quarter: the gaze spreads over the 4 patches
    assert history[-1]['gaze'] < 0.5 * history[0]['gaze'], (history[0], history[-1])
    policy.eval()
    held_out = _object_batch(1)
    with torch.no_grad():  # held-out views: the gaze lands on the square, its point near the square's centre
        assert policy(held_out)['gaze_inside'].item() > 0.8
    weights, points = policy.gaze(held_out)
    assert weights.shape == (8, 2, 4) and torch.allclose(weights.sum(-1), torch.ones(8, 2))
    masks = torch.as_tensor(held_out['gaze'])
    rows, cols = (masks.sum(axis) > 0 for axis in (-1, -2))
    centres = torch.stack([cols.float().argmax(-1), rows.float().argmax(-1)], -1) / 28 + 0.25  # the quadrant's
    seen = masks.sum((-2, -1)) > 0
    error = (points - centres).abs().sum(-1)[seen]
    assert error.mean() < 0.1, error  # uniform guessing: about 0.5
