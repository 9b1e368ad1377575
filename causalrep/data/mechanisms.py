"""The ten image mechanisms of Learning Independent Causal Mechanisms (Parascandolo et al. 2018; paper 004, App. C).

Eight translations by 4 pixels (up, down, left, right and the four diagonals; vacated pixels are zero, nothing
wraps), contrast inversion x -> 1 − x, and additive Gaussian noise of variance 0.25 (std 0.5) followed by
clamping to [0, 1]. Every mechanism maps a (B, 1, H, W) float tensor in [0, 1] to one of the same shape (any
(..., H, W) works) and takes an optional torch.Generator, which only the noise uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError

SHIFT = 4  # pixels per translation
NOISE_STD = 0.5  # variance 0.25


def translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift content by dy rows (+ = down), dx columns (+ = right), zero fill: out[i, j] = x[i − dy, j − dx]."""
    h, w = x.shape[-2:]
    m = max(abs(dy), abs(dx))
    xp = F.pad(x, (m, m, m, m))  # zero border, so content shifted out is dropped and the vacated side is 0
    return xp[..., m - dy:m - dy + h, m - dx:m - dx + w]


def invert(x: torch.Tensor) -> torch.Tensor:
    """Contrast inversion: 1 − x."""
    return 1.0 - x


def add_noise(x: torch.Tensor, generator: torch.Generator | None = None, *, clamp: bool = True) -> torch.Tensor:
    """x + N(0, 0.25) per pixel, clamped to [0, 1] (clamp=False returns the sum, for checking the noise)."""
    device = x.device if generator is None else generator.device  # draw where the generator lives
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
    y = x + NOISE_STD * noise
    return y.clamp(0.0, 1.0) if clamp else y


@dataclass(frozen=True)
class Mechanism:
    """A named mechanism: `mech(x, generator=None)` -> the transformed batch."""

    name: str
    fn: Callable[..., torch.Tensor]
    uses_generator: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim < 2:
            raise DataError(f"mechanism {self.name}: expected images (..., H, W); got shape {tuple(x.shape)}")
        return self.fn(x, generator) if self.uses_generator else self.fn(x)


def _shift(dy: int, dx: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: translate(x, dy, dx)


S = SHIFT
# Index = mechanism id (the label returned by ICMPairs). Rows grow downwards, so "up" is dy = −4.
MECHANISMS: tuple[Mechanism, ...] = (
    Mechanism("up", _shift(-S, 0)),
    Mechanism("down", _shift(S, 0)),
    Mechanism("left", _shift(0, -S)),
    Mechanism("right", _shift(0, S)),
    Mechanism("up_left", _shift(-S, -S)),
    Mechanism("up_right", _shift(-S, S)),
    Mechanism("down_left", _shift(S, -S)),
    Mechanism("down_right", _shift(S, S)),
    Mechanism("invert", invert),
    Mechanism("noise", add_noise, uses_generator=True),
)
MECHANISM_NAMES: tuple[str, ...] = tuple(m.name for m in MECHANISMS)


def mechanism(name: str) -> Mechanism:
    """The mechanism called `name`."""
    if name not in MECHANISM_NAMES:
        raise DataError(f"unknown mechanism {name!r}; valid: {', '.join(MECHANISM_NAMES)}")
    return MECHANISMS[MECHANISM_NAMES.index(name)]


def apply_mechanisms(x: torch.Tensor, ids, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply mechanism ids[b] to image x[b] for a (B, 1, H, W) batch and (B,) ids in 0..9 (one pass per id)."""
    ids = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids, dtype=torch.long)
    if ids.ndim != 1 or len(ids) != len(x):
        raise DataError(f"mechanism ids must have shape ({len(x)},); got {tuple(ids.shape)}")
    if len(ids) and (ids.min() < 0 or ids.max() >= len(MECHANISMS)):
        raise DataError(f"mechanism ids must lie in 0..{len(MECHANISMS) - 1}")
    out = torch.empty_like(x)
    ids = ids.to(x.device)
    for k, mech in enumerate(MECHANISMS):  # fixed order: the noise draws are deterministic given the generator
        rows = torch.nonzero(ids == k).flatten()
        if len(rows):
            out[rows] = mech(x[rows], generator)
    return out
