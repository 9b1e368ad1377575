"""The ASAE attention encoder (000 sec 2, "Attention Encoders"): patch tokens with coordinates, one attention layer."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import bottleneck_size, conv_features, mlp


def grid_coords(gh: int, gw: int, centres_h: torch.Tensor, centres_w: torch.Tensor, size: int) -> torch.Tensor:
    """(gh*gw, 2) patch-centre coordinates (x, y) in [-1, 1], row-major like the token order (CoordConv, 000 [20])."""
    ys = centres_h / size * 2 - 1
    xs = centres_w / size * 2 - 1
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(gh * gw, 2)


class PatchTokens(nn.Module):
    """x: (B, C, R, R) -> tokens (B, N, E): overlapping patch x patch patches (stride `stride`, zero padding
    (patch - stride) // 2, so 4x4 patches with stride 2 tile a 64x64 image as a 32x32 grid), each flattened,
    its centre (x, y) concatenated "to break the translation invariance" and "processed independently" by
    one shared MLP (000 sec 2)."""

    def __init__(self, *, in_channels: int, resolution: int, patch: int, stride: int, embed_dim: int,
                 hidden: Sequence[int]):
        super().__init__()
        self.patch, self.stride, self.pad = patch, stride, (patch - stride) // 2
        side = (resolution + 2 * self.pad - patch) // stride + 1
        if side < 1:
            raise ValueError(f"patch {patch} does not fit a {resolution}x{resolution} image")
        self.grid = (side, side)
        centres = torch.arange(side, dtype=torch.float32) * stride - self.pad + patch / 2
        self.register_buffer("coords", grid_coords(side, side, centres, centres, resolution), persistent=False)
        self.net = mlp(in_channels * patch * patch + 2, hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = F.unfold(x, self.patch, padding=self.pad, stride=self.stride).transpose(1, 2)  # (B, N, C*p*p)
        xy = self.coords.to(p.dtype).expand(p.shape[0], -1, -1)  # (B, N, 2)
        return self.net(torch.cat([p, xy], dim=-1))


class ConvTokens(nn.Module):
    """x -> tokens (B, N, E): the pixels of the 001 conv backbone's features (N = s*s, s = R / 2^pools),
    each with its (x, y) concatenated and linearly embedded. A variant for conv encoder specs: 000 attends
    over raw patches (PatchTokens)."""

    def __init__(self, *, in_channels: int, resolution: int, blocks: int, channels: int, embed_dim: int,
                 groups: int = 8):
        super().__init__()
        self.features = conv_features(in_channels=in_channels, blocks=blocks, channels=channels, groups=groups)
        side = bottleneck_size(resolution, blocks)
        self.grid = (side, side)
        step = resolution / side
        centres = (torch.arange(side, dtype=torch.float32) + 0.5) * step
        self.register_buffer("coords", grid_coords(side, side, centres, centres, resolution), persistent=False)
        self.net = nn.Linear(channels + 2, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).flatten(2).transpose(1, 2)  # (B, N, C)
        return self.net(torch.cat([f, self.coords.to(f.dtype).expand(f.shape[0], -1, -1)], dim=-1))


class AttentionEncoder(nn.Module):
    """tokens (B, N, E) -> latents (B, D): ONE attention layer with H heads (000 sec 2: "we propose only
    using a single self-attention layer"); head h has a learned query q_h (000 is inspired by RIM [21],
    whose mechanisms query the input), keys and values are linear maps of the layer-normed tokens, and its
    softmax runs over all N patches on its own ("the attention heads non-competitively extract features
    using a soft self-attention mechanism across all patches"). Head h's output o_h: (B, E/H) goes through
    its own MLP to D/H latent dims ("each head encodes the information it extracted into {3, 2, 1}
    dimensions ... such that when concatenated the latent vector has 12 dimensions")."""

    def __init__(self, *, tokens: nn.Module, embed_dim: int, heads: int, latent_dim: int,
                 head_hidden: Sequence[int] = (64, 64, 64)):
        super().__init__()
        if latent_dim % heads:
            raise ValueError(f"latent_dim {latent_dim} is not divisible by heads={heads}")
        if embed_dim % heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by heads={heads}")
        self.tokens, self.heads, self.head_dim = tokens, heads, embed_dim // heads
        self.grid: tuple[int, int] = tokens.grid
        self.norm = nn.LayerNorm(embed_dim)
        self.key = nn.Linear(embed_dim, embed_dim)
        self.value = nn.Linear(embed_dim, embed_dim)
        self.query = nn.Parameter(torch.randn(heads, self.head_dim))  # one learned query per head
        self.out = nn.ModuleList(mlp(self.head_dim, head_hidden, latent_dim // heads) for _ in range(heads))

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights (B, H, N), each row a softmax over the N patches; head outputs (B, H, E/H))."""
        t = self.norm(self.tokens(x))
        b, n, _ = t.shape
        k = self.key(t).view(b, n, self.heads, self.head_dim)
        v = self.value(t).view(b, n, self.heads, self.head_dim)
        logits = torch.einsum("bnhd,hd->bhn", k, self.query.to(k.dtype)) / math.sqrt(self.head_dim)
        w = logits.float().softmax(dim=-1).to(v.dtype)  # softmax over patches, per head: non-competitive
        return w, torch.einsum("bhn,bnhd->bhd", w, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, o = self.attend(x)
        return torch.cat([f(o[:, h]) for h, f in enumerate(self.out)], dim=1)  # q = [q_1, ..., q_H]

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Each head's attention over the patch grid: (B, H, gh, gw), non-negative, summing to 1."""
        w, _ = self.attend(x)
        return w.view(w.shape[0], self.heads, *self.grid)
