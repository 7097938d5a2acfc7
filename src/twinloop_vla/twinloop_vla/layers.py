"""Transformer building blocks shared by the policies.

`Block` mirrors VGGT's (and DINOv2's) pre-norm block parameter for parameter - norm1, attn.qkv,
attn.q_norm, attn.k_norm, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma - so that
VGGT's frame and global blocks load into it by renaming keys only (see modeling_vga). VGGT's
rotary position embedding is not reproduced: positions enter as fixed 2D sin-cos embeddings added
to the patch tokens (`sincos_2d`).
"""

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """Two linear layers with a GELU between them."""

    def __init__(self, dim_in, hidden, dim_out):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x):
        """(..., dim_in) -> (..., dim_out)."""
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual scale (CaiT, DINOv2, VGGT)."""

    def __init__(self, dim, init):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x):
        """x scaled per channel."""
        return x * self.gamma


def _heads(x, heads):
    """(B, N, D) -> (B, heads, N, D / heads)."""
    b, n, d = x.shape
    return x.reshape(b, n, heads, d // heads).transpose(1, 2)


def _merge(x):
    """(B, heads, N, d) -> (B, N, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Multi-head self-attention with optional per-head query/key LayerNorm (VGGT's qk_norm)."""

    def __init__(self, dim, heads, qk_norm=True):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None, cache=None):
        """(B, N, D) -> (B, N, D); mask: (N, M) bool, True where a token may attend (M = N, or with a cache the
        cached and the new tokens). cache: a dict of this layer's keys and values, extended by x's (incremental
        decoding: x holds only the new tokens)."""
        q, k, v = (_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = self.q_norm(q), self.k_norm(k)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache['k'], k], dim=2), torch.cat([cache['v'], v], dim=2)
            cache['k'], cache['v'] = k, v
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))


class CrossAttention(nn.Module):
    """Attention(Q = x, K = V = context) with LayerNorm on both inputs, no residual."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, context):
        """x (B, N, D) attends to context (B, M, D) -> (B, N, D)."""
        q = _heads(self.q(self.norm_q(x)), self.heads)
        k, v = (_heads(t, self.heads) for t in self.kv(self.norm_kv(context)).chunk(2, dim=-1))
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, dim, heads, mlp_ratio=4.0, qk_norm=True, layer_scale=0.01):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qk_norm)
        self.ls1 = LayerScale(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim)
        self.ls2 = LayerScale(dim, layer_scale)

    def forward(self, x, mask=None, cache=None):
        """(B, N, D) -> (B, N, D); mask and cache as Attention takes them."""
        x = x + self.ls1(self.attn(self.norm1(x), mask, cache))
        return x + self.ls2(self.mlp(self.norm2(x)))


def sincos_2d(height, width, dim):
    """Fixed 2D sin-cos position embeddings of a height x width grid, row-major: (height * width, dim)."""
    if dim % 4:
        raise ValueError(f'sin-cos position embeddings need a width divisible by 4, got {dim}')
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
    parts = [f(c.reshape(-1, 1).float() * freqs) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=1)


def attention_weights(attention, x, mask=None):
    """The softmax weights (B, heads, N, N) an Attention module gives x (B, N, D), already normalised as its
    block feeds it (mask: (N, N) bool, True where a token may attend)."""
    q, k, _ = (_heads(t, attention.heads) for t in attention.qkv(x).chunk(3, dim=-1))
    q, k = attention.q_norm(q), attention.k_norm(k)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float('-inf'))
    return scores.softmax(-1)


def timestep_embedding(t, dim):
    """Sinusoidal embeddings (B, dim) of integer diffusion timesteps t (B,)."""
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    angles = t.float()[:, None] * freqs.to(t.device)[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
