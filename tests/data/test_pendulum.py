"""Pendulum: shadow geometry checked by hand and by brute-force projection; DAG, interventions, rendering."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from causalrep.data.base import DATASETS
from causalrep.data.pendulum import (
    BALL_R, GROUND, LIGHT_ANGLES, LIGHT_ARC, PENDULUM_ANGLES, PIVOT_X, PIVOT_Y, ROD, SHADOW_HALF, WORLD, Pendulum,
    shadow,
)
from causalrep.errors import DataError

P0, L90 = 40, 40  # grid indices of pendulum angle 0° (i = 0) and light angle 90° (j = 100)
NAMES = ("pendulum_angle", "light_angle", "shadow_position", "shadow_length")


def test_geometry_constants_used_by_the_hand_computations():
    # The hand computations below assume this scene (scene units, x right, y up).
    assert (PIVOT_X, PIVOT_Y, ROD, BALL_R, LIGHT_ARC, GROUND) == (10.0, 9.0, 4.5, 1.35, 9.0, 1.5)
    assert PENDULUM_ANGLES[P0] == 0.0 and LIGHT_ANGLES[L90] == pytest.approx(90.0)


def test_shadow_hand_computed_symmetric_case():
    # Pendulum hanging straight down (0°), light straight above the pivot (90°):
    #   pivot P = (10, 9), ball centre C = (10, 9 − 4.5) = (10, 4.5), ball radius 1.35,
    #   light L = P + 9·(cos 90°, sin 90°) = (10, 18), ground y = 1.5, so the light is 16.5 above the ground.
    # The rod is vertical under L: its shadow is the single point x = 10, inside the ball's shadow.
    # Ball: |C − L| = 13.5, the tangent rays from L make α = asin(1.35/13.5) = asin(0.1) with the vertical,
    #   tan α = 0.1/√0.99 = 1/√99, so they meet the ground at 10 ± 16.5/√99 = 10 ± 1.658312.
    # Shadow = [8.341688, 11.658312]: position 10, length 33/√99 = √11 = 3.316625.
    pos, length = shadow(0.0, 90.0)
    assert pos == pytest.approx(10.0, abs=1e-9)
    assert length == pytest.approx(math.sqrt(11.0), abs=1e-9)
    lab = Pendulum().labels(np.array([[P0, L90]]))
    assert lab[0] == pytest.approx([0.0, 90.0, 10.0, math.sqrt(11.0)])


def test_shadow_hand_computed_asymmetric_case():
    # Pendulum at −36° (grid index 0: ball to the left), light at 90°: L = (10, 18).
    #   C = (10 − 4.5·sin 36°, 9 − 4.5·cos 36°) = (10 − 2.645033, 9 − 3.640576) = (7.354967, 5.359424).
    # Pivot: directly below L, its shadow is at x = 10.
    # Ball: L→C leans left of the downward vertical by γ = atan(2.645034/12.640576) = 0.206273 rad;
    #   |C − L| = √(2.645034² + 12.640576²) = 12.914348, α = asin(1.35/12.914348) = 0.104726 rad.
    #   Tangent rays meet the ground at 10 − 16.5·tan(γ ± α):
    #     left  10 − 16.5·tan(0.310999) = 10 − 16.5·0.321430 = 4.696407,
    #     right 10 − 16.5·tan(0.101547) = 10 − 16.5·0.101898 = 8.318691 (inside [lo, 10]).
    # Shadow = [4.696407, 10]: position 7.348204, length 5.303593.
    pos, length = shadow(-36.0, 90.0)
    assert pos == pytest.approx(7.348204, abs=2e-6)
    assert length == pytest.approx(5.303593, abs=2e-6)
    assert Pendulum().labels(np.array([[0, L90]]))[0, 2:] == pytest.approx([pos, length])


def brute_force_shadow(pend_deg: float, light_deg: float, n: int = 20001) -> tuple[float, float]:
    """Project many points of the rod and of the ball's rim from the light onto the ground: (position, length)."""
    a = math.radians(light_deg)
    lx, ly = PIVOT_X + LIGHT_ARC * math.cos(a), PIVOT_Y + LIGHT_ARC * math.sin(a)
    cx, cy = PIVOT_X + ROD * math.sin(math.radians(pend_deg)), PIVOT_Y - ROD * math.cos(math.radians(pend_deg))
    t = np.linspace(0.0, 1.0, n)
    phi = np.linspace(0.0, 2 * np.pi, n)
    xs = np.concatenate([PIVOT_X + t * (cx - PIVOT_X), cx + BALL_R * np.cos(phi)])
    ys = np.concatenate([PIVOT_Y + t * (cy - PIVOT_Y), cy + BALL_R * np.sin(phi)])
    assert (ys < ly).all()  # the whole pendulum is below the light
    hit = lx + (xs - lx) * (ly - GROUND) / (ly - ys)  # line light -> point, continued to y = GROUND
    return (hit.min() + hit.max()) / 2, hit.max() - hit.min()


def test_shadow_matches_brute_force_projection_over_the_grid():
    rng = np.random.default_rng(0)
    ds = Pendulum()
    f = np.concatenate([ds.sample_factors(12, rng), [[0, 0], [0, 87], [83, 0], [83, 87]]])
    lab = ds.labels(f)
    for (p, l, pos, length) in lab:
        bp, bl = brute_force_shadow(p, l)
        assert pos == pytest.approx(bp, abs=1e-3) and length == pytest.approx(bl, abs=1e-3)


def test_grid_names_sizes_and_registry():
    ds = Pendulum()
    assert DATASETS.get("pendulum") is Pendulum
    assert ds.factor_names == NAMES and ds.factor_sizes == (84, 88) and ds.num_factors == 2 and ds.num_labels == 4
    assert len(ds) == 84 * 88 and ds.channels == 3 and ds.resolution == 64
    # CausalVAE's grid: i·π/200 rad for i = −40..43, j·π/200 rad for j = 60..147, i.e. 0.9° steps.
    assert PENDULUM_ANGLES[0] == pytest.approx(-36.0) and PENDULUM_ANGLES[-1] == pytest.approx(38.7)
    assert LIGHT_ANGLES[0] == pytest.approx(54.0) and LIGHT_ANGLES[-1] == pytest.approx(132.3)
    f = ds.sample_factors(5, np.random.default_rng(0))
    assert f.shape == (5, 2) and f.dtype == np.int64
    assert ds.labels(f).shape == (5, 4)
    assert (ds.index_to_factors(ds.factors_to_index(f)) == f).all()


@pytest.mark.parametrize("res", [32, 64, 96])
def test_image_shape_and_range(res):
    img = Pendulum(resolution=res).images_at(np.array([0, 1000, 7391]))
    assert img.shape == (3, 3, res, res) and img.dtype == torch.float32
    assert img.min() >= 0 and img.max() <= 1


@pytest.mark.parametrize("bad", [48, 128, 64.0, True, "64"])
def test_bad_resolution(bad):
    with pytest.raises(DataError, match="resolution"):
        Pendulum(resolution=bad)


def test_bad_inputs():
    ds = Pendulum()
    with pytest.raises(DataError):
        ds.images(np.array([[84, 0]]))
    with pytest.raises(DataError):
        ds.images(np.array([0, 0]))
    with pytest.raises(DataError, match="intervene on 'shadow'"):
        ds.intervene(np.array([[0, 0]]), {"shadow": 1.0})
    with pytest.raises(DataError, match="pendulum_angle"):
        ds.intervene(np.array([[0, 0]]), {"pendulum_angle": 60.0})  # outside the grid's range
    with pytest.raises(DataError, match=">= 0"):
        ds.intervene(np.array([[0, 0]]), {"shadow_length": -1.0})
    with pytest.raises(DataError):
        ds.render(np.zeros((2, 3)))


def test_true_graph():
    g = Pendulum().true_graph
    assert set(g.nodes) == set(NAMES)
    assert set(g.edges) == {
        ("pendulum_angle", "shadow_position"), ("pendulum_angle", "shadow_length"),
        ("light_angle", "shadow_position"), ("light_angle", "shadow_length"),
    }


def test_do_pendulum_angle_moves_both_effects_through_the_formula():
    ds = Pendulum()
    f = np.array([[10, 5], [40, 40], [70, 80]])
    before = ds.labels(f)
    after = ds.intervene(f, {"pendulum_angle": 20.0})
    assert (after[:, 0] == 20.0).all()
    assert (after[:, 1] == before[:, 1]).all()  # the other cause is untouched
    for row in after:  # effects = the brute-force shadow of the new pendulum under the old light
        bp, bl = brute_force_shadow(20.0, row[1])
        assert row[2] == pytest.approx(bp, abs=1e-3) and row[3] == pytest.approx(bl, abs=1e-3)
    assert (np.abs(after[:, 2:] - before[:, 2:]) > 1e-2).all()  # both effects changed in every row
    # The same counterfactual from float cause values and from label vectors; per-row values.
    assert np.array_equal(ds.intervene(before[:, :2], {"pendulum_angle": 20.0}), after)
    assert np.array_equal(ds.intervene(before, {"pendulum_angle": np.full(3, 20.0)}), after)


def test_do_light_angle_moves_both_effects_and_keeps_the_pendulum():
    ds = Pendulum()
    f = np.array([[10, 5], [60, 20]])
    before, after = ds.labels(f), ds.intervene(f, {"light_angle": 120.0})
    assert (after[:, 0] == before[:, 0]).all() and (after[:, 1] == 120.0).all()
    assert np.allclose(after[:, 2:], np.stack(shadow(before[:, 0], 120.0), 1))
    assert (np.abs(after[:, 2:] - before[:, 2:]) > 1e-2).all()


@pytest.mark.parametrize("name,col,value", [("shadow_length", 3, 8.0), ("shadow_position", 2, 15.0)])
def test_do_effect_changes_only_that_effect(name, col, value):
    ds = Pendulum()
    f = np.array([[10, 5], [60, 20]])
    before, after = ds.labels(f), ds.intervene(f, {name: value})
    assert (after[:, col] == value).all()
    others = [k for k in range(4) if k != col]
    assert np.array_equal(after[:, others], before[:, others])
    # The image changes only in the shadow bar's rows (ground line ± SHADOW_HALF, plus one anti-aliased row).
    diff = (ds.render(after) - ds.images(f)).abs().amax(dim=(0, 1, 3))  # (R,) per row
    px = WORLD / ds.resolution
    rows = np.flatnonzero(diff.numpy() > 0)
    y = WORLD - (rows + 0.5) * px
    assert len(rows) and (np.abs(y - GROUND) <= SHADOW_HALF + px).all()


def test_rendered_shadow_bar_matches_labels():
    # The dark pixels on the ground line's row span position ± length/2 (to within a pixel).
    ds = Pendulum()
    f = ds.sample_factors(20, np.random.default_rng(1))
    lab, img = ds.labels(f), ds.images(f)
    px = WORLD / ds.resolution
    row = int((WORLD - GROUND) / px)  # the pixel row containing the ground line
    for (_, _, pos, length), im in zip(lab, img):
        dark = np.flatnonzero(im[:, row].mean(0).numpy() < 0.5)
        lo, hi = dark.min() * px, (dark.max() + 1) * px
        assert lo == pytest.approx(pos - length / 2, abs=px) and hi == pytest.approx(pos + length / 2, abs=px)


# Neighbouring grid values must differ visibly: at 64 px, summed |Δ| over pixels and channels > 5 and at
# least 20 pixel-channels changing by > 0.05 (measured minima: ≈ 12.6 and 65).
L1_MIN, COUNT_MIN = 5.0, 20


def changes(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = (a - b).abs()
    return d.sum((1, 2, 3)), (d > 0.05).sum((1, 2, 3))


@pytest.mark.parametrize("fixed", [0, 44, 87])
def test_every_pendulum_step_changes_the_image(fixed):
    img = Pendulum().images(np.stack([np.arange(84), np.full(84, fixed)], 1))
    l1, count = changes(img[1:], img[:-1])
    assert l1.min() > L1_MIN and count.min() >= COUNT_MIN


@pytest.mark.parametrize("fixed", [0, 40, 83])
def test_every_light_step_changes_the_image(fixed):
    img = Pendulum().images(np.stack([np.full(88, fixed), np.arange(88)], 1))
    l1, count = changes(img[1:], img[:-1])
    assert l1.min() > L1_MIN and count.min() >= COUNT_MIN


@pytest.mark.parametrize("name", ["shadow_position", "shadow_length"])
def test_effect_steps_change_the_image(name):
    # A 0.3-unit step (≈ 1 px at 64) of an intervened effect, across its observed range.
    ds = Pendulum()
    col = NAMES.index(name)
    lo, hi = (4.4, 16.5) if name == "shadow_position" else (3.3, 10.0)
    values = np.arange(lo, hi, 0.3)
    base = np.repeat(np.array([[60, 20]]), len(values), 0)
    img = ds.render(ds.intervene(base, {name: values}))
    l1, count = changes(img[1:], img[:-1])
    assert l1.min() > 0.5 and count.min() >= 2
    assert np.allclose(ds.intervene(base, {name: values})[:, col], values)


def test_deterministic():
    f = Pendulum().sample_factors(32, np.random.default_rng(3))
    assert torch.equal(Pendulum().images(f), Pendulum().images(f))
    assert np.array_equal(Pendulum().sample_factors(32, np.random.default_rng(3)), f)
