"""ReconVLA's processor: VGA's (the same raw batches, statistics and image transforms), plus the action
bins of the discrete head and the gaze crops the reconstruction targets are cut from.

Action bins. OpenVLA discretises each action dimension into 256 uniform bins between its 1st and 99th
percentiles; here the actions are standardised first (the processor's statistics) and binned
uniformly over [-bin_bound, bin_bound] standard deviations, values beyond clipped to the end bins.

Gaze crops. The analogue of ReconVLA's Grounding DINO crops (Sec. 3.3): a square around the bounding
box of the gaze mask (the object the motion is about, from the simulator's segmentation, or a
detector's box on real data), grown by `margin` of its side on each side and at least `min_fraction`
of the view wide; the whole view where the mask is empty (the object is out of sight).
"""

import torch
import torch.nn.functional as F

from twinloop_vla.policies.processor_vga import VGAProcessor


def to_bins(normalized, bins, bound):
    """Standardised actions -> bin indices (long), uniform over [-bound, bound]."""
    scaled = (normalized.clamp(-bound, bound) + bound) / (2 * bound) * bins
    return scaled.long().clamp(0, bins - 1)


def from_bins(indices, bins, bound):
    """Bin indices -> the standardised value at each bin's centre."""
    return (indices.float() + 0.5) / bins * (2 * bound) - bound


def gaze_crops(pixels, masks, size, margin=0.25, min_fraction=0.2):
    """(N, 3, S, S) views and (N, S, S) gaze masks (None: whole views) -> (N, 3, size, size) crops."""
    n, _, s, _ = pixels.shape
    theta = torch.zeros(n, 2, 3, dtype=pixels.dtype, device=pixels.device)
    half = torch.ones(n, dtype=pixels.dtype, device=pixels.device)  # half side, in units of half the view
    centre = torch.zeros(n, 2, dtype=pixels.dtype, device=pixels.device)  # (x, y) in [-1, 1]
    if masks is not None:
        masks = masks.to(pixels.device) > 0.5
        index = torch.arange(s, device=pixels.device)
        rows, cols = masks.any(-1), masks.any(-2)  # (N, S)
        seen = rows.any(-1)
        top = torch.where(rows, index, s).amin(-1)
        bottom = torch.where(rows, index, -1).amax(-1) + 1
        left = torch.where(cols, index, s).amin(-1)
        right = torch.where(cols, index, -1).amax(-1) + 1
        side = torch.maximum(bottom - top, right - left).to(pixels.dtype) * (1 + 2 * margin)
        box_half = (side / s).clamp(min_fraction, 1.0)
        box_centre = torch.stack([(left + right), (top + bottom)], -1).to(pixels.dtype) / s - 1
        half = torch.where(seen, box_half, half)
        centre = torch.where(seen[:, None], box_centre, centre)
    theta[:, 0, 0] = theta[:, 1, 1] = half
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(pixels, grid, mode='bilinear', padding_mode='border', align_corners=False)


class ReconVLAProcessor(VGAProcessor):
    """VGA's processor with the discrete head's action bins."""

    def bins(self, normalized):
        """Standardised actions (..., A) -> bin indices."""
        return to_bins(normalized, self.config.action_bins, self.config.bin_bound)

    def unbin(self, indices):
        """Bin indices -> standardised actions."""
        return from_bins(indices, self.config.action_bins, self.config.bin_bound)
