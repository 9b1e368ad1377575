"""Procedural dSprites (Matthey et al. 2017): the original 3×6×40×32×32 factor grid, rendered by implicit-shape tests."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .base import DATASETS, GroundTruthDataset

# The original's latents are (color, shape, scale, orientation, posX, posY); color has a single value
# (white), so it carries no information and is dropped here. The other values match latents_values.
SHAPES = ("square", "ellipse", "heart")  # index order of the original file
SCALES = np.linspace(0.5, 1.0, 6)
# 40 values over [0, 2π] with both endpoints, as in the original: index 0 and 39 are the same pose.
ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, 40)
POSITIONS = np.linspace(0.0, 1.0, 32)

CANVAS = 64  # native resolution; smaller resolutions are average-pooled from it
# Position 0..1 maps to sprite centres at pixel coordinates POS_LO..POS_HI (continuous coordinates: pixel j
# covers [j, j+1], centre j+0.5). Like the original (centres ≈ 10..54), a max-scale sprite stays
# (nearly) inside the canvas: only the corners of a rotated square at the border are clipped.
POS_LO, POS_HI = 10.0, 54.0
# Sprite sizes at scale 1.0, in pixels (the original's largest sprites are ≈ 20 px wide on 64 px):
SQUARE_HALF = 9.0  # square side 18 px
ELLIPSE_A, ELLIPSE_B = 10.0, 5.0  # semi-axes: 20 × 10 px, elongated along x at orientation 0
# Heart: (X²+Y²−1)³ − X²Y³ ≤ 0 in heart units; X ∈ [−1.139, 1.139], Y ∈ [−1, 1.2367] (lobes up, tip
# down). One unit = HEART_UNIT px (≈ 20.5 px wide); Y is shifted so the bounding box is centred on the
# sprite position. Its area is ≈ 3.66197 units² (polar quadrature; not 3π/2).
HEART_UNIT = 9.0
HEART_Y_SHIFT = (1.2367 - 1.0) / 2.0
CHUNK = 4096  # images rendered per step: 4096 × 64 × 64 float32 ≈ 67 MB per temporary


@DATASETS.register("dsprites")
class DSprites(GroundTruthDataset):
    """dSprites with factors (shape, scale, orientation, posX, posY); 737,280 images, 1 channel.

    At resolution 64 images are binary {0, 1} like the original (a pixel is lit iff its centre lies
    inside the sprite). At a smaller power-of-two resolution R the 64×64 render is average-pooled by
    64/R, so pixels carry anti-aliased grey levels (the fraction of lit sub-pixels).
    """

    factor_names = ("shape", "scale", "orientation", "posX", "posY")
    factor_sizes = (3, 6, 40, 32, 32)
    factor_value_names = {"shape": SHAPES}
    channels = 1

    def __init__(self, *, resolution: int = 64):
        allowed = (8, 16, 32, 64)
        if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool) or resolution not in allowed:
            raise DataError(
                f"dsprites: resolution {resolution!r} is not supported; allowed: a power of two "
                f"between 8 and 64 inclusive ({', '.join(map(str, allowed))})"
            )
        self.resolution = int(resolution)

    def images(self, factors: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
        """(N, 1, R, R) float32 in [0, 1] on `device` (default CPU) for (N, 5) factor indices."""
        factors = np.asarray(factors, dtype=np.int64)
        if factors.ndim != 2 or factors.shape[1] != len(self.factor_sizes):
            raise DataError(f"dsprites: factors must have shape (N, 5); got {factors.shape}")
        if (factors < 0).any() or (factors >= np.asarray(self.factor_sizes)).any():
            raise DataError(f"dsprites: factor indices out of range; sizes are {self.factor_sizes}")
        device = torch.device("cpu") if device is None else torch.device(device)
        out = torch.empty(len(factors), 1, self.resolution, self.resolution, dtype=torch.float32, device=device)
        for start in range(0, len(factors), CHUNK):
            img = _render(factors[start:start + CHUNK], device)  # (n, 1, 64, 64) binary
            if self.resolution != CANVAS:
                img = F.avg_pool2d(img, CANVAS // self.resolution)  # (n, 1, R, R) grey levels
            out[start:start + CHUNK] = img
        return out


def _render(factors: np.ndarray, device: torch.device) -> torch.Tensor:
    """(n, 1, 64, 64) float32 {0, 1}: a pixel is lit iff its centre is inside the sprite."""
    out = torch.zeros(len(factors), CANVAS, CANVAS, dtype=torch.bool, device=device)  # (n, 64, 64)
    # One group per shape, so each image evaluates only its own implicit function.
    for k, inside in enumerate((_square, _ellipse, _heart)):
        rows = np.flatnonzero(factors[:, 0] == k)
        if len(rows):
            x, y = _sprite_coords(factors[rows], device)
            out[torch.as_tensor(rows, device=device)] = inside(x, y)
    return out.unsqueeze(1).to(torch.float32)


def _sprite_coords(factors: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres of the canvas in each sprite's frame: two (m, 64, 64) tensors, px at scale 1, +y up."""
    # Factor indices -> values, as (m, 1, 1) tensors that broadcast against the (64, 64) canvas.
    def value(table: np.ndarray, col: int) -> torch.Tensor:
        return torch.as_tensor(table[factors[:, col]], dtype=torch.float32, device=device).view(-1, 1, 1)

    scale, theta = value(SCALES, 1), value(ORIENTATIONS, 2)
    cx = POS_LO + (POS_HI - POS_LO) * value(POSITIONS, 3)  # posX -> column (rightwards)
    cy = POS_LO + (POS_HI - POS_LO) * value(POSITIONS, 4)  # posY -> row (downwards)
    centres = torch.arange(CANVAS, dtype=torch.float32, device=device) + 0.5
    dx = centres.view(1, 1, CANVAS) - cx  # (m, 1, 64): offset along columns
    dy = cy - centres.view(1, CANVAS, 1)  # (m, 64, 1): offset along rows, flipped so +y is up
    # Rotate by −θ (so the sprite appears rotated by +θ, counter-clockwise) and undo the scale.
    cos, sin = torch.cos(theta) / scale, torch.sin(theta) / scale
    return cos * dx + sin * dy, cos * dy - sin * dx


# Inside-tests on (m, 64, 64) sprite coordinates (pixels at scale 1, +y up) -> (m, 64, 64) bool.
def _square(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.maximum(x.abs(), y.abs()) <= SQUARE_HALF


def _ellipse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = x / ELLIPSE_A, y / ELLIPSE_B
    return x * x + y * y <= 1.0


def _heart(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    hx, hy = x / HEART_UNIT, y / HEART_UNIT + HEART_Y_SHIFT  # sprite origin = bbox centre
    hx2, hy2 = hx * hx, hy * hy
    r = hx2 + hy2 - 1.0
    return r * r * r <= hx2 * hy2 * hy
