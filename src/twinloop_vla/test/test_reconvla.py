"""ReconVLA (twinloop_vla.policies.modeling_reconvla) and its tokenizer (twinloop_vla.vae): gaze crops cut
the masked object, action bins round-trip, a tiny ReconVLA learns recorded demonstrations through the
training command with both action heads and reloads to the same actions, the ablation switches change
what is trained, the VAE learns to reconstruct the crops and loads into a policy, and the two-stage pipeline
fine-tunes from its pretraining and resumes where it stopped."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from vla_samples import TINY_RECONVLA, HashEmbedder

from twinloop_vla.datasets import ChunkDataset, collate
from twinloop_vla.eval import gaze_overlay
from twinloop_vla.policies import load_policy, make_policy
from twinloop_vla.policies.modeling_reconvla import attention_inside
from twinloop_vla.pipeline import run_pipeline
from twinloop_vla.policies.processor_reconvla import from_bins, gaze_crops, to_bins
from twinloop_vla.train import TrainSettings, train
from twinloop_vla.vae import SmallVAE, VAEConfig, crops_of_dataset, psnr, train_vae

SETTINGS = dict(batch_size=8, lr=3e-3, warmup=3, val_fraction=0.25, log_every=1, save_every=100, cache_features=False)


def test_gaze_crops_cut_the_masked_object_and_fall_back_to_the_whole_view():
    pixels = torch.zeros(2, 3, 40, 40)
    pixels[:, 0, 10:18, 24:32] = 1.0  # a red square
    masks = torch.zeros(2, 40, 40)
    masks[0, 10:18, 24:32] = 1.0  # the first view sees the object, the second does not
    crops = gaze_crops(pixels, masks, 16, margin=0.25)
    assert crops.shape == (2, 3, 16, 16)
    # the square fills the middle of its crop (8 px grown by 2 x 25 % to 12 px, so 2/3 of the crop)
    assert crops[0, 0, 4:12, 4:12].min() > 0.9 and crops[0, 0, 0, 0] < 0.1
    assert 0.03 < crops[1, 0].mean() < 0.05  # the whole view: 64 of 1600 px red (4 %), resampled


def test_action_bins_round_trip_within_half_a_bin():
    values = torch.linspace(-2.9, 2.9, 101)
    indices = to_bins(values, 256, 3.0)
    assert indices.min() >= 0 and indices.max() <= 255
    assert (from_bins(indices, 256, 3.0) - values).abs().max() <= 3.0 / 256 + 1e-6
    assert to_bins(torch.tensor([-10.0, 10.0]), 256, 3.0).tolist() == [0, 255]  # clipped to the end bins


@pytest.mark.parametrize('head', ['discrete', 'continuous'])
def test_reconvla_learns_demonstrations_and_reloads_to_the_same_actions(demos, tmp_path, head):
    result = train(
        demos,
        tmp_path / 'run',
        policy='reconvla',
        overrides={**TINY_RECONVLA, 'action_head': head},
        settings=TrainSettings(**SETTINGS, steps=30, val_every=15),
        policy_kwargs={'embedder': HashEmbedder()},
        progress=False,
    )
    history = [h for h in result.history if h['split'] == 'train']
    first, last = (np.mean([h[k] for h in history[s]]) for k, s in [('loss', slice(0, 3)), ('loss', slice(-3, None))])
    assert last < 0.7 * first, (first, last)
    assert all({'action', 'action_l1', 'recon', 'attention_inside'} <= set(h) for h in history)
    val = [h for h in result.history if h['split'] == 'val']
    assert [h['step'] for h in val] == [15, 30] and 0 <= val[-1]['attention_inside'] <= 1
    sample = ChunkDataset(demos, chunk_size=8)[5]
    observation = {k: sample[k] for k in ('images', 'state', 'instruction')}
    reloaded = load_policy(tmp_path / 'run' / 'policy', embedder=HashEmbedder())
    chunk = result.policy.select_action_chunk(observation)
    assert chunk.shape == (8, 8) and np.all(np.isfinite(chunk))
    np.testing.assert_array_equal(reloaded.select_action_chunk(observation), chunk)


def test_the_ablation_switches_change_what_is_trained(demos):
    batch = collate([ChunkDataset(demos, chunk_size=8)[i] for i in (0, 12, 25)])
    baseline = make_policy('reconvla', {**TINY_RECONVLA, 'use_reconstruction': False}, embedder=HashEmbedder())
    out = baseline(batch)
    assert 'recon' not in out and baseline.vae is None and baseline.denoiser is None
    assert 0 < float(out['attention_inside']) <= 1
    whole = make_policy('reconvla', {**TINY_RECONVLA, 'reconstruct': 'image'}, embedder=HashEmbedder())
    without_masks = {k: v for k, v in batch.items() if k != 'gaze'}
    assert 'recon' in whole(without_masks) and 'recon' not in make_policy(
        'reconvla', TINY_RECONVLA, embedder=HashEmbedder()
    )(without_masks)  # the gaze region needs gaze masks
    assert not any(p.requires_grad for p in whole.vae.parameters())  # the tokenizer stays frozen
    weights = whole.attention(batch)
    assert weights.shape == (3, 2, 4) and torch.all(weights.sum(-1) <= 1 + 1e-6)
    own = whole.attention({k: v for k, v in batch.items() if k != 'action'})  # with its own decoded actions
    assert own.shape == (3, 2, 4) and torch.all(own > 0)
    drawn = gaze_overlay(batch['images'][0, 0], own[0, 0].numpy())
    assert drawn.shape == batch['images'][0, 0].shape
    everywhere = torch.ones(3, 2, 28, 28)
    assert float(attention_inside(weights, everywhere, 14)) == pytest.approx(1.0)


def test_cached_greedy_decoding_is_what_the_full_causal_pass_predicts(demos):
    torch.manual_seed(0)
    policy = make_policy('reconvla', {**TINY_RECONVLA, 'layer_scale': 1.0}, embedder=HashEmbedder()).eval()
    batch = collate([ChunkDataset(demos, chunk_size=8)[i] for i in (3, 30)])
    with torch.no_grad():
        prefix = policy._prefix(policy.processor({k: v for k, v in batch.items() if k != 'action'}))
        ids = policy._decode(prefix)  # one token at a time against the cached keys and values
        hidden, _ = policy._run(torch.cat([prefix, policy._action_tokens(ids[:, :-1], len(ids))], dim=1))
        full = policy.action_out(hidden[:, prefix.shape[1] :]).argmax(-1)  # every token from all before it
    assert ids.shape == (2, 64) and len(set(ids.flatten().tolist())) > 4  # not a constant decode
    assert torch.equal(ids, full)


def test_a_diffusers_autoencoder_folder_is_the_frozen_tokenizer_and_stays_out_of_checkpoints(demos, tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    kl = AutoencoderKL(  # Stable Diffusion's VAE in miniature: 2x downsampling here, 4 latent channels
        block_out_channels=(8, 16),
        down_block_types=('DownEncoderBlock2D',) * 2,
        up_block_types=('UpDecoderBlock2D',) * 2,
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=16,
        scaling_factor=0.5,
    )
    kl.save_pretrained(tmp_path / 'sd_vae')
    config = {**TINY_RECONVLA, 'vae_weights': str(tmp_path / 'sd_vae')}
    policy = make_policy('reconvla', config, embedder=HashEmbedder())
    assert policy.vae.grid == 8 and policy.denoiser.positions.shape == (64, 32)  # 16 px crops -> 8 x 8 latents
    crops = torch.rand(2, 3, 16, 16) * 2 - 1
    expected = kl.encode(crops).latent_dist.mean * 0.5
    torch.testing.assert_close(policy.vae.latents(crops), expected)
    batch = collate([ChunkDataset(demos, chunk_size=8)[i] for i in (0, 12)])
    assert torch.isfinite(policy(batch)['recon'])
    policy.save(tmp_path / 'policy')
    assert not any(k.startswith('vae.') for k in load_file(tmp_path / 'policy' / 'model.safetensors'))
    reloaded = load_policy(tmp_path / 'policy', embedder=HashEmbedder())
    torch.testing.assert_close(reloaded.vae.latents(crops), expected)
    with pytest.raises(ValueError, match='set vae_channels to it'):
        make_policy('reconvla', {**config, 'vae_channels': 16}, embedder=HashEmbedder())


def test_the_vae_learns_the_crops_and_loads_into_a_policy(demos, tmp_path):
    crops = crops_of_dataset(demos, 16, [0, 1, 2], margin=0.25)
    held_out = crops_of_dataset(demos, 16, [3], margin=0.25)
    assert crops.shape == (2 * 2 * 30, 3, 16, 16) and crops.min() >= -1 and crops.max() <= 1
    config = VAEConfig(size=16, channels=4, hidden=8)
    untrained = psnr(SmallVAE(config), held_out)
    vae, history = train_vae(crops, config, steps=200, batch_size=32, held_out=held_out, progress=False)
    assert history[-1]['held_out_psnr'] > untrained + 5, (untrained, history[-1])
    latents = vae.latents(held_out)
    assert 0.5 < float(latents.std()) < 2.0  # scaled to about unit spread
    vae.save(tmp_path / 'vae')
    policy = make_policy('reconvla', {**TINY_RECONVLA, 'vae_weights': str(tmp_path / 'vae')}, embedder=HashEmbedder())
    torch.testing.assert_close(policy.vae.latents(held_out), latents)
    with pytest.raises(ValueError, match='do not match'):
        make_policy('reconvla', {**TINY_RECONVLA, 'vae_weights': str(tmp_path / 'vae'), 'gaze_size': 32})


def test_the_pipeline_pretrains_then_fine_tunes_from_the_pretrained_weights_and_resumes(demos, tmp_path):
    settings = TrainSettings(**SETTINGS, steps=1, val_every=100)
    kwargs = {'policy_kwargs': {'embedder': HashEmbedder()}, 'progress': False}
    args = (demos, demos, tmp_path / 'out', 'reconvla', 'default', TINY_RECONVLA)
    stopped = run_pipeline(*args, 20, 10, TrainSettings(**{**settings.__dict__, 'stop_at': 12}), **kwargs)
    assert stopped['pretrain'].report['steps'] == 12 and 'finetune' not in stopped  # fine-tuning waits for it
    results = run_pipeline(*args, 20, 10, settings, **kwargs)  # run again: pretraining resumes at 12
    pretrain, finetune = results['pretrain'], results['finetune']
    assert pretrain.report['steps'] == 20 and finetune.report['steps'] == 10
    losses = {k: [h['loss'] for h in r.history if h['split'] == 'train'] for k, r in results.items()}
    assert [h['step'] for h in pretrain.history if h['split'] == 'train'] == list(range(1, 21))
    # fine-tuning starts from the pretrained weights: well below where the pretraining started
    assert np.mean(losses['finetune'][:3]) < 0.8 * np.mean(losses['pretrain'][:3]), losses
    assert run_pipeline(*args, 20, 10, settings, **kwargs) == {'pretrain': None, 'finetune': None}  # both done
    reloaded = load_policy(tmp_path / 'out' / 'finetune' / 'policy', embedder=HashEmbedder())
    sample = ChunkDataset(demos, chunk_size=8)[3]
    observation = {k: sample[k] for k in ('images', 'state', 'instruction')}
    np.testing.assert_array_equal(
        reloaded.select_action_chunk(observation), finetune.policy.select_action_chunk(observation)
    )
