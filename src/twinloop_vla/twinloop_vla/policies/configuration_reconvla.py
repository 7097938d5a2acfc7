"""ReconVLA configuration (shared/seeds/001, Sec. 3) at configurable size.

Switches for the paper's ablations (Table 2): `use_reconstruction` off is the baseline VLA;
`reconstruct: image` reconstructs the whole view instead of the gaze region; pretraining is a stage of
the pipeline, not a config. `action_head: discrete` is the paper's (autoregressive action tokens,
OpenVLA-style bins), `continuous` regresses the chunk from learnable action queries (an option).

- `cpu()`: what trains on 2 CPU cores: 2 views of 96 px through the trainable residual conv net down to
  16 px patches (as VGA's cpu preset), width 128, depth 4, joint targets relative to the joint state,
  a 32 px gaze crop to a 4 x 8 x 8 latent, a 2-block denoiser.
- `large()`: for a GPU: 2 views of 224 px through the frozen DINOv2 encoder, width 768, depth 12.
"""

from dataclasses import dataclass

from twinloop_core.engine import ConfigError
from twinloop_vla.policies.base import PolicyConfig
from twinloop_vla.policies.configuration_vga import check, input_rules

ACTION_HEADS = ('discrete', 'continuous')
RECONSTRUCT = ('gaze', 'image')


@dataclass
class ReconVLAConfig(PolicyConfig):
    """Shapes, switches and loss weights of a ReconVLA policy."""

    # inputs and outputs (as VGAConfig)
    num_views: int = 2
    image_size: int = 112
    state_dim: int = 8
    action_dim: int = 8
    chunk_size: int = 8
    relative_action_dims: int = 0
    encoder: str = 'conv'
    patch_size: int = 14
    encoder_dim: int = 64
    text_dim: int = 384
    instruction_tokens: int = 4  # the sentence embedding becomes this many prefix tokens
    # causal transformer backbone: [instruction] [view patches] [state] [actions]
    width: int = 192
    depth: int = 4
    heads: int = 6
    mlp_ratio: float = 4.0
    layer_scale: float = 0.1
    # actions
    action_head: str = 'discrete'
    action_bins: int = 256
    bin_bound: float = 3.0  # bins span +-bin_bound standard deviations of each action dimension
    # reconstruction (Eq. 3): L = L_action + recon_loss_weight L_recon
    use_reconstruction: bool = True
    reconstruct: str = 'gaze'  # gaze: the crop around the gaze mask; image: the whole view
    recon_view: int = 0  # the view whose region is reconstructed
    gaze_size: int = 32  # crop side [px] (the VAE's size)
    gaze_margin: float = 0.25
    vae_channels: int = 4  # latent channels (Stable Diffusion's VAE: 4, Flux's: 16)
    vae_hidden: int = 32
    # a folder of python -m twinloop_vla.vae or of diffusers' AutoencoderKL; '' leaves a random frozen tokenizer (tests)
    vae_weights: str = ''
    denoiser_width: int = 128
    denoiser_depth: int = 2
    denoiser_heads: int = 4
    diffusion_steps: int = 1000  # DDPM, linear betas 1e-4 .. 0.02 (Ho et al. 2020)
    recon_loss_weight: float = 1.0
    augment_shift: float = 0.0

    def __post_init__(self):
        counts = ('num_views', 'image_size', 'patch_size', 'state_dim', 'action_dim', 'chunk_size', 'encoder_dim')
        counts += ('instruction_tokens', 'width', 'depth', 'heads', 'action_bins', 'gaze_size', 'diffusion_steps')
        counts += ('vae_channels', 'vae_hidden', 'denoiser_width', 'denoiser_depth', 'denoiser_heads')
        small = [key for key in counts if getattr(self, key) < 1]
        if small:
            raise ConfigError(f'ReconVLAConfig: {small} must be >= 1')
        rules = [
            (self.denoiser_width % self.denoiser_heads == 0, 'denoiser_width is not a multiple of denoiser_heads'),
            (self.denoiser_width % 4 == 0, 'denoiser_width is not a multiple of 4'),
            (self.gaze_size % 4 == 0 and self.gaze_size >= 8, f'gaze_size {self.gaze_size}: a multiple of 4, >= 8'),
            (self.action_head in ACTION_HEADS, f'action_head {self.action_head!r} is not one of {ACTION_HEADS}'),
            (self.reconstruct in RECONSTRUCT, f'reconstruct {self.reconstruct!r} is not one of {RECONSTRUCT}'),
            (0 <= self.recon_view < self.num_views, f'recon_view {self.recon_view} is not a view index'),
            (self.bin_bound > 0, 'bin_bound must be > 0'),
        ]
        check(self, input_rules(self) + rules)

    @classmethod
    def cpu(cls, **overrides):
        """2 x 96 px views through a trainable residual conv net, width 128, depth 4 (see the module docstring)."""
        return cls.from_dict({**CPU, **overrides})

    @classmethod
    def large(cls, **overrides):
        """2 x 224 px views through the frozen DINOv2 encoder, width 768, depth 12."""
        return cls.from_dict({**LARGE, **overrides})


CPU = {
    'image_size': 96,
    'patch_size': 16,
    'encoder': 'resnet',
    'encoder_dim': 96,
    'width': 128,
    'depth': 4,
    'heads': 4,
    'relative_action_dims': 7,
    'augment_shift': 0.06,
}
LARGE = {
    'image_size': 224,
    'encoder': 'dinov2_onnx',
    'encoder_dim': 384,
    'width': 768,
    'depth': 12,
    'heads': 12,
    'gaze_size': 64,
    'denoiser_width': 384,
    'denoiser_depth': 6,
    'denoiser_heads': 6,
}
