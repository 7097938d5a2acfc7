"""VGA: joint training overfits, decoupled inference, the ablation switches, VGGT weight loading."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from vla_samples import HashEmbedder, observation, synthetic_batch, tiny_vga

from twinloop_vla.policies import load_policy
from twinloop_vla.policies.modeling_vga import group_mask
from twinloop_vla.policies.processor_vga import compute_stats


def test_tiny_vga_overfits_four_samples():
    batch = synthetic_batch(seed=1)
    policy = tiny_vga(stats=compute_stats([batch]))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        losses = policy(batch)
        optimizer.zero_grad()
        losses['loss'].backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
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
