"""Pendulum (CausalVAE, Yang et al. 2021; paper 003): (pendulum angle, light angle) cause (shadow position, length).

A pendulum hangs from a fixed pivot; a point light on an arc around the pivot casts its shadow onto a horizontal
ground line. The two causes are sampled on a grid; the two effects are deterministic functions of them (the
shadow geometry below), so the image is a function of the causes only.

Grid and scene follow the generator of the CausalVAE authors (huawei-noah/trustworthyAI,
research/CausalVAE/causal_data/pendulum.py): pendulum angle i·π/200 rad for i = −40..43 (−36°..38.7°, 84 values)
and light angle j·π/200 rad for j = 60..147 (54°..132.3°, 88 values; they skip j = 100 only because their
directional-light formula divides by tan 90°, which this point-light geometry does not); colours of their
matplotlib drawing (white background, black rod, 'firebrick' ball, 'orange' light, black shadow bar). Two changes:
their light is a directional source (parallel rays at angle φ, the sun drawn where the ray through the pivot meets
the top of the frame) and their shadow is the projection of a segment clamped to a minimum length of 3; here the
light is a point source on an arc around the pivot and the shadow is the exact one of the rod and the ball (disc),
whose width keeps it at least ≈ 3.06 units long. The code is our own.

Labels vs factors (what the metrics see). `factor_sizes` = (84, 88) covers the causes only: flat indices,
`sample_factors`, `index_to_factors` and `images(factors)` use (N, 2) cause indices, and `num_factors` is 2. The
variables of the causal graph are all four `factor_names`; `labels(factors)` (grid indices) and `factors(values)`
(continuous cause values) return the (N, 4) float64 vector (pendulum_angle °, light_angle °, shadow_position,
shadow_length), the last two in scene units (the canvas is [0, 20]² units, x right, y up). Metrics that score
latents against ground truth should use these 4 labels as the factors of variation (continuous, 2 of them
deterministic functions of the other 2), and `true_graph` is the DAG over the same 4 names.
"""
from __future__ import annotations

from typing import Mapping

import networkx as nx
import numpy as np
import torch

from ..errors import DataError
from .base import DATASETS, GroundTruthDataset

# Cause grids in degrees (CausalVAE's i·π/200 and j·π/200 rad, i.e. 0.9° steps).
PENDULUM_ANGLES = 0.9 * np.arange(-40, 44)  # 84 values, −36°..38.7°; 0 = hanging down, + = ball to the right
LIGHT_ANGLES = 0.9 * np.arange(60, 148)  # 88 values, 54°..132.3°; measured counter-clockwise from +x at the pivot
CAUSES = ("pendulum_angle", "light_angle")
EFFECTS = ("shadow_position", "shadow_length")

# Scene in units on the canvas [0, WORLD]², x right, y up (the image's row 0 is y = WORLD).
WORLD = 20.0
PIVOT_X, PIVOT_Y = 10.0, 9.0
ROD = 4.5  # pivot -> ball centre
BALL_R = 1.35
LIGHT_ARC = 9.0  # the light moves on the circle of this radius around the pivot
GROUND = 1.5  # the ground line y = GROUND, on which the shadow falls
# Drawing only (not part of the shadow geometry):
LIGHT_R = 1.5  # radius of the disc drawn at the light's position
ROD_HALF = 0.3  # half width of the rod
SHADOW_HALF = 0.4  # half thickness of the shadow bar, centred on the ground line
# Over the grid the shadow lies within x ∈ [2.31, 18.86] (position 4.41..16.52, length 3.06..9.35): always on canvas.

WHITE = (1.0, 1.0, 1.0)
ORANGE = (1.0, 165 / 255, 0.0)  # matplotlib 'orange'
BLACK = (0.0, 0.0, 0.0)
FIREBRICK = (178 / 255, 34 / 255, 34 / 255)  # matplotlib 'firebrick'
RESOLUTIONS = (32, 64, 96)  # 96: CausalVAE's 1-inch figures at 96 dpi
CHUNK = 512  # images per step: 512 × 3 × 96² float32 ≈ 57 MB


def light_position(light_angle) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the light for angles in degrees: on the arc of radius LIGHT_ARC around the pivot."""
    a = np.deg2rad(np.asarray(light_angle, dtype=np.float64))
    return PIVOT_X + LIGHT_ARC * np.cos(a), PIVOT_Y + LIGHT_ARC * np.sin(a)


def ball_centre(pendulum_angle) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the ball's centre for angles in degrees (0 = straight down, positive = to the right)."""
    t = np.deg2rad(np.asarray(pendulum_angle, dtype=np.float64))
    return PIVOT_X + ROD * np.sin(t), PIVOT_Y - ROD * np.cos(t)


def shadow(pendulum_angle, light_angle) -> tuple[np.ndarray, np.ndarray]:
    """The mechanisms: (shadow_position, shadow_length) on the ground line, float64, broadcast over the inputs.

    The shadow of the pendulum (rod from the pivot P to the ball centre C, plus the ball: a disc of radius
    BALL_R around C) cast by the point light L onto the line y = GROUND is the interval [lo, hi] with
      - the rod's shadow: from the pivot's projection x_P = L_x + (P_x − L_x)·(L_y − GROUND)/(L_y − P_y) to C's,
      - the ball's shadow: between the two rays from L tangent to the disc. With γ the angle of L→C from the
        downward vertical (positive towards +x) and α = asin(BALL_R/|C − L|), a ray at angle γ ± α from the
        vertical meets the ground at L_x + (L_y − GROUND)·tan(γ ± α).
    C's projection lies inside the ball's shadow, so the union is one interval: lo = min(x_P, ball's left end),
    hi = max(x_P, ball's right end); position = (lo + hi)/2 (its centre), length = hi − lo (its extent).
    Valid while the light is above the whole pendulum, which holds for all angles in the grids' ranges.
    """
    lx, ly = light_position(light_angle)
    cx, cy = ball_centre(pendulum_angle)
    drop = ly - GROUND  # height of the light above the ground
    pivot_x = lx + (PIVOT_X - lx) * drop / (ly - PIVOT_Y)
    gamma = np.arctan2(cx - lx, ly - cy)
    alpha = np.arcsin(BALL_R / np.hypot(cx - lx, cy - ly))
    left, right = lx + drop * np.tan(gamma - alpha), lx + drop * np.tan(gamma + alpha)
    lo, hi = np.minimum(pivot_x, left), np.maximum(pivot_x, right)
    return (lo + hi) / 2.0, hi - lo


@DATASETS.register("pendulum")
class Pendulum(GroundTruthDataset):
    """CausalVAE's pendulum: 84 × 88 = 7,392 RGB images over (pendulum_angle, light_angle).

    `factor_names` are the four variables of the causal graph; `factor_sizes` only the two causes (see the
    module docstring). `intervene` gives counterfactual ground truth and `render` draws any label vector, so
    images of interventions on the effects (a shadow the causes would not cast) can be drawn too.
    """

    factor_names = CAUSES + EFFECTS
    cause_names = CAUSES
    effect_names = EFFECTS
    factor_sizes = (len(PENDULUM_ANGLES), len(LIGHT_ANGLES))
    channels = 3

    def __init__(self, *, resolution: int = 64):
        if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool) \
                or resolution not in RESOLUTIONS:
            raise DataError(f"pendulum: resolution {resolution!r} is not supported; allowed: 32, 64, 96")
        self.resolution = int(resolution)

    @property
    def true_graph(self) -> nx.DiGraph:
        """Both causes -> both effects (003: (pendulum angle, light angle) -> (shadow location, shadow length))."""
        g = nx.DiGraph()
        g.add_nodes_from(self.factor_names)
        g.add_edges_from((c, e) for c in CAUSES for e in EFFECTS)
        return g

    @property
    def num_labels(self) -> int:
        return len(self.factor_names)

    def _check(self, factors: np.ndarray) -> np.ndarray:
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != 2 or not np.issubdtype(factors.dtype, np.integer):
            raise DataError(f"pendulum: factors must be integer cause indices of shape (N, 2); got "
                            f"{factors.dtype} {factors.shape}")
        if (factors < 0).any() or (factors >= np.asarray(self.factor_sizes)).any():
            raise DataError(f"pendulum: factor indices out of range; sizes are {self.factor_sizes}")
        return factors.astype(np.int64)

    def values(self, factors: np.ndarray) -> np.ndarray:
        """(N, 2) float64 cause values in degrees for (N, 2) grid indices."""
        f = self._check(factors)
        return np.stack([PENDULUM_ANGLES[f[:, 0]], LIGHT_ANGLES[f[:, 1]]], axis=1)

    def factors(self, values: np.ndarray) -> np.ndarray:
        """(N, 4) float64 label vectors for (N, 2) continuous cause values (degrees, within the grids' ranges)."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 2:
            raise DataError(f"pendulum: cause values must have shape (N, 2); got {v.shape}")
        _check_causes(v)
        return np.concatenate([v, np.stack(shadow(v[:, 0], v[:, 1]), axis=1)], axis=1)

    def labels(self, factors: np.ndarray) -> np.ndarray:
        """(N, 4) float64 (pendulum_angle, light_angle, shadow_position, shadow_length) for (N, 2) grid indices."""
        return self.factors(self.values(factors))

    def intervene(self, factors_or_values: np.ndarray, do: Mapping[str, object]) -> np.ndarray:
        """(N, 4) label vectors after do(name = value, ...), all entries of `do` applied jointly.

        The input is (N, 2) integer grid indices, (N, 2) float cause values in degrees, or (N, 4) float label
        vectors (only their causes are used: effects are always re-derived, so put all interventions of one
        counterfactual in a single `do`). A value is a scalar or an (N,) array. Intervened causes change the
        effects through `shadow`; an intervened effect is set as given and nothing else changes.
        """
        x = np.asarray(factors_or_values)
        if x.ndim == 2 and x.shape[1] == 2 and np.issubdtype(x.dtype, np.integer):
            causes = self.values(x)
        elif x.ndim == 2 and x.shape[1] in (2, 4) and np.issubdtype(x.dtype, np.floating):
            causes = x[:, :2].astype(np.float64)
        else:
            raise DataError(f"pendulum: intervene needs (N, 2) integer indices, (N, 2) cause values or (N, 4) "
                            f"labels; got {x.dtype} {x.shape}")
        for name in do:
            if name not in self.factor_names:
                raise DataError(f"pendulum: cannot intervene on {name!r}; variables: {', '.join(self.factor_names)}")
        n = len(causes)

        def value(name: str) -> np.ndarray:
            try:
                v = np.broadcast_to(np.asarray(do[name], dtype=np.float64), (n,))
            except (TypeError, ValueError):
                v = None
            if v is None or not np.isfinite(v).all():
                raise DataError(f"pendulum: do({name}=...) needs a finite scalar or an ({n},) array")
            return v

        causes = causes.copy()
        for k, name in enumerate(CAUSES):
            if name in do:
                causes[:, k] = value(name)
        out = self.factors(causes)  # effects through the mechanisms
        for k, name in enumerate(EFFECTS):
            if name in do:
                out[:, 2 + k] = value(name)
        if (out[:, 3] < 0).any():
            raise DataError("pendulum: do(shadow_length=...) must be >= 0")
        return out

    def images(self, factors: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
        """(N, 3, R, R) float32 in [0, 1] on `device` (default CPU) for (N, 2) cause indices."""
        return self.render(self.labels(factors), device=device)

    def render(self, labels, device: torch.device | str | None = None) -> torch.Tensor:
        """(N, 3, R, R) float32 in [0, 1] drawn from (N, 4) label vectors (the shadow from its own two entries)."""
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().double().numpy()
        lab = np.asarray(labels, np.float64)
        if lab.ndim != 2 or lab.shape[1] != 4 or not np.isfinite(lab).all():
            raise DataError(f"pendulum: labels must be finite with shape (N, 4); got {lab.shape}")
        _check_causes(lab[:, :2])
        if (lab[:, 3] < 0).any():
            raise DataError("pendulum: shadow_length must be >= 0")
        device = torch.device("cpu") if device is None else torch.device(device)
        out = torch.empty(len(lab), 3, self.resolution, self.resolution, device=device)
        for start in range(0, len(lab), CHUNK):
            out[start:start + CHUNK] = _render(lab[start:start + CHUNK], self.resolution, device)
        return out


def _check_causes(v: np.ndarray) -> None:
    """Causes must lie within the grids' ranges (the geometry keeps everything on the canvas there)."""
    for k, (name, grid) in enumerate(zip(CAUSES, (PENDULUM_ANGLES, LIGHT_ANGLES))):
        col = v[:, k]
        if not np.isfinite(col).all() or (col < grid[0] - 1e-9).any() or (col > grid[-1] + 1e-9).any():
            raise DataError(f"pendulum: {name} must lie in [{grid[0]:g}, {grid[-1]:g}] degrees")


def _render(lab: np.ndarray, res: int, device: torch.device) -> torch.Tensor:
    """(n, 3, res, res) for (n, 4) labels: signed distances (scene units) -> anti-aliased coverage, composited."""
    def col(a) -> torch.Tensor:  # (n,) numpy -> (n, 1, 1) float32, broadcasting against the (res, res) canvas
        return torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device).view(-1, 1, 1)

    px = WORLD / res  # scene units per pixel
    centres = (torch.arange(res, dtype=torch.float32, device=device) + 0.5) * px
    x = centres.view(1, 1, res)  # (1, 1, res): columns, rightwards
    y = (WORLD - centres).view(1, res, 1)  # (1, res, 1): rows, row 0 at the top

    def coverage(sd: torch.Tensor) -> torch.Tensor:  # (n, res, res): 1 inside, 0 outside, a 1-pixel ramp
        return (0.5 - sd / px).clamp(0.0, 1.0)

    lx, ly = light_position(lab[:, 1])
    bx, by = ball_centre(lab[:, 0])
    lx, ly, bx, by = col(lx), col(ly), col(bx), col(by)
    light = torch.hypot(x - lx, y - ly) - LIGHT_R
    ball = torch.hypot(x - bx, y - by) - BALL_R
    # Rod: distance to the segment pivot -> ball centre, minus its half width.
    dx, dy = bx - PIVOT_X, by - PIVOT_Y
    t = (((x - PIVOT_X) * dx + (y - PIVOT_Y) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0)
    rod = torch.hypot(x - PIVOT_X - t * dx, y - PIVOT_Y - t * dy) - ROD_HALF
    # Shadow: the box [pos − len/2, pos + len/2] × [GROUND − SHADOW_HALF, GROUND + SHADOW_HALF].
    qx = (x - col(lab[:, 2])).abs() - col(lab[:, 3] / 2)  # (n, 1, res)
    qy = (y - GROUND).abs() - SHADOW_HALF  # (1, res, 1)
    bar = torch.hypot(qx.clamp_min(0), qy.clamp_min(0)) + torch.maximum(qx, qy).clamp_max(0)

    img = torch.tensor(WHITE, device=device).view(1, 3, 1, 1).expand(len(lab), 3, res, res)
    for sd, rgb in ((light, ORANGE), (bar, BLACK), (rod, BLACK), (ball, FIREBRICK)):  # back to front
        a = coverage(sd).unsqueeze(1)  # (n, 1, res, res)
        img = img * (1 - a) + torch.tensor(rgb, device=device).view(1, 3, 1, 1) * a
    return img
