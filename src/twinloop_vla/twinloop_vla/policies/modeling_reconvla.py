"""ReconVLA, the reconstructive vision-language-action model (shared/seeds/001, Sec. 3), at configurable size.

Tokens and backbone (Sec. 3.1-3.2). A causal transformer reads, in this order:
    [instruction tokens] [view_1 patches] ... [view_N patches] [state] [action part]
The instruction comes first so that, under causal attention, every image token can attend to it (the
paper prepends the instruction for this reason). Its sentence embedding (the packaged sentence model)
becomes `instruction_tokens` tokens by a linear map; each view is tokenised by the patch encoder, projected,
given 2D sin-cos positions and a learnt view embedding; proprioception is one token.

Actions. `discrete` (the paper's): the chunk's C x A standardised actions are binned (processor_reconvla)
and predicted as tokens autoregressively, teacher-forced in training (cross-entropy) and decoded greedily
at inference. `continuous`: C learnable action queries at the end, a linear head regresses the chunk (L1).

Reconstruction (Sec. 3.2, Eq. 3). The backbone's outputs at the image tokens are the reconstructive tokens.
A frozen visual tokenizer (twinloop_vla.vae, a small VAE trained here on our own images) turns the gaze
region of view `recon_view` (processor_reconvla.gaze_crops; the whole view with `reconstruct: image`) into
latent tokens z_0; a denoiser (Transformer encoder blocks with self-attention over the projected
reconstructive tokens, a timestep token and the noisy latent tokens, DiT-like) predicts the noise of
z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps (DDPM), L_recon = ||eps - eps_theta(z_t, t, h_R)||^2, and
L = L_action + recon_loss_weight L_recon. Inference skips the tokenizer and the denoiser.

Attention (Sec. 4.3, Figure 4). `attention(batch)` gives the action part's attention over each view's
patches in the last backbone layer (mean over heads and action tokens); forward reports
`attention_inside`, its mass on the patches the gaze mask covers (a measure, not a loss), where the batch
has gaze masks.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from twinloop_vla.encoders import make_encoder
from twinloop_vla.layers import Block, Mlp, attention_weights, sincos_2d, timestep_embedding
from twinloop_vla.policies.base import Policy, register_policy
from twinloop_vla.policies.configuration_reconvla import ReconVLAConfig
from twinloop_vla.policies.processor_reconvla import ReconVLAProcessor, gaze_crops
from twinloop_vla.processing import random_shift
from twinloop_vla.vae import DiffusersVAE, SmallVAE, VAEConfig, is_diffusers_vae, unit_range


def ddpm_alphas_cumprod(steps):
    """abar_t of DDPM's linear schedule (betas 1e-4 .. 0.02 over `steps`)."""
    betas = torch.linspace(1e-4, 0.02, steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


class Denoiser(nn.Module):
    """Self-attention blocks over [reconstructive tokens, timestep token, noisy latent tokens] -> the noise."""

    def __init__(self, config, grid):
        super().__init__()
        c, w = config, config.denoiser_width
        self.condition = nn.Linear(c.width, w)
        self.latent_in = nn.Linear(c.vae_channels, w)
        self.time = Mlp(w, w, w)
        self.register_buffer('positions', sincos_2d(grid, grid, w), persistent=False)
        self.blocks = nn.ModuleList(Block(w, c.denoiser_heads, 4.0, layer_scale=1.0) for _ in range(c.denoiser_depth))
        self.norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, c.vae_channels)

    def forward(self, noisy, t, reconstructive):
        """noisy (B, ch, g, g), t (B,), reconstructive (B, M, width) -> predicted noise (B, ch, g, g)."""
        b, ch, g, _ = noisy.shape
        latent = self.latent_in(noisy.flatten(2).transpose(1, 2)) + self.positions
        time = self.time(timestep_embedding(t, latent.shape[-1]))[:, None]
        x = torch.cat([self.condition(reconstructive), time, latent], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x[:, -g * g :])).transpose(1, 2).reshape(b, ch, g, g)


@register_policy('reconvla')
class ReconVLAPolicy(Policy):
    """ReconVLA: causal VLA backbone, discrete (or continuous) actions, gaze-region reconstruction (Sec. 3)."""

    config_class = ReconVLAConfig

    @property
    def needs_pixels(self):
        """Training needs the views themselves (the gaze crops), never cached encoder features."""
        return self.denoiser is not None

    def __init__(self, config, stats=None, embedder=None):
        """embedder: an object with embed(str) -> (text_dim,) (default: the packaged all-MiniLM-L6-v2)."""
        super().__init__(config, stats)
        c = config
        self.encoder = make_encoder(c.encoder, c.image_size, c.patch_size, c.encoder_dim)
        self.processor = ReconVLAProcessor(c, stats, embedder, self.encoder.mean, self.encoder.std)
        self.stats = self.processor.normalizer.stats
        self.grid = c.image_size // c.patch_size
        self.vision_proj = Mlp(c.encoder_dim, c.width, c.width)
        self.view_embedding = nn.Parameter(torch.randn(c.num_views, 1, c.width) * 0.02)
        self.register_buffer('positions', sincos_2d(self.grid, self.grid, c.width), persistent=False)
        self.instruction_proj = nn.Linear(c.text_dim, c.instruction_tokens * c.width)
        self.state_proj = Mlp(c.state_dim, c.width, c.width)
        self.blocks = nn.ModuleList(
            Block(c.width, c.heads, c.mlp_ratio, layer_scale=c.layer_scale) for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.width)
        self.action_len = c.chunk_size * c.action_dim if c.action_head == 'discrete' else c.chunk_size
        if c.action_head == 'discrete':
            self.action_embedding = nn.Embedding(c.action_bins + 1, c.width)  # the last index: begin
            self.action_positions = nn.Parameter(torch.randn(self.action_len, c.width) * 0.02)
            self.action_out = nn.Linear(c.width, c.action_bins)
        else:
            self.action_queries = nn.Parameter(torch.randn(c.chunk_size, c.width) * 0.02)
            self.action_out = nn.Linear(c.width, c.action_dim)
        self.vae = self.denoiser = None
        if c.use_reconstruction:
            if c.vae_weights and is_diffusers_vae(c.vae_weights):  # loaded from its folder, never checkpointed
                self.vae, self.external_prefixes = DiffusersVAE(c.vae_weights, c.gaze_size), ('vae.',)
                if self.vae.channels != c.vae_channels:
                    raise ValueError(
                        f'vae_weights {c.vae_weights} has {self.vae.channels} latent channels; set vae_channels to it'
                    )
            else:
                self.vae = SmallVAE(VAEConfig(size=c.gaze_size, channels=c.vae_channels, hidden=c.vae_hidden))
            self.vae.requires_grad_(False)
            self.denoiser = Denoiser(c, self.vae.grid)
            self.register_buffer('alphas_cumprod', ddpm_alphas_cumprod(c.diffusion_steps), persistent=False)

    # --- backbone -----------------------------------------------------------------------------------
    def _prefix(self, inputs):
        """Instruction, view and state tokens (B, K + V P + 1, D)."""
        c = self.config
        device = self.view_embedding.device
        b = len(inputs['state'])
        pixels = inputs['pixels'].to(device).flatten(0, 1)
        patches = (self.vision_proj(self.encoder(pixels)) + self.positions).reshape(b, c.num_views, -1, c.width)
        patches = (patches + self.view_embedding).flatten(1, 2)
        instruction = self.instruction_proj(inputs['language'].to(device)).reshape(b, c.instruction_tokens, c.width)
        state = self.state_proj(inputs['state'].to(device))[:, None]
        return torch.cat([instruction, patches, state], dim=1)

    def _causal(self, length):
        return torch.ones(length, length, dtype=torch.bool, device=self.view_embedding.device).tril()

    def _run(self, x):
        """Causal blocks over x -> (normalised outputs, the last block's input)."""
        mask = self._causal(x.shape[1])
        for block in self.blocks[:-1]:
            x = block(x, mask)
        last_input = x
        return self.norm(self.blocks[-1](x, mask)), last_input

    def _action_tokens(self, previous, b):
        """The discrete action part's input: begin, then the previous bins (B, n) -> (B, n + 1, D)."""
        begin = torch.full((b, 1), self.config.action_bins, dtype=torch.long, device=self.view_embedding.device)
        ids = torch.cat([begin, previous], dim=1)
        return self.action_embedding(ids) + self.action_positions[: ids.shape[1]]

    def _image_slice(self):
        c = self.config
        return slice(c.instruction_tokens, c.instruction_tokens + c.num_views * self.grid**2)

    # --- training -----------------------------------------------------------------------------------
    def forward(self, batch):
        """{'loss', 'action', 'action_l1' (standardised L1 of the predicted chunk), 'recon' where reconstructing,
        'attention_inside' where the batch has gaze masks}."""
        c = self.config
        inputs = self.processor(batch)
        if self.training and c.augment_shift > 0:
            inputs = self._shifted(inputs)
        device = self.view_embedding.device
        prefix = self._prefix(inputs)
        b, n = prefix.shape[:2]
        target = inputs['action'].to(device)
        if c.action_head == 'discrete':
            ids = self.processor.bins(target).flatten(1)  # (B, C A)
            hidden, last_input = self._run(torch.cat([prefix, self._action_tokens(ids[:, :-1], b)], dim=1))
            logits = self.action_out(hidden[:, n:])  # position n + j predicts bin j
            losses = {'action': F.cross_entropy(logits.transpose(1, 2), ids)}
            predicted = self.processor.unbin(logits.argmax(-1)).reshape(target.shape)
        else:
            queries = self.action_queries.expand(b, -1, -1)
            hidden, last_input = self._run(torch.cat([prefix, queries], dim=1))
            predicted = self.action_out(hidden[:, n:])
            losses = {'action': F.l1_loss(predicted, target)}
        losses['action_l1'] = F.l1_loss(predicted.detach(), target)
        loss = losses['action']
        if self.denoiser is not None and (c.reconstruct == 'image' or 'gaze' in inputs):
            losses['recon'] = self._reconstruction_loss(inputs, hidden[:, self._image_slice()])
            loss = loss + c.recon_loss_weight * losses['recon']
        if 'gaze' in inputs:
            weights = self._attention_over_patches(last_input)
            losses['attention_inside'] = attention_inside(weights, inputs['gaze'].to(device), c.patch_size).detach()
        return {'loss': loss, **losses}

    def _reconstruction_loss(self, inputs, reconstructive):
        """Eq. 3: the denoiser's noise prediction error on the gaze region's latent tokens."""
        c = self.config
        view = unit_range(inputs['pixels'][:, c.recon_view], self.encoder.mean, self.encoder.std)
        masks = inputs['gaze'][:, c.recon_view] if c.reconstruct == 'gaze' else None
        z0 = self.vae.latents(gaze_crops(view.to(reconstructive.device), masks, c.gaze_size, c.gaze_margin))
        t = torch.randint(0, c.diffusion_steps, (len(z0),), device=z0.device)
        noise = torch.randn_like(z0)
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = abar.sqrt() * z0 + (1 - abar).sqrt() * noise
        return F.mse_loss(self.denoiser(noisy, t, reconstructive), noise)

    def _shifted(self, inputs):
        """inputs with every view randomly translated (training augmentation), gaze masks alike."""
        pixels = inputs['pixels']
        extra = [inputs['gaze'].flatten(0, 1)[:, None]] if 'gaze' in inputs else []
        shifted, extra = random_shift(pixels.flatten(0, 1), self.config.augment_shift, extra)
        out = {**inputs, 'pixels': shifted.reshape(pixels.shape)}
        if extra:
            out['gaze'] = extra[0].reshape(inputs['gaze'].shape)
        return out

    # --- attention ----------------------------------------------------------------------------------
    def _attention_over_patches(self, last_input):
        """The action part's mean attention over each view's patches in the last block: (B, V, P)."""
        c = self.config
        block = self.blocks[-1]
        x = block.norm1(last_input)
        weights = attention_weights(block.attn, x, self._causal(x.shape[1])).mean(1)  # (B, N, N)
        actions = weights[:, -self.action_len :, self._image_slice()].mean(1)
        return actions.reshape(len(x), c.num_views, -1)

    @torch.no_grad()
    def attention(self, batch):
        """The action part's attention over each view's patches (B, V, P) in the last backbone layer, for a raw
        batch: with its actions where it has them (teacher forcing), else with the policy's own."""
        c = self.config
        inputs = self.processor(batch)
        prefix = self._prefix(inputs)
        b = len(prefix)
        if c.action_head == 'continuous':
            tail = self.action_queries.expand(b, -1, -1)
        else:
            ids = (
                self.processor.bins(inputs['action'].to(prefix.device)).flatten(1)
                if 'action' in inputs
                else self._decode(prefix)
            )
            tail = self._action_tokens(ids[:, :-1], b)
        return self._attention_over_patches(self._run(torch.cat([prefix, tail], dim=1))[1])

    # --- inference ----------------------------------------------------------------------------------
    def _decode(self, prefix):
        """Greedy decoding of the discrete action part: (B, C A) bin indices. Each layer's keys and values are
        cached, so after the prefix's pass every token costs one pass over itself alone."""
        b, caches = len(prefix), [{} for _ in self.blocks]
        x = torch.cat([prefix, self._action_tokens(prefix.new_zeros(b, 0, dtype=torch.long), b)], dim=1)
        mask = self._causal(x.shape[1])
        ids = []
        for j in range(self.action_len):
            if ids:  # the token just decoded, at its position
                x, mask = self.action_embedding(ids[-1]) + self.action_positions[j], None
            for block, cache in zip(self.blocks, caches):
                x = block(x, mask, cache)
            ids.append(self.action_out(self.norm(x[:, -1])).argmax(-1, keepdim=True))
        return torch.cat(ids, dim=1)

    @torch.no_grad()
    def select_action_chunk(self, observation):
        """Backbone and action head only (no tokenizer, no denoiser) -> numpy (C, action_dim); the discrete
        head decodes its C x A tokens greedily."""
        c = self.config
        prefix = self._prefix(self.processor.observation(observation))
        if c.action_head == 'discrete':
            chunk = self.processor.unbin(self._decode(prefix)[0]).reshape(c.chunk_size, c.action_dim)
        else:
            hidden, _ = self._run(torch.cat([prefix, self.action_queries[None]], dim=1))
            chunk = self.action_out(hidden[0, prefix.shape[1] :])
        return self.processor.actions(chunk, np.asarray(observation['state'], np.float32))

    def load_pretrained(self):
        """The frozen tokenizer from config.vae_weights, when set (its shape must match the config)."""
        c = self.config
        if not (isinstance(self.vae, SmallVAE) and c.vae_weights):
            return
        trained = SmallVAE.load(c.vae_weights)
        wanted = (c.gaze_size, c.vae_channels, c.vae_hidden)
        found = (trained.config.size, trained.config.channels, trained.config.hidden)
        if found != wanted:
            raise ValueError(
                f'vae_weights {c.vae_weights}: size, channels, hidden {found} do not match the config {wanted}'
            )
        self.vae.load_state_dict(trained.state_dict())  # its latent scale included


def attention_inside(weights, masks, patch_size):
    """Mean share of attention (B, V, P) on patches the gaze masks (B, V, S, S) cover, over views that see it."""
    covered = F.max_pool2d(masks.flatten(0, 1)[:, None].float(), patch_size).flatten(1).reshape(weights.shape) > 0
    seen = covered.any(-1).float()
    share = (weights * covered).sum(-1) / weights.sum(-1).clamp(min=1e-9)
    return (share * seen).sum() / seen.sum().clamp(min=1)
