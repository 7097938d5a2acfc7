"""VGA configuration (shared/seeds/003, Sec. 4 and appendix B) at configurable size.

`depth` is the paper's L: the number of alternating-attention layers of the backbone, frame-wise
on even and global on odd layers (Eq. 2-3), so L / 2 frame-global pairs; the action head has
L_a = L layers, one per backbone layer (Sec. 4.3, appendix B.1). Two presets:

- `small()`: 2 views of 112 px, width 192, depth 4, the frozen DINOv2 ViT-S/14 ONNX encoder.
- `large()`: 2 views of 224 px, VGGT-1B's block shape (width 1024, 16 heads, QK-norm, layer scale),
  depth 24 (VGGT-1B's first 12 frame and 12 global blocks load from `vggt_weights`), 16 camera
  tokens per view as in the paper. VGGT's blocks are 1024 wide, so a narrower large model could
  not take its weights.
- `cpu()`: what trains on 2 CPU cores in about 90 minutes: 2 views of 96 px through a trainable
  residual conv net down to 16 px patches (6 x 6 per view; no DINOv2: it costs 0.29 s per image
  here), width 128, depth 4, joint targets relative to the joint state (the recorders' 7 joints +
  gripper layout), random-shift augmentation, and the gaze head (beyond the paper; trained where
  the dataset has gaze masks, see modeling_vga).
"""

from dataclasses import dataclass

from twinloop_core.engine import ConfigError
from twinloop_vla.encoders import ENCODERS
from twinloop_vla.policies.base import PolicyConfig


def input_rules(c):
    """(ok, message) rules on the views, encoder, width and action fields VGA and ReconVLA share."""
    return [
        (c.encoder in ENCODERS, f'encoder {c.encoder!r} is not one of {sorted(ENCODERS)}'),
        (c.width % c.heads == 0, f'width {c.width} is not a multiple of heads {c.heads}'),
        (c.width % 4 == 0, f'width {c.width} is not a multiple of 4 (2D sin-cos positions)'),
        (c.image_size % c.patch_size == 0, f'image_size {c.image_size} is not a multiple of patch_size'),
        (
            0 <= c.relative_action_dims <= min(c.state_dim, c.action_dim),
            f'relative_action_dims {c.relative_action_dims} must be in 0..min(state_dim, action_dim)',
        ),
        (0 <= c.augment_shift < 0.5, f'augment_shift {c.augment_shift} must be in [0, 0.5)'),
    ]


def check(config, rules):
    """Raise ConfigError naming the config class and the first broken rule."""
    for ok, message in rules:
        if not ok:
            raise ConfigError(f'{type(config).__name__}: {message}')


@dataclass
class VGAConfig(PolicyConfig):
    """Shapes, switches (for the paper's ablations) and loss weights of a VGA policy."""

    # inputs and outputs
    num_views: int = 2
    image_size: int = 112  # square views, pixels
    state_dim: int = 8  # proprioception: 7 joint positions + gripper width
    action_dim: int = 8  # 7 joint (or end-effector) deltas + gripper
    chunk_size: int = 8  # C, actions per chunk (Sec. 4.3)
    relative_action_dims: int = 0  # leading action entries predicted as offsets from the current state (7: joints)
    # encoders
    encoder: str = 'conv'  # a name of twinloop_vla.encoders.ENCODERS: 'dinov2_onnx' (frozen), 'conv', 'resnet'
    patch_size: int = 14
    encoder_dim: int = 64  # the encoder's token width (dinov2_onnx: 384)
    text_dim: int = 384  # all-MiniLM-L6-v2
    # backbone
    width: int = 192
    depth: int = 4  # L alternating-attention layers (even: frame-wise, odd: global)
    heads: int = 6
    mlp_ratio: float = 4.0
    layer_scale: float = 0.01  # VGGT's init_values
    camera_tokens: int = 1  # learnable camera queries per view; the first feeds the camera head
    # heads and training objective, L = L_action + w_cam L_camera + w_depth L_depth (Eq. 7)
    use_pvm: bool = True  # Progressive Volumetric Modulation (Eq. 8-10); off: plain cross-attention
    use_camera_head: bool = True
    use_depth_head: bool = True
    camera_head_depth: int = 2  # self-attention refinement blocks over the views' camera tokens
    depth_head_dim: int = 64  # DPT feature channels
    camera_loss_weight: float = 1.0
    depth_loss_weight: float = 1.0
    depth_confidence_alpha: float = 0.2  # weight of -log(confidence) in the depth loss (VGGT)
    use_gaze_head: bool = False  # beyond the paper: a language-conditioned gaze on the object (modeling_vga.GazeHead)
    gaze_loss_weight: float = 1.0
    augment_shift: float = 0.0  # training only: random view translation, up to this fraction of the size
    # pretrained weights: a directory with VGGT-1B's model.safetensors (or model.pt), '' for none
    vggt_weights: str = ''

    def __post_init__(self):
        counts = ('num_views', 'image_size', 'patch_size', 'state_dim', 'action_dim', 'chunk_size', 'encoder_dim')
        counts += ('width', 'depth', 'heads', 'camera_tokens', 'depth_head_dim')
        small = [key for key in counts if getattr(self, key) < 1]
        if small:
            raise ConfigError(f'VGAConfig: {small} must be >= 1')
        rules = [(self.depth >= 2 and self.depth % 2 == 0, f'depth {self.depth} must be even and >= 2 (frame/global)')]
        check(self, rules + input_rules(self))

    @classmethod
    def small(cls, **overrides):
        """2 x 112 px views through the frozen DINOv2 ONNX encoder, width 192, depth 4."""
        return cls.from_dict({**SMALL, **overrides})

    @classmethod
    def cpu(cls, **overrides):
        """2 x 96 px views through a trainable residual conv net, width 128, depth 4 (see the module docstring)."""
        return cls.from_dict({**CPU, **overrides})

    @classmethod
    def large(cls, **overrides):
        """2 x 224 px views, VGGT-1B-shaped backbone of depth 24 (see the module docstring)."""
        return cls.from_dict({**LARGE, **overrides})


SMALL = {'image_size': 112, 'encoder': 'dinov2_onnx', 'encoder_dim': 384, 'width': 192, 'depth': 4, 'heads': 6}
CPU = {
    'image_size': 96,
    'patch_size': 16,
    'encoder': 'resnet',
    'encoder_dim': 96,
    'width': 128,
    'depth': 4,
    'heads': 4,
    'depth_head_dim': 32,
    'relative_action_dims': 7,
    'augment_shift': 0.06,
    'use_gaze_head': True,
}
LARGE = {
    'image_size': 224,
    'encoder': 'dinov2_onnx',
    'encoder_dim': 384,
    'width': 1024,
    'depth': 24,
    'heads': 16,
    'camera_tokens': 16,
    'depth_head_dim': 256,
}
