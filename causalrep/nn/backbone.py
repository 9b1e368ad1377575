"""The conv backbone of 001 appendix A.2.1: conv + GroupNorm + Mish; max-pool down, bilinear up."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear layers with Mish between them (no activation after the last)."""
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.Mish())
    return nn.Sequential(*layers)


class ConvBlock(nn.Sequential):
    """conv (stride 1, 'same' padding) -> GroupNorm -> Mish (001 A.2.1)."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel: int = 3, groups: int = 8):
        if out_channels % groups:
            raise ValueError(f"channels {out_channels} not divisible by GroupNorm groups {groups}")
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2),
                         nn.GroupNorm(groups, out_channels), nn.Mish())


def pool_after(blocks: int) -> list[bool]:
    """Encoder: a 2x2 max-pool right after every third conv, starting with the first (A.2.1)."""
    return [i % 3 == 0 for i in range(blocks)]


def upsample_before(blocks: int) -> list[bool]:
    """Decoder: the mirror of the encoder, a 2x bilinear upsampling before every third conv (A.2.1).

    Decoder block j mirrors encoder block blocks-1-j, so 12 blocks upsample before 2, 5, 8, 11.
    """
    return [(blocks - 1 - j) % 3 == 0 for j in range(blocks)]


def bottleneck_size(resolution: int, blocks: int) -> int:
    """Side of the feature map after the encoder (= side of the decoder's first features)."""
    n = sum(pool_after(blocks))
    if resolution % (2 ** n):
        raise ValueError(f"resolution {resolution} is not divisible by 2^{n} ({blocks} blocks pool {n} times)")
    return resolution // 2 ** n


def conv_features(*, in_channels: int, blocks: int, channels: int, groups: int = 8) -> nn.Sequential:
    """The encoder's conv blocks: first conv 5x5, then 3x3, a 2x2 max-pool after every third (A.2.1)."""
    layers: list[nn.Module] = []
    for i, pool in enumerate(pool_after(blocks)):
        layers.append(ConvBlock(in_channels if i == 0 else channels, channels, kernel=5 if i == 0 else 3,
                                groups=groups))
        if pool:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """x: (B, C, R, R) -> (B, out_features); R / 2^ceil(blocks/3) features flattened into an MLP."""

    def __init__(self, *, in_channels: int, resolution: int, blocks: int, channels: int, out_features: int,
                 hidden: Sequence[int] = (), groups: int = 8):
        super().__init__()
        side = bottleneck_size(resolution, blocks)
        self.features = conv_features(in_channels=in_channels, blocks=blocks, channels=channels, groups=groups)
        self.head = mlp(channels * side * side, hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class Upsample2x(nn.Module):
    """2x bilinear upsampling (align_corners=False, as torch.nn.Upsample's default)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def decoder_stage(blocks: range, total: int, channels: int, groups: int) -> nn.Sequential:
    """The conv blocks with global indices `blocks` of a `total`-block decoder, with their upsamplings."""
    ups = upsample_before(total)
    layers: list[nn.Module] = []
    for j in blocks:
        if ups[j]:
            layers.append(Upsample2x())
        layers.append(ConvBlock(channels, channels, groups=groups))
    return nn.Sequential(*layers)


class ConvDecoder(nn.Module):
    """u: (B, latent_dim) -> image logits (B, C, R, R): MLP to (channels, s, s), blocks, 3x3 output conv."""

    def __init__(self, *, latent_dim: int, out_channels: int, resolution: int, blocks: int, channels: int,
                 hidden: Sequence[int] = (), groups: int = 8):
        super().__init__()
        self.side = bottleneck_size(resolution, blocks)
        self.channels = channels
        self.head = mlp(latent_dim, hidden, channels * self.side * self.side)
        self.body = decoder_stage(range(blocks), blocks, channels, groups)
        self.out = nn.Conv2d(channels, out_channels, 3, padding=1)  # to pixels: no norm, no activation

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        v = self.head(u).view(-1, self.channels, self.side, self.side)
        return self.out(self.body(v))
