"""The policy registry, config validation and checkpoints."""

import json

import numpy as np
import pytest
import torch
from vla_samples import HashEmbedder, observation, synthetic_batch, tiny_vga

from twinloop_core.engine import ConfigError
from twinloop_vla.policies import POLICIES, Policy, load_policy, make_policy, register_policy
from twinloop_vla.policies.configuration_external import ExternalConfig
from twinloop_vla.policies.configuration_vga import VGAConfig
from twinloop_vla.policies.processor_vga import compute_stats


def test_registered_policies_and_unknown_names():
    assert {'vga', 'external'} <= set(POLICIES)
    with pytest.raises(KeyError, match=r"unknown policy 'pi0'; registered policies: \[.*'external'.*'vga'"):
        make_policy('pi0')
    with pytest.raises(TypeError, match='not a Policy subclass'):
        register_policy('thing')(dict)
    with pytest.raises(ValueError, match='registered twice'):
        register_policy('vga')(type('Other', (Policy,), {'config_class': VGAConfig}))


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match=r'unknown keys \[.widht.\]'):
        VGAConfig.from_dict({'widht': 64})
    with pytest.raises(ConfigError, match='width must be int'):
        VGAConfig.from_dict({'width': '64'})
    with pytest.raises(ConfigError, match='use_pvm must be bool'):
        VGAConfig.from_dict({'use_pvm': 1})
    with pytest.raises(ConfigError, match='not a multiple of heads'):
        VGAConfig.from_dict({'width': 100, 'heads': 3})
    with pytest.raises(ConfigError, match='even'):
        VGAConfig.from_dict({'depth': 3})
    with pytest.raises(ConfigError, match=r"encoder 'vit' is not one of \['conv', 'dinov2_onnx', 'resnet'\]"):
        VGAConfig.from_dict({'encoder': 'vit'})
    with pytest.raises(ConfigError, match='takes a VGAConfig'):
        make_policy('vga', ExternalConfig())
    assert VGAConfig.from_dict({'mlp_ratio': 2}).mlp_ratio == 2.0  # int where a float is expected
    config = VGAConfig.small(num_views=3)
    assert VGAConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert (config.image_size, config.width, config.depth, config.num_views) == (112, 192, 4, 3)


def test_large_preset_shape():
    config = VGAConfig.large(encoder='conv')  # the encoder does not change the rest
    with torch.device('meta'):
        policy = make_policy('vga', config, embedder=HashEmbedder())
    backbone = sum(p.numel() for p in policy.backbone.parameters())
    assert (config.image_size, config.width, config.depth) == (224, 1024, 24)
    assert 300e6 < backbone < 305e6  # 24 VGGT-1B-shaped blocks


def test_save_and_load_restore_the_same_chunks(tmp_path):
    batch = synthetic_batch()
    policy = tiny_vga(stats=compute_stats([batch]))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    for _ in range(2):  # move the weights off their initial values
        optimizer.zero_grad()
        policy(batch)['loss'].backward()
        optimizer.step()
    before = policy.select_action_chunk(observation(batch))
    policy.save(tmp_path / 'ckpt')
    assert sorted(p.name for p in (tmp_path / 'ckpt').iterdir()) == ['config.json', 'model.safetensors', 'stats.json']
    assert json.loads((tmp_path / 'ckpt' / 'config.json').read_text())['type'] == 'vga'
    restored = load_policy(tmp_path / 'ckpt', embedder=HashEmbedder())
    after = restored.select_action_chunk(observation(batch))
    assert before.shape == (8, 8) and before.dtype == np.float32
    np.testing.assert_array_equal(before, after)
    assert restored.config == policy.config and restored.stats == policy.stats


def test_load_policy_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing \['config.json', 'model.safetensors', 'stats.json'\]"):
        load_policy(tmp_path)


def test_statistics_normalise_and_travel_with_the_policy():
    batches = [synthetic_batch(seed) for seed in range(3)]
    stats = compute_stats(batches)
    actions = np.concatenate([b['action'].reshape(-1, 8) for b in batches])
    np.testing.assert_allclose(stats['action']['mean'], actions.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats['action']['std'], actions.std(0), atol=1e-6)
    policy = tiny_vga(stats=stats)
    inputs = policy.processor(batches[0])
    assert inputs['pixels'].shape == (4, 2, 3, 28, 28)
    assert inputs['depth'].shape == (4, 2, 28, 28) and not inputs['depth_valid'][:, :, 0, 0].any()
    normalized = inputs['action']
    restored = policy.processor.actions(normalized, batches[0]['state'])
    np.testing.assert_allclose(restored, batches[0]['action'], atol=1e-5)
    with pytest.raises(ValueError, match="statistics of 'state' have 3 means"):
        tiny_vga(stats={'state': {'mean': [0.0] * 3, 'std': [1.0] * 3}})
    with pytest.raises(ValueError, match=r'images must be \(B, 2, H, W, 3\)'):
        policy.processor({**batches[0], 'images': batches[0]['images'][:, :1]})
