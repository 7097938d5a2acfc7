"""Shared test helpers: tiny VGA and ReconVLA configs, a synthetic batch, a stand-in instruction embedder."""

import numpy as np

from twinloop_vla.policies import make_policy

TINY_SHAPES = {  # what VGA and ReconVLA share: 2 views of 28 px, conv encoder, width 32, depth 2
    'image_size': 28,
    'patch_size': 14,
    'encoder': 'conv',
    'encoder_dim': 32,
    'width': 32,
    'depth': 2,
    'heads': 2,
}
TINY = {**TINY_SHAPES, 'camera_head_depth': 1, 'depth_head_dim': 16}
TINY_RECONVLA = {
    **TINY_SHAPES,
    'action_bins': 32,
    'gaze_size': 16,
    'vae_hidden': 8,
    'denoiser_width': 32,
    'denoiser_depth': 1,
    'denoiser_heads': 2,
}


class HashEmbedder:
    """Stands in for the sentence model (whose import alone takes ~10 s): a fixed vector per instruction."""

    dim = 384

    def __init__(self):
        self.calls = 0

    def embed(self, instruction):
        self.calls += 1
        seed = sum(instruction.encode())
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)


def synthetic_batch(seed=0, size=4, views=2, pixels=32):
    """Random views and states; each chunk ramps from 1/8 to 1 of the sample's state (a reachable target);
    identity cameras with random translation and focal; depth in 0.3-1.5 m with a hole."""
    rng = np.random.default_rng(seed)
    state = rng.standard_normal((size, 8)).astype(np.float32)
    depth = rng.uniform(0.3, 1.5, (size, views, pixels, pixels)).astype(np.float32)
    depth[:, :, :4, :4] = 0.0
    return {
        'images': rng.integers(0, 256, (size, views, pixels, pixels, 3), dtype=np.uint8),
        'state': state,
        'instruction': ['pick up the red block', 'open the drawer'] * (size // 2),
        'action': np.linspace(0.125, 1.0, 8, dtype=np.float32)[None, :, None] * state[:, None, :],
        'camera': np.concatenate(
            [np.tile([1.0, 0.0, 0.0, 0.0], (size, views, 1)), rng.standard_normal((size, views, 5))], axis=-1
        ).astype(np.float32),
        'depth': depth,
    }


def observation(batch, index=0):
    """One observation of a synthetic batch, as select_action_chunk takes it."""
    return {
        'images': batch['images'][index],
        'state': batch['state'][index],
        'instruction': batch['instruction'][index],
    }


def tiny_vga(stats=None, **overrides):
    """A fresh tiny VGA (conv encoder, width 32, depth 2, 2 views of 28 px) with the stand-in embedder."""
    return make_policy('vga', {**TINY, **overrides}, stats=stats, embedder=HashEmbedder())
