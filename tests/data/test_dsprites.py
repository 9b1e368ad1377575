"""Procedural dSprites: factor grid, and sprite geometry checked against analytic areas, sizes and motions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from causalrep.data.base import DATASETS
from causalrep.data.dsprites import (
    ELLIPSE_A, ELLIPSE_B, HEART_UNIT, ORIENTATIONS, POS_HI, POS_LO, SCALES, SQUARE_HALF, DSprites,
)
from causalrep.errors import DataError

SQUARE, ELLIPSE, HEART = 0, 1, 2
STEP = (POS_HI - POS_LO) / 31  # pixels per posX/posY index step
# Positions whose sprites are fully inside the canvas at any orientation (centres 21.4..42.6 px; the
# farthest sprite point is ≤ 14.3 px from its centre: the heart's bounding-box corner).
INNER = np.arange(8, 24)


def heart_geometry() -> tuple[float, float, float, float, float]:
    """Area, perimeter, centroid y, half-width and top y of (x²+y²−1)³ ≤ x²y³ in its own units.

    By polar bisection + polygon (shoelace) formulas.

    Independent of the renderer: every ray from the origin meets the curve once, at the root r of
    (r²−1)³ = r⁵ cos²φ sin³φ in (0.5, 2). (The area is ≈ 3.662, not the 3π/2 sometimes quoted.)
    """
    phi = np.linspace(0.0, 2 * np.pi, 20001)
    c = np.cos(phi) ** 2 * np.sin(phi) ** 3
    lo, hi = np.full_like(phi, 0.5), np.full_like(phi, 2.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        above = (mid * mid - 1) ** 3 - mid ** 5 * c > 0
        lo, hi = np.where(above, lo, mid), np.where(above, mid, hi)
    x, y = lo * np.cos(phi), lo * np.sin(phi)
    cross = x[:-1] * y[1:] - x[1:] * y[:-1]
    area = 0.5 * np.sum(cross)
    centroid_y = np.sum((y[:-1] + y[1:]) * cross) / (6 * area)
    perim = np.sum(np.hypot(np.diff(x), np.diff(y)))
    return float(area), float(perim), float(centroid_y), float(x.max()), float(y.max())


HEART_AREA, HEART_PERIM, HEART_CY, HEART_XMAX, HEART_YMAX = heart_geometry()  # ≈ 3.662, 7.271, 0.293, 1.139, 1.237


def area_and_perimeter(shape: int, scale: float) -> tuple[float, float]:
    """Analytic area (px²) and perimeter (px) of a sprite at the given scale value."""
    if shape == SQUARE:
        side = 2 * SQUARE_HALF * scale
        return side ** 2, 4 * side
    if shape == ELLIPSE:
        a, b = ELLIPSE_A * scale, ELLIPSE_B * scale
        h = ((a - b) / (a + b)) ** 2  # Ramanujan's perimeter approximation
        return math.pi * a * b, math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))
    u = HEART_UNIT * scale
    return HEART_AREA * u ** 2, HEART_PERIM * u


def render(*rows) -> torch.Tensor:
    """(N, 64, 64) images for factor rows (shape, scale, orientation, posX, posY)."""
    return DSprites().images(np.array(rows, dtype=np.int64))[:, 0]


def mean_inner_area(shape: int, scale: int, orientation: int) -> float:
    """Lit-pixel count averaged over the 16×16 INNER positions."""
    rows = [(shape, scale, orientation, x, y) for x in INNER for y in INNER]
    return render(*rows).sum((1, 2)).mean().item()


def centroid(img: torch.Tensor) -> tuple[float, float]:
    """(x, y) = (column, row) centroid of lit pixels, in continuous pixel coordinates."""
    rows, cols = torch.nonzero(img > 0.5, as_tuple=True)
    return cols.double().mean().item() + 0.5, rows.double().mean().item() + 0.5


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a > 0.5) & (b > 0.5)).sum().item() / ((a > 0.5) | (b > 0.5)).sum().item()


def test_grid_and_registry():
    ds = DSprites()
    assert DATASETS.get("dsprites") is DSprites
    assert ds.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert ds.factor_sizes == (3, 6, 40, 32, 32)
    assert len(ds) == 737_280 == 3 * 6 * 40 * 32 * 32
    assert ds.channels == 1 and ds.resolution == 64


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
def test_shape_dtype_range(resolution):
    ds = DSprites(resolution=resolution)
    img = ds.images(ds.sample_factors(50, np.random.default_rng(0)))
    assert img.shape == (50, 1, resolution, resolution) and img.dtype == torch.float32
    assert img.device.type == "cpu"
    assert img.min() >= 0 and img.max() <= 1
    assert (img.sum((1, 2, 3)) > 0).all()  # every sprite is visible


def test_index_round_trip():
    ds = DSprites()
    idx = np.random.default_rng(1).integers(0, len(ds), size=1000)
    factors = ds.index_to_factors(idx)
    assert factors.shape == (1000, 5)
    assert ((factors >= 0) & (factors < np.array(ds.factor_sizes))).all()
    assert np.array_equal(ds.factors_to_index(factors), idx)
    # Row-major like the original file: posY varies fastest, shape slowest.
    assert ds.index_to_factors(np.array([1]))[0].tolist() == [0, 0, 0, 0, 1]
    assert ds.index_to_factors(np.array([len(ds) - 1]))[0].tolist() == [2, 5, 39, 31, 31]
    assert torch.equal(ds.images_at(idx[:5]), ds.images(factors[:5]))


def test_binary_at_64():
    ds = DSprites()
    img = ds.images(ds.sample_factors(200, np.random.default_rng(2)))
    assert ((img == 0) | (img == 1)).all()


@pytest.mark.parametrize("scale", [0, 2, 5])
def test_square_area_single_image(scale):
    # Axis-aligned square of side L: along each axis the lit pixel centres fill an interval of length L,
    # i.e. floor(L) or floor(L)+1 of them, so the count lies in [(L−1)², (L+1)²] and is a full rectangle.
    side = 2 * SQUARE_HALF * SCALES[scale]
    img = render((SQUARE, scale, 0, 13, 17))[0]
    rows, cols = torch.nonzero(img, as_tuple=True)
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert img.sum() == h * w  # a filled axis-aligned rectangle
    assert abs(h - side) <= 1 and abs(w - side) <= 1


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
@pytest.mark.parametrize("scale", [0, 5])
@pytest.mark.parametrize("orientation", [0, 7, 13])
def test_area_matches_geometry(shape, scale, orientation):
    area, perim = area_and_perimeter(shape, SCALES[scale])
    # One image: only pixels the boundary crosses can be wrong, and their signed errors mostly cancel;
    # half the perimeter (in px) bounds the miscount.
    counts = render(*[(shape, scale, orientation, x, y) for x, y in [(9, 9), (12, 20), (22, 15)]]).sum((1, 2))
    assert (counts - area).abs().max().item() <= perim / 2
    # Averaged over M = 256 translations: the expected lattice-point count of a randomly translated shape
    # is exactly its area, and the sub-pixel offsets of the grid are spread over [0, 1)², so the error
    # shrinks at least like 1/√M.
    assert abs(mean_inner_area(shape, scale, orientation) - area) <= perim / 2 / math.sqrt(256)


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_area_scales_quadratically(shape):
    ratio = mean_inner_area(shape, 5, 3) / mean_inner_area(shape, 0, 3)
    assert ratio == pytest.approx((SCALES[5] / SCALES[0]) ** 2, rel=0.03)  # 4, within 3%
    assert (SCALES[5] / SCALES[0]) ** 2 == pytest.approx(4.0)


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_rotation_preserves_area(shape):
    base = mean_inner_area(shape, 4, 0)
    _, perim = area_and_perimeter(shape, SCALES[4])
    for o in (5, 11, 20, 33):
        assert abs(mean_inner_area(shape, 4, o) - base) <= 2 * perim / 2 / math.sqrt(256)


def test_square_quarter_turn_and_full_turn():
    # Index 10 is 10·2π/39 ≈ 92.3°: a square rotated by 2.3° overlaps itself with IoU ≈ 1 − φ ≈ 0.96.
    assert math.degrees(ORIENTATIONS[10]) == pytest.approx(92.3, abs=0.05)
    a, b, full = render((SQUARE, 5, 0, 16, 15), (SQUARE, 5, 10, 16, 15), (SQUARE, 5, 39, 16, 15))
    assert iou(a, b) >= 0.9
    assert iou(a, full) >= 0.99  # orientation 2π is orientation 0, as in the original
    # An ellipse is not 90°-symmetric: a quarter turn swaps its axes; two perpendicular a×b ellipses
    # overlap in 4ab·atan(b/a), so IoU = 4·atan(b/a) / (2π − 4·atan(b/a)) ≈ 0.42 for a = 2b.
    e0, e10 = render((ELLIPSE, 5, 0, 16, 15), (ELLIPSE, 5, 10, 16, 15))
    assert iou(e0, e10) < 0.6


def test_sprite_sizes_and_orientation():
    sq, el, he = render((SQUARE, 5, 0, 15, 15), (ELLIPSE, 5, 0, 15, 15), (HEART, 5, 0, 15, 15))

    def extent(img):  # (width, height) of the lit bounding box, in px
        rows, cols = torch.nonzero(img, as_tuple=True)
        return (cols.max() - cols.min() + 1).item(), (rows.max() - rows.min() + 1).item()

    # Max-scale sprites span ≈ 1/3–1/4 of the 64-px canvas, like the original's ≈ 20 px.
    assert abs(extent(sq)[0] - 2 * SQUARE_HALF) <= 1 and abs(extent(sq)[1] - 2 * SQUARE_HALF) <= 1
    assert abs(extent(el)[0] - 2 * ELLIPSE_A) <= 1 and abs(extent(el)[1] - 2 * ELLIPSE_B) <= 1
    assert abs(extent(he)[0] - 2 * HEART_XMAX * HEART_UNIT) <= 1  # heart spans x ∈ [−1.139, 1.139]
    assert abs(extent(he)[1] - (1 + HEART_YMAX) * HEART_UNIT) <= 1  # and y ∈ [−1, 1.237]
    for img in (sq, el, he):
        assert 64 / 4 - 1 <= max(extent(img)) <= 64 / 3 + 1
    # Heart upright at orientation 0: its area centroid (y ≈ 0.293 units) lies above its bounding-box
    # centre (y ≈ 0.118 units), i.e. ≈ 1.6 px towards the top of the image; the top row has two lobes
    # (the notch reaches down to y = 1), the bottom is the tip.
    rows, cols = torch.nonzero(he, as_tuple=True)
    bbox_centre_row = (rows.min() + rows.max() + 1).item() / 2
    offset = (HEART_CY - (HEART_YMAX - 1) / 2) * HEART_UNIT  # centroid above bbox centre, px
    assert centroid(he)[1] == pytest.approx(bbox_centre_row - offset, abs=0.5)
    top = he[rows.min()]
    assert (top[1:] - top[:-1]).clamp(min=0).sum() == 2  # two separate runs of lit pixels
    assert he[rows.max()].sum() <= 3  # the tip


def test_position_moves_centroid():
    # For an axis-aligned square the lit columns are an interval whose midpoint is within 0.5 px of the
    # true centre, so one step moves the centroid by STEP ± 1 px in x, and by exactly 0 in y.
    imgs = render(*[(SQUARE, 5, 0, x, 15) for x in range(32)])
    cs = np.array([centroid(img) for img in imgs])
    assert np.all(np.abs(np.diff(cs[:, 0]) - STEP) < 1)
    assert np.all(np.diff(cs[:, 1]) == 0)
    assert abs(cs[0, 0] - POS_LO) <= 0.5 and abs(cs[-1, 0] - POS_HI) <= 0.5  # centres span 10..54 px
    # posY moves rows downwards the same way, columns unchanged.
    imgs = render(*[(SQUARE, 5, 0, 15, y) for y in (3, 4)])
    (x0, y0), (x1, y1) = centroid(imgs[0]), centroid(imgs[1])
    assert abs((y1 - y0) - STEP) < 1 and x1 == x0
    # Every shape is centred on its position: the lit bounding box's edges are within 1 px of the true
    # extent's, so its centre is within 1 px of (POS_LO + STEP·posX, POS_LO + STEP·posY).
    for shape in (SQUARE, ELLIPSE, HEART):
        rows, cols = torch.nonzero(render((shape, 5, 0, 7, 24))[0], as_tuple=True)
        assert abs((cols.min() + cols.max() + 1).item() / 2 - (POS_LO + 7 * STEP)) <= 1
        assert abs((rows.min() + rows.max() + 1).item() / 2 - (POS_LO + 24 * STEP)) <= 1
    # A rotated heart: the shift is still ≈ STEP in x and ≈ 0 in y (rasterisation jitter only).
    a, b = render((HEART, 3, 6, 10, 12), (HEART, 3, 6, 11, 12))
    (xa, ya), (xb, yb) = centroid(a), centroid(b)
    assert abs((xb - xa) - STEP) < 0.5 and abs(yb - ya) < 0.5


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_lower_resolution_is_average_pooled(resolution):
    factors = DSprites().sample_factors(64, np.random.default_rng(3))
    full = DSprites(resolution=64).images(factors)
    small = DSprites(resolution=resolution).images(factors)
    assert torch.equal(small, F.avg_pool2d(full, 64 // resolution))
    levels = small * (64 // resolution) ** 2  # averages of k² binary sub-pixels
    assert torch.equal(levels, levels.round())
    assert ((small > 0) & (small < 1)).any()  # anti-aliased edges


def test_chunking_matches_one_pass(monkeypatch):
    import causalrep.data.dsprites as mod

    factors = DSprites().sample_factors(100, np.random.default_rng(4))
    whole = DSprites().images(factors)
    monkeypatch.setattr(mod, "CHUNK", 7)
    assert torch.equal(DSprites().images(factors), whole)


@pytest.mark.parametrize("bad", [48, 128, 4, 0, 65])
def test_bad_resolution_raises(bad):
    with pytest.raises(DataError, match=str(bad)):
        DSprites(resolution=bad)


def test_bad_factors_raise():
    with pytest.raises(DataError):
        DSprites().images(np.array([[3, 0, 0, 0, 0]]))
    with pytest.raises(DataError):
        DSprites().images(np.zeros((2, 4), dtype=np.int64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_render_matches_cpu():
    factors = DSprites().sample_factors(300, np.random.default_rng(5))
    gpu = DSprites(resolution=32).images(factors, device="cuda")
    assert gpu.device.type == "cuda"
    cpu = DSprites(resolution=32).images(factors)
    # Same formulas; float rounding may flip a handful of exact-boundary sub-pixels.
    assert (gpu.cpu() - cpu).abs().sum() <= 300 * 2 / 4
