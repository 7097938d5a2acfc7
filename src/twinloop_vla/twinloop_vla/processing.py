"""Processing shared by the policies: image transforms and mean/std normalisation.

Images arrive as uint8 (..., H, W, 3) arrays (camera frames, dataset samples); `to_pixels` turns
them into what a patch encoder takes: resized to the model's square size, floats in [0, 1], then
standardised with the backbone's mean/std. Low-dimensional keys (state, action) are standardised
with statistics computed once from a dataset (`compute_stats`) and stored beside the weights
(stats.json), so a checkpoint carries its own normalisation. `relative_actions` expresses a chunk's
leading action dimensions as offsets from the current state (and `absolute_actions` undoes it);
`random_shift` is the training-time image augmentation (random translation, DrQ-style).
"""

import numpy as np
import torch
import torch.nn.functional as F

MIN_STD = 1e-6  # a feature constant over the dataset is centred, not blown up


def to_pixels(images, size, mean, std):
    """uint8 (..., H, W, 3) -> float (..., 3, size, size): resized (bilinear, antialiased), in [0, 1], standardised."""
    images = torch.as_tensor(np.asarray(images))
    if images.dtype != torch.uint8 or images.shape[-1] != 3:
        raise ValueError(f'images must be uint8 (..., H, W, 3), got {images.dtype} {tuple(images.shape)}')
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode='bilinear', antialias=True, align_corners=False)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.reshape(*lead, 3, size, size)


def compute_stats(samples, keys):
    """{key: {'mean': [...], 'std': [...]}} over an iterable of dicts (samples or batches; last axis: the feature)."""
    sums = {}
    for sample in samples:
        for key in keys:
            x = np.asarray(sample[key], dtype=np.float64)
            x = x.reshape(-1, x.shape[-1])
            n, s, s2 = sums.get(key, (0, 0.0, 0.0))
            sums[key] = (n + len(x), s + x.sum(0), s2 + (x * x).sum(0))
    missing = [key for key in keys if key not in sums]
    if missing:
        raise ValueError(f'no samples to compute statistics of {missing} from')
    stats = {}
    for key, (n, s, s2) in sums.items():
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
        stats[key] = {'mean': mean.tolist(), 'std': np.maximum(std, MIN_STD).tolist()}
    return stats


class Normalizer:
    """Standardises named features with given statistics; a key without statistics passes unchanged."""

    def __init__(self, stats, dims):
        """stats: {key: {'mean', 'std'}} (may be empty); dims: {key: feature size} to check them against."""
        self.stats = {k: {m: [float(x) for x in v[m]] for m in ('mean', 'std')} for k, v in (stats or {}).items()}
        unknown = sorted(set(self.stats) - set(dims))
        if unknown:
            raise ValueError(f'statistics for unknown keys {unknown}; expected some of {sorted(dims)}')
        self._mean, self._std = {}, {}
        for key, dim in dims.items():
            mean = self.stats.get(key, {}).get('mean', [0.0] * dim)
            std = self.stats.get(key, {}).get('std', [1.0] * dim)
            if len(mean) != dim or len(std) != dim:
                raise ValueError(f'statistics of {key!r} have {len(mean)} means and {len(std)} stds, expected {dim}')
            self._mean[key] = torch.tensor(mean, dtype=torch.float32)
            self._std[key] = torch.tensor(std, dtype=torch.float32)

    def normalize(self, key, x):
        """(x - mean) / std over the last axis."""
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        return (x - self._mean[key]) / self._std[key]

    def unnormalize(self, key, x):
        """x * std + mean over the last axis."""
        return x * self._std[key].to(x.device) + self._mean[key].to(x.device)


def relative_actions(action, state, dims):
    """action (..., C, A) with its first `dims` entries made offsets from state (..., S)'s first `dims`."""
    if not dims:
        return action
    out = torch.as_tensor(np.asarray(action), dtype=torch.float32).clone()
    out[..., :dims] -= torch.as_tensor(np.asarray(state), dtype=torch.float32)[..., None, :dims]
    return out


def absolute_actions(action, state, dims):
    """The inverse of relative_actions: add the state's first `dims` entries back."""
    if not dims:
        return action
    out = torch.as_tensor(action, dtype=torch.float32).clone()
    out[..., :dims] += torch.as_tensor(np.asarray(state), dtype=torch.float32).to(out.device)[..., None, :dims]
    return out


def random_shift(images, fraction, nearest=(), generator=None):
    """Translate every image of (N, C, H, W) by up to +-fraction of its size (edges repeated), and each
    tensor of `nearest` (N, K, H, W: depth, masks; zeros enter at the edges) by the same amounts."""
    n = len(images)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * fraction  # [-1, 1] spans the image
    grid = F.affine_grid(theta, list(images.shape), align_corners=False).to(images.device)
    shifted = F.grid_sample(images, grid, mode='bilinear', padding_mode='border', align_corners=False)
    others = [F.grid_sample(x.float(), grid, mode='nearest', align_corners=False).to(x.dtype) for x in nearest]
    return shifted, others
