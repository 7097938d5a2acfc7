"""VGA's processor: raw batches and observations -> the model's tensors, and actions back.

A raw batch (dataset samples stacked) holds
  images       uint8 (B, V, H, W, 3)      the views, any size (resized to image_size)
  patch_tokens (B, V, P, encoder_dim)     optional, instead of images: a frozen encoder's cached output
  state        (B, >= state_dim)          proprioception, its leading state_dim entries (standardised)
  instruction  str or B strings           embedded by the sentence model, cached per instruction
  action       (B, C, action_dim)         ground-truth chunk, training only: its first relative_action_dims
                                          entries made offsets from the state, then standardised
  camera       (B, V, 9)                  optional: quaternion wxyz, translation, focal (Eq. 5)
  depth        (B, V, H, W)               optional: metres, <= 0 or non-finite where unknown
  gaze         (B, V, H, W)               optional: 1 on the pixels of the object the motion is about
State and action statistics (of the actions as the model predicts them, relative where configured)
come from `compute_stats` over a dataset iterator and travel with the checkpoint (stats.json);
camera, depth and gaze targets are used as given (resized to image_size).
"""

import numpy as np
import torch
import torch.nn.functional as F

from twinloop_vla.processing import Normalizer, absolute_actions, relative_actions, to_pixels
from twinloop_vla.processing import compute_stats as _compute_stats
from twinloop_vla.text import SentenceEmbedder

STATS_KEYS = ('state', 'action')


def compute_stats(samples, relative_action_dims=0):
    """Mean/std of state and (model-side) action over an iterable of samples or batches (for stats.json)."""
    model_side = (
        {'state': s['state'], 'action': relative_actions(s['action'], s['state'], relative_action_dims)}
        for s in samples
    )
    return _compute_stats(model_side, STATS_KEYS)


def leading_state(state, state_dim):
    """The first state_dim entries of states (..., S >= state_dim): state layouts grow by appending
    (world_sim_expert.policy_state), so a policy trained on a shorter one reads its prefix."""
    state = np.asarray(state, dtype=np.float32)
    if state.shape[-1] < state_dim:
        raise ValueError(f'the policy needs a state of {state_dim} entries, got {state.shape[-1]}')
    return state[..., :state_dim]


class VGAProcessor:
    """Turns raw batches into model inputs with the encoder's image mean/std and the dataset's statistics."""

    def __init__(self, config, stats=None, embedder=None, image_mean=None, image_std=None):
        self.config = config
        self.normalizer = Normalizer(stats, {'state': config.state_dim, 'action': config.action_dim})
        self.embedder = embedder or SentenceEmbedder()
        self.image_mean, self.image_std = image_mean, image_std

    def __call__(self, batch):
        """Model inputs: pixels (B, V, 3, S, S) or patch_tokens, state, language (B, text_dim), targets present."""
        c = self.config
        if 'patch_tokens' in batch:
            visual = {'patch_tokens': torch.as_tensor(np.asarray(batch['patch_tokens']), dtype=torch.float32)}
            shape = (c.num_views, (c.image_size // c.patch_size) ** 2, c.encoder_dim)
            if visual['patch_tokens'].ndim != 4 or tuple(visual['patch_tokens'].shape[1:]) != shape:
                raise ValueError(
                    f'patch_tokens must be (B, {", ".join(map(str, shape))}), got {tuple(visual["patch_tokens"].shape)}'
                )
        else:
            visual = {'pixels': to_pixels(batch['images'], c.image_size, self.image_mean, self.image_std)}
            if visual['pixels'].ndim != 5 or visual['pixels'].shape[1] != c.num_views:
                raise ValueError(f'images must be (B, {c.num_views}, H, W, 3), got {tuple(np.shape(batch["images"]))}')
        instructions = batch['instruction']
        if isinstance(instructions, str):
            instructions = [instructions] * len(next(iter(visual.values())))
        out = {
            **visual,
            'state': self.normalizer.normalize('state', leading_state(batch['state'], c.state_dim)),
            'language': torch.from_numpy(np.stack([self.embedder.embed(text) for text in instructions])),
        }
        if 'action' in batch:
            relative = relative_actions(batch['action'], batch['state'], c.relative_action_dims)
            out['action'] = self.normalizer.normalize('action', relative)
        if 'camera' in batch:
            out['camera'] = torch.as_tensor(np.asarray(batch['camera']), dtype=torch.float32)
        if 'depth' in batch:
            depth = torch.as_tensor(np.asarray(batch['depth']), dtype=torch.float32)
            depth = F.interpolate(depth, size=(c.image_size, c.image_size), mode='nearest')
            out['depth_valid'] = torch.isfinite(depth) & (depth > 0)
            out['depth'] = torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
        if 'gaze' in batch:
            gaze = torch.as_tensor(np.asarray(batch['gaze']), dtype=torch.float32)
            out['gaze'] = F.interpolate(gaze, size=(c.image_size, c.image_size), mode='nearest')
        return out

    def observation(self, observation):
        """Model inputs for one observation {'images': (V, H, W, 3), 'state': (S,), 'instruction': str}."""
        return self(
            {
                'images': np.asarray(observation['images'])[None],
                'state': np.asarray(observation['state'], dtype=np.float32)[None],
                'instruction': observation['instruction'],
            }
        )

    def actions(self, normalized, state):
        """A standardised chunk (C, action_dim) predicted at `state` -> actions in the dataset's units (float32)."""
        actions = self.normalizer.unnormalize('action', normalized)
        actions = absolute_actions(actions, state, self.config.relative_action_dims)
        return actions.detach().cpu().numpy().astype(np.float32)
