"""VGA, the Vision-Geometry-Action model (shared/seeds/003, Sec. 4), at configurable size.

Tokens (Sec. 4.2, Eq. 1). Every view is tokenised by a frozen patch encoder (DINO; a trainable
conv stem in tests), projected by an MLP (the "vision projector", appendix B.1) and given fixed 2D
sin-cos positions; `camera_tokens` learnable camera queries per view are put in front of its
patches (VGGT's layout). The instruction's sentence embedding becomes one language token (MLP),
proprioception one state token (MLP), and C learnable action queries follow:
    [view_1: camera queries, patches] ... [view_N: ...] [language] [state] [action queries].

Backbone (Eq. 2-3). `depth` = L alternating-attention layers: even layers attend frame-wise,
independently within each modality (each view's tokens; the language token; the state token; the
action queries), odd layers attend globally over the whole sequence. Every layer's output X^(l)
is kept: the action head and the depth head read intermediate layers.

Action head (Eq. 4, 8-10). L_a = L layers decode learnable noise embeddings z in R^{C x D}. With
PVM, decoder layer l reads backbone layer l: Eq. 8 attends from the decoder latent to the action
queries' states H_b^(l), Eq. 9 from that result to the vision-language states H_a^(l) (all other
tokens), and Eq. 10 fuses the result with the decoder's own updated state (a self-attention +
MLP block) by a linear layer on their concatenation. Without PVM (the paper's ablation) each
decoder layer instead cross-attends to the final representation V_t = X^(L), the "straightforward
solution" Sec. 4.4 compares against. A linear layer phi maps the last latent to the chunk (Eq. 4).

Auxiliary heads (Eq. 5-6, trained jointly, Eq. 7 with weights): a camera head (each view's first
camera query, refined by self-attention across views, MLP to quaternion, translation and focal;
Huber loss) and a small DPT depth head (patch tokens of up to four backbone layers reassembled at
4x, 2x, 1x and 1/2x the patch grid, fused coarse to fine by residual conv units; depth and
confidence, VGGT's confidence-weighted loss with a gradient term). Decoupled inference (Sec. 4.3):
`select_action_chunk` runs the backbone and the action head only.

Beyond the paper, for small data: `relative_action_dims` makes the arm's joint targets offsets
from the current joint state (the processor converts both ways), and `augment_shift` translates
the views randomly in training (the depth and gaze targets with them; camera targets are left as
they are). `use_gaze_head` adds a language-conditioned gaze (GazeHead): the language token queries
each view's patch tokens, the softmax over patches is trained towards the pixels of the object
the motion is about (ReconVLA's gaze region, shared/seeds/001, here from the simulator's
segmentation) and its expected patch position per view joins the state token, so the action head
reads where the object is.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from twinloop_vla.encoders import make_encoder
from twinloop_vla.layers import Block, CrossAttention, LayerScale, Mlp, sincos_2d
from twinloop_vla.processing import random_shift
from twinloop_vla.policies.base import Policy, register_policy
from twinloop_vla.policies.configuration_vga import VGAConfig
from twinloop_vla.policies.processor_vga import VGAProcessor


def group_mask(sizes):
    """Block-diagonal bool mask (sum, sum): tokens attend within their own group only."""
    groups = torch.tensor([group for group, size in enumerate(sizes) for _ in range(size)])
    return groups[:, None] == groups[None, :]


class AlternatingAttention(nn.Module):
    """VGGT-style backbone: frame-wise attention on even layers (Eq. 2), global on odd layers (Eq. 3)."""

    def __init__(self, config):
        super().__init__()
        c = config
        self.layers = nn.ModuleList(
            Block(c.width, c.heads, c.mlp_ratio, layer_scale=c.layer_scale) for _ in range(c.depth)
        )

    def forward(self, x, num_views, view_len, shared_mask):
        """x (B, T, D) laid out as [views, shared] -> every layer's output, a list of L tensors (B, T, D)."""
        b, _, d = x.shape
        n = num_views * view_len
        outputs = []
        for index, layer in enumerate(self.layers):
            if index % 2 == 0:  # Eq. 2: each view alone, each shared modality alone
                views = layer(x[:, :n].reshape(b * num_views, view_len, d)).reshape(b, n, d)
                x = torch.cat([views, layer(x[:, n:], mask=shared_mask)], dim=1)
            else:  # Eq. 3: all tokens
                x = layer(x)
            outputs.append(x)
        return outputs


class PVMLayer(nn.Module):
    """One action-head layer with Progressive Volumetric Modulation (Sec. 4.4, Eq. 8-10)."""

    def __init__(self, config):
        super().__init__()
        c = config
        self.block = Block(c.width, c.heads, c.mlp_ratio, layer_scale=c.layer_scale)
        self.pvm_b = CrossAttention(c.width, c.heads)  # Eq. 8
        self.pvm_a = CrossAttention(c.width, c.heads)  # Eq. 9
        self.pvm_fuse = nn.Linear(2 * c.width, c.width)  # Eq. 10
        with torch.no_grad():  # start as the plain decoder: [h', a] -> h'
            self.pvm_fuse.weight.zero_()
            self.pvm_fuse.weight[:, : c.width].copy_(torch.eye(c.width))
            self.pvm_fuse.bias.zero_()

    def forward(self, h, h_a, h_b):
        """h: decoder latent h^(l) (B, C, D); h_a, h_b: vision-language and action-query states of layer l."""
        h_tilde = self.pvm_b(h, h_b)  # Eq. 8: Attention(Q = h, K = V = H_b)
        a = self.pvm_a(h_tilde, h_a)  # Eq. 9: Attention(Q = h~, K = V = H_a)
        h_next = self.block(h)  # h'^(l+1), the raw updated decoder state
        return self.pvm_fuse(torch.cat([h_next, a], dim=-1))  # Eq. 10: Linear([h', a])


class CrossAttentionLayer(nn.Module):
    """Action-head layer without PVM: self-attention + MLP, then cross-attention to the final representation."""

    def __init__(self, config):
        super().__init__()
        c = config
        self.block = Block(c.width, c.heads, c.mlp_ratio, layer_scale=c.layer_scale)
        self.cross_attn = CrossAttention(c.width, c.heads)
        self.ls = LayerScale(c.width, c.layer_scale)

    def forward(self, h, final):
        """h (B, C, D) attends to final (B, T, D) = V_t."""
        h = self.block(h)
        return h + self.ls(self.cross_attn(h, final))


class ActionHead(nn.Module):
    """Regression head of L_a = L layers over learnable noise embeddings z (Sec. 4.3, Eq. 4)."""

    def __init__(self, config):
        super().__init__()
        c = config
        self.chunk_size, self.use_pvm = c.chunk_size, c.use_pvm
        self.noise = nn.Parameter(torch.randn(c.chunk_size, c.width) * 0.02)  # z
        layer = PVMLayer if c.use_pvm else CrossAttentionLayer
        self.layers = nn.ModuleList(layer(c) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.width)
        self.phi = nn.Linear(c.width, c.action_dim)

    def forward(self, backbone_layers):
        """Every backbone layer's output (B, T, D), action queries last -> the chunk (B, C, action_dim)."""
        c = self.chunk_size
        h = self.noise.expand(len(backbone_layers[0]), -1, -1)
        for layer, x in zip(self.layers, backbone_layers):
            h = layer(h, x[:, :-c], x[:, -c:]) if self.use_pvm else layer(h, backbone_layers[-1])
        return self.phi(self.norm(h))


class CameraHead(nn.Module):
    """g_i = [r_i, t_i, f_i] = MLP(refined t_i,g) (Eq. 5): quaternion (4, unit), translation (3), focal (2)."""

    def __init__(self, config):
        super().__init__()
        c = config
        self.trunk = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio) for _ in range(c.camera_head_depth))
        self.norm = nn.LayerNorm(c.width)
        self.mlp = Mlp(c.width, c.width, 9)

    def forward(self, tokens):
        """Each view's camera token (B, V, D) -> camera parameters (B, V, 9)."""
        for block in self.trunk:
            tokens = block(tokens)
        g = self.mlp(self.norm(tokens))
        return torch.cat([F.normalize(g[..., :4], dim=-1), g[..., 4:]], dim=-1)


class ResidualConvUnit(nn.Module):
    """x + conv(gelu(conv(gelu(x)))) (DPT's fusion unit)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        """(N, F, h, w) -> (N, F, h, w)."""
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


def dpt_layers(depth):
    """Indices of the (up to four) backbone layers the depth head reads, evenly spaced, the last included."""
    return sorted({depth - 1 - k * depth // 4 for k in range(4)})


class DepthHead(nn.Module):
    """Small DPT: D_i(u) = Psi(sum_s phi_s(t_i^(s))) (Eq. 6) -> depth and confidence per pixel."""

    def __init__(self, config, grid):
        super().__init__()
        c = config
        scales = len(dpt_layers(c.depth))
        self.grid, self.image_size = grid, c.image_size
        self.sizes = [max(1, int(grid * 2.0 ** (2 - s))) for s in range(scales)]  # 4x, 2x, 1x, 1/2x
        self.norm = nn.LayerNorm(c.width)
        self.reassemble = nn.ModuleList(nn.Conv2d(c.width, c.depth_head_dim, 1) for _ in range(scales))  # phi_s
        self.fuse = nn.ModuleList(ResidualConvUnit(c.depth_head_dim) for _ in range(scales))  # Psi
        self.out = nn.Sequential(
            nn.Conv2d(c.depth_head_dim, c.depth_head_dim // 2, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(c.depth_head_dim // 2, 2, 1),
        )

    def forward(self, tokens):
        """Patch tokens (N, P, D) of the dpt_layers, finest first -> depth, confidence (N, S, S)."""
        feats = []
        for t, phi, size in zip(tokens, self.reassemble, self.sizes):
            grid = self.norm(t).transpose(1, 2).reshape(len(t), -1, self.grid, self.grid)
            feats.append(F.interpolate(phi(grid), size=(size, size), mode='bilinear', align_corners=False))
        x = self.fuse[-1](feats[-1])
        for s in range(len(feats) - 2, -1, -1):
            x = self.fuse[s](
                F.interpolate(x, size=feats[s].shape[-2:], mode='bilinear', align_corners=False) + feats[s]
            )
        x = F.interpolate(self.out(x), size=(self.image_size,) * 2, mode='bilinear', align_corners=False)
        return torch.exp(x[:, 0]), 1 + torch.exp(x[:, 1])


class GazeHead(nn.Module):
    """Where the instruction's object is in each view: logits over the view's patches from the language
    token's query and the patches' keys, and the gaze point (u right, v down, in [0, 1]): the softmax's
    expectation of each patch's centre plus the patch's own offset (within half a patch), finer than
    the patch grid. point_proj embeds every view's point for the state token."""

    def __init__(self, config, grid):
        super().__init__()
        c = config
        self.query = nn.Linear(c.width, c.width)
        self.key = nn.Linear(c.width, c.width)
        self.offset = nn.Linear(c.width, 2)
        self.half_patch = 0.5 / grid
        self.point_proj = Mlp(2 * c.num_views, c.width, c.width)
        centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
        v, u = torch.meshgrid(centres, centres, indexing='ij')  # patches are laid out row by row
        self.register_buffer('centres', torch.stack([u.flatten(), v.flatten()], -1), persistent=False)

    def forward(self, patches, language):
        """patches (B, V, P, D), language token (B, D) -> logits (B, V, P), gaze points (B, V, 2)."""
        logits = torch.einsum('bvpd,bd->bvp', self.key(patches), self.query(language)) / patches.shape[-1] ** 0.5
        spots = self.centres + self.half_patch * torch.tanh(self.offset(patches))  # (B, V, P, 2)
        return logits, (logits.softmax(-1)[..., None] * spots).sum(-2)


def gaze_loss(logits, points, mask, patch_size):
    """(cross-entropy of the gaze against the object's share of each patch + L1 of the gaze point to the
    object's centroid, the gaze's mass on patches the object covers), averaged over the views that see
    it; mask (B, V, S, S) in [0, 1]."""
    share = F.avg_pool2d(mask.flatten(0, 1)[:, None], patch_size).reshape(logits.shape)
    total = share.sum(-1)
    seen = (total > 0).float()
    target = share / total.clamp(min=1e-6)[..., None]
    count = seen.sum().clamp(min=1)
    size = mask.shape[-1]
    axis = (torch.arange(size, dtype=mask.dtype, device=mask.device) + 0.5) / size
    area = mask.sum((-2, -1)).clamp(min=1e-6)
    centroid = torch.stack([(mask.sum(-2) * axis).sum(-1) / area, (mask.sum(-1) * axis).sum(-1) / area], -1)
    cross_entropy = -(target * logits.log_softmax(-1)).sum(-1)
    loss = ((cross_entropy + (points - centroid).abs().sum(-1)) * seen).sum() / count
    inside = ((logits.softmax(-1) * (share > 0)).sum(-1) * seen).sum() / count
    return loss, inside


def camera_loss(pred, target):
    """Huber loss over the 9 camera parameters; q and -q are one rotation, the target takes the nearer sign."""
    sign = torch.where((pred[..., :4] * target[..., :4]).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    return F.huber_loss(pred, torch.cat([target[..., :4] * sign, target[..., 4:]], dim=-1))


def depth_loss(depth, confidence, target, valid, alpha):
    """VGGT's depth loss over valid pixels: c |D - D*| + c |grad D - grad D*| - alpha log c."""
    v = valid.float()
    loss = ((confidence * (depth - target).abs() - alpha * confidence.log()) * v).sum() / v.sum().clamp(min=1)
    for dim in (-1, -2):
        n = depth.shape[dim] - 1
        pair = v.narrow(dim, 1, n) * v.narrow(dim, 0, n)
        error = (depth.diff(dim=dim) - target.diff(dim=dim)).abs()
        loss = loss + (confidence.narrow(dim, 1, n) * error * pair).sum() / pair.sum().clamp(min=1)
    return loss


@register_policy('vga')
class VGAPolicy(Policy):
    """VGA: geometry backbone, PVM action head, camera and depth heads for joint training (Sec. 4)."""

    config_class = VGAConfig

    def __init__(self, config, stats=None, embedder=None):
        """embedder: an object with embed(str) -> (text_dim,) (default: the packaged all-MiniLM-L6-v2)."""
        super().__init__(config, stats)
        c = config
        self.encoder = make_encoder(c.encoder, c.image_size, c.patch_size, c.encoder_dim)
        self.processor = VGAProcessor(c, stats, embedder, self.encoder.mean, self.encoder.std)
        self.stats = self.processor.normalizer.stats  # checked, JSON-able
        self.vision_proj = Mlp(c.encoder_dim, c.width, c.width)
        self.language_proj = Mlp(c.text_dim, c.width, c.width)
        self.state_proj = Mlp(c.state_dim, c.width, c.width)
        self.camera_queries = nn.Parameter(torch.randn(c.num_views, c.camera_tokens, c.width) * 0.02)
        self.action_queries = nn.Parameter(torch.randn(c.chunk_size, c.width) * 0.02)
        grid = c.image_size // c.patch_size
        self.register_buffer('positions', sincos_2d(grid, grid, c.width), persistent=False)
        self.register_buffer('shared_mask', group_mask([1, 1, c.chunk_size]), persistent=False)
        self.backbone = AlternatingAttention(c)
        self.action_head = ActionHead(c)
        self.camera_head = CameraHead(c) if c.use_camera_head else None
        self.depth_head = DepthHead(c, grid) if c.use_depth_head else None
        self.gaze_head = GazeHead(c, grid) if c.use_gaze_head else None

    def _backbone(self, inputs):
        """Model inputs -> (every backbone layer's output (B, T, D), the gaze head's (logits, points) or None)."""
        c = self.config
        device = self.action_queries.device
        if 'patch_tokens' in inputs:  # a frozen encoder's cached output
            tokens = inputs['patch_tokens'].to(device).flatten(0, 1)
        else:
            tokens = self.encoder(inputs['pixels'].to(device).flatten(0, 1))
        b = len(inputs['state'])
        patches = (self.vision_proj(tokens) + self.positions).reshape(b, c.num_views, -1, c.width)
        views = torch.cat([self.camera_queries.expand(b, -1, -1, -1), patches], 2)
        language = self.language_proj(inputs['language'].to(device))
        state = self.state_proj(inputs['state'].to(device))
        gaze = None
        if self.gaze_head is not None:
            gaze = self.gaze_head(patches, language)
            state = state + self.gaze_head.point_proj(gaze[1].flatten(1))
        shared = torch.cat([language[:, None], state[:, None], self.action_queries.expand(b, -1, -1)], dim=1)
        x = torch.cat([views.flatten(1, 2), shared], dim=1)
        return self.backbone(x, c.num_views, views.shape[2], self.shared_mask), gaze

    def _view_tokens(self, x):
        """(B, T, D) -> the views' tokens (B, V, camera_tokens + P, D)."""
        c = self.config
        return x[:, : -(c.chunk_size + 2)].reshape(len(x), c.num_views, -1, c.width)

    def forward(self, batch):
        """Eq. 7: {'loss', 'action', and 'camera' / 'depth' / 'gaze' where the head is on and the batch has
        targets; with 'gaze' also 'gaze_inside', the gaze's mass on the object's patches (a measure, not a loss)}."""
        c = self.config
        inputs = self.processor(batch)
        device = self.action_queries.device
        if self.training and c.augment_shift > 0 and 'pixels' in inputs:
            inputs = self._shifted(inputs)
        layers, gaze = self._backbone(inputs)
        losses = {'action': F.l1_loss(self.action_head(layers), inputs['action'].to(device))}
        loss = losses['action']
        if self.camera_head is not None and 'camera' in inputs:
            cameras = self.camera_head(self._view_tokens(layers[-1])[:, :, 0])
            losses['camera'] = camera_loss(cameras, inputs['camera'].to(device))
            loss = loss + c.camera_loss_weight * losses['camera']
        if self.depth_head is not None and 'depth' in inputs:
            tokens = [self._view_tokens(layers[i])[:, :, c.camera_tokens :].flatten(0, 1) for i in dpt_layers(c.depth)]
            depth, confidence = self.depth_head(tokens)
            target, valid = (inputs[k].to(device).flatten(0, 1) for k in ('depth', 'depth_valid'))
            losses['depth'] = depth_loss(depth, confidence, target, valid, c.depth_confidence_alpha)
            loss = loss + c.depth_loss_weight * losses['depth']
        if gaze is not None and 'gaze' in inputs:
            losses['gaze'], inside = gaze_loss(*gaze, inputs['gaze'].to(device), c.patch_size)
            loss = loss + c.gaze_loss_weight * losses['gaze']
            losses['gaze_inside'] = inside.detach()
        return {'loss': loss, **losses}

    def _shifted(self, inputs):
        """inputs with every view randomly translated (training augmentation), depth targets alike."""
        pixels = inputs['pixels']
        keys = [k for k in ('depth', 'depth_valid', 'gaze') if k in inputs]
        extra = [inputs[k].flatten(0, 1)[:, None] for k in keys]
        shifted, extra = random_shift(pixels.flatten(0, 1), self.config.augment_shift, extra)
        out = {**inputs, 'pixels': shifted.reshape(pixels.shape)}
        for key, value in zip(keys, extra):
            out[key] = value.reshape(inputs[key].shape)
        return out

    @torch.no_grad()
    def gaze(self, batch):
        """The gaze head's (weights over each view's patches (B, V, P), gaze points (B, V, 2)) for a raw batch."""
        if self.gaze_head is None:
            raise ValueError('this VGA policy has no gaze head (use_gaze_head: false)')
        inputs = {
            k: v for k, v in self.processor(batch).items() if k in ('pixels', 'patch_tokens', 'state', 'language')
        }
        logits, points = self._backbone(inputs)[1]
        return logits.softmax(-1), points

    @torch.no_grad()
    def select_action_chunk(self, observation):
        """Decoupled inference (Sec. 4.3): backbone and action head only -> numpy (C, action_dim)."""
        chunk = self.action_head(self._backbone(self.processor.observation(observation))[0])[0]
        return self.processor.actions(chunk, np.asarray(observation['state'], np.float32))

    def load_pretrained(self):
        """VGGT weights from config.vggt_weights, when set."""
        if self.config.vggt_weights:
            self.load_vggt(self.config.vggt_weights)

    def load_vggt(self, directory):
        """Backbone layers 2i, 2i+1 <- VGGT's aggregator.frame_blocks.i, .global_blocks.i (i < depth / 2);
        each view's camera queries <- VGGT's camera token, then its register tokens (first view: VGGT's
        first-frame tokens, other views: the others'). The patch embedding and VGGT's heads are not used."""
        directory = Path(directory)
        found = [directory / name for name in ('model.safetensors', 'model.pt') if (directory / name).is_file()]
        if not found:
            raise FileNotFoundError(
                f'vggt_weights {str(directory)!r}: no model.safetensors or model.pt there '
                '(expected the facebook/VGGT-1B checkpoint, keys aggregator.frame_blocks.*, aggregator.global_blocks.*)'
            )
        path = found[0]
        source = load_file(path) if path.suffix == '.safetensors' else torch.load(path, map_location='cpu')
        backbone = {}
        for key, value in self.backbone.state_dict().items():
            _, index, rest = key.split('.', 2)  # layers.<index>.<rest>
            kind = 'frame' if int(index) % 2 == 0 else 'global'
            backbone[key] = (f'aggregator.{kind}_blocks.{int(index) // 2}.{rest}', value.shape)
        width = self.config.width
        wanted = [*backbone.values(), ('aggregator.camera_token', (1, 2, 1, width))]
        missing = [name for name, _ in wanted + [('aggregator.register_token', None)] if name not in source]
        wrong = [
            f'{n} {tuple(source[n].shape)}, need {tuple(s)}' for n, s in wanted if n in source and source[n].shape != s
        ]
        if missing or wrong:
            raise ValueError(
                f'{path} does not fit VGA width {width}, depth {self.config.depth}: '
                f'missing {missing[:3]}{" ..." if len(missing) > 3 else ""} ({len(missing)} keys), '
                f'wrong shapes {wrong[:3]}'
            )
        self.backbone.load_state_dict({key: source[name] for key, (name, _) in backbone.items()})
        camera, registers = source['aggregator.camera_token'][0], source['aggregator.register_token'][0]
        special = torch.cat([camera, registers], dim=1)[:, : self.config.camera_tokens]  # (2, n, D)
        with torch.no_grad():
            self.camera_queries[:1, : special.shape[1]] = special[0]
            self.camera_queries[1:, : special.shape[1]] = special[1]
