"""Procedural 3D Shapes: factor grid, hue colouring, geometry symmetries, geometry cache, 3dshapes.h5 layout."""
from __future__ import annotations

import colorsys
import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from causalrep.data import shapes3d
from causalrep.data.base import DATASETS
from causalrep.data.shapes3d import (
    AMBIENT, CACHE_NAME, FLOOR, HUES, LIGHT, OBJECT, ORIENTATIONS, SATURATION, SCALES, VALUE, WALL, Shapes3D,
)
from causalrep.errors import DataError

CUBE, CYLINDER, SPHERE, CAPSULE = range(4)
HEAD_ON = 7  # ORIENTATIONS[7] == 0°


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Never touch ~/.cache: the default cache dir comes from CAUSALREP_DATA.
    monkeypatch.setenv("CAUSALREP_DATA", str(tmp_path / "default_cache"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A cache dir whose geometry buffers are built once for the whole module (the only real build)."""
    d = tmp_path_factory.mktemp("shapes3d_cache")
    Shapes3D(cache_dir=str(d)).geometry()
    return d


@pytest.fixture(scope="module")
def ds(cache_dir):
    return Shapes3D(cache_dir=str(cache_dir))


def pure(ids: torch.Tensor, surface: int) -> torch.Tensor:
    """(N, 64, 64) bool: output pixels whose 2×2 sub-pixels all show `surface`."""
    return (ids == surface).view(len(ids), 64, 2, 64, 2).all(4).all(2)


def touches(ids: torch.Tensor, surface: int) -> torch.Tensor:
    """(N, 64, 64) bool: output pixels with at least one sub-pixel showing `surface`."""
    return (ids == surface).view(len(ids), 64, 2, 64, 2).any(4).any(2)


def hue_diff(a: float, b: float) -> float:
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


def test_grid_and_registry(ds):
    assert DATASETS.get("shapes3d") is Shapes3D
    assert ds.factor_names == ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    assert ds.factor_sizes == (10, 10, 10, 8, 4, 15)
    assert len(ds) == 480_000 == 10 * 10 * 10 * 8 * 4 * 15
    assert ds.channels == 3 and ds.resolution == 64
    np.testing.assert_allclose(HUES, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], atol=1e-12)
    np.testing.assert_allclose(SCALES, 0.75 + np.arange(8) * 0.5 / 7, atol=1e-12)
    np.testing.assert_allclose(ORIENTATIONS, -30 + np.arange(15) * 60 / 14, atol=1e-12)
    assert ORIENTATIONS[HEAD_ON] == 0.0
    assert shapes3d.SHAPES == ("cube", "cylinder", "sphere", "capsule")


def test_index_round_trip(ds):
    idx = np.random.default_rng(0).integers(0, len(ds), size=1000)
    factors = ds.index_to_factors(idx)
    assert np.array_equal(ds.factors_to_index(factors), idx)
    # Row-major like 3dshapes.h5: orientation varies fastest, floor hue slowest.
    assert ds.index_to_factors(np.array([1]))[0].tolist() == [0, 0, 0, 0, 0, 1]
    assert ds.index_to_factors(np.array([15]))[0].tolist() == [0, 0, 0, 0, 1, 0]
    assert ds.index_to_factors(np.array([len(ds) - 1]))[0].tolist() == [9, 9, 9, 7, 3, 14]
    assert torch.equal(ds.images_at(idx[:5]), ds.images(factors[:5]))


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
def test_shape_dtype_range_and_pooling(cache_dir, ds, resolution):
    factors = ds.sample_factors(40, np.random.default_rng(1))
    img = Shapes3D(resolution=resolution, cache_dir=str(cache_dir)).images(factors)
    assert img.shape == (40, 3, resolution, resolution) and img.dtype == torch.float32
    assert img.min() >= 0 and img.max() <= 1
    # Up to float32 rounding (one 16×16 sub-pixel mean vs nested means).
    torch.testing.assert_close(img, F.avg_pool2d(ds.images(factors), 64 // resolution), atol=2e-5, rtol=0)


@pytest.mark.parametrize("resolution", [4, 48, 128, 64.0, True])
def test_bad_resolution(resolution):
    with pytest.raises(DataError, match="resolution"):
        Shapes3D(resolution=resolution)


def test_bad_factors(ds):
    with pytest.raises(DataError, match=r"\(N, 6\)"):
        ds.images(np.zeros((2, 5), np.int64))
    with pytest.raises(DataError, match="out of range"):
        ds.images(np.array([[0, 0, 0, 8, 0, 0]]))


@pytest.mark.parametrize("column,surface", [(0, FLOOR), (1, WALL), (2, OBJECT)])
@pytest.mark.parametrize("shape", [CUBE, CYLINDER, SPHERE, CAPSULE])
def test_hue_recolours_only_its_surface(ds, column, surface, shape):
    base = np.array([1, 4, 7, 3, shape, 5])
    factors = np.repeat(base[None], 10, axis=0)
    factors[:, column] = np.arange(10)
    img = ds.images(factors)  # (10, 3, 64, 64)
    ids = ds.surface_ids(factors)  # same geometry for all 10
    assert torch.equal(ids, ids[:1].expand_as(ids))
    others, own = ~touches(ids, surface)[0], pure(ids, surface)[0]
    assert own.sum() >= 20  # the surface is visible
    for h in range(1, 10):
        diff = (img[h] - img[0]).abs().amax(0)  # (64, 64)
        assert diff[others].max() == 0  # pixels without this surface are untouched
        assert (diff[own] > 0).all()  # every pixel of this surface changed
    # The surface's colour is the requested hue at saturation SATURATION (shading scales value only).
    for h in range(10):
        rgb = img[h].permute(1, 2, 0)[own].double()  # (n, 3)
        for r, g, b in rgb[:: max(1, len(rgb) // 40)].tolist():
            hh, ss, vv = colorsys.rgb_to_hsv(r, g, b)
            assert hue_diff(hh, HUES[h]) < 1e-4 and ss == pytest.approx(SATURATION, abs=1e-4)
            assert AMBIENT * VALUE - 1e-3 <= vv <= VALUE + 1e-6


@pytest.mark.parametrize("shape", [CUBE, CYLINDER, SPHERE, CAPSULE])
@pytest.mark.parametrize("orientation", [0, HEAD_ON, 11])
def test_object_grows_with_scale(ds, shape, orientation):
    factors = np.array([[0, 0, 0, s, shape, orientation] for s in range(8)])
    count = (ds.surface_ids(factors) == OBJECT).sum((1, 2)).double()
    assert (count.diff() > 0).all()  # strictly monotone in scale
    # Projected area ∝ size² (the camera is ≈ 5 object sizes away: perspective changes this by a few %).
    assert (count[-1] / count[0]).item() == pytest.approx((SCALES[-1] / SCALES[0]) ** 2, rel=0.1)


def test_shapes_differ(ds):
    for orientation in (0, HEAD_ON):
        masks = ds.surface_ids(np.array([[0, 0, 0, 4, k, orientation] for k in range(4)])) == OBJECT
        for a in range(4):
            for b in range(a + 1, 4):
                xor, union = (masks[a] ^ masks[b]).sum(), (masks[a] | masks[b]).sum()
                assert xor >= 0.1 * union, (a, b, orientation)


def test_head_on_view_is_mirror_symmetric(ds):
    # At orientation 0 the camera looks head-on at a cube face and into the room corner: the scene's
    # geometry is symmetric under x -> -x, so every surface-id map equals its left-right mirror, and the
    # object is centred on the middle column.
    factors = np.array([[0, 0, 0, s, k, HEAD_ON] for k in range(4) for s in (0, 7)])
    ids = ds.surface_ids(factors)
    assert torch.equal(ids, ids.flip(-1))
    cols = torch.nonzero(ids[0] == OBJECT)[:, 1].double()
    assert cols.min() + cols.max() == 127
    # Orientations ±θ are mirror images of each other (geometry only: the light is not mirrored).
    for k in range(4):
        left = ds.surface_ids(np.array([[0, 0, 0, 3, k, o] for o in range(15)]))
        assert torch.equal(left, left.flip(0).flip(-1))


def test_every_factor_changes_the_image(ds):
    base = np.array([2, 5, 8, 3, 0, 4])
    for shape in range(4):
        base[4] = shape
        for k, size in enumerate(ds.factor_sizes):
            other = base.copy()
            other[k] = (base[k] + 1) % size
            a, b = ds.images(np.stack([base, other]))
            assert (a - b).abs().mean() > 0.003, (shape, k)
    # Orientation changes even a sphere's image: the camera orbits, so the room corner moves.
    a, b = ds.images(np.array([[0, 5, 8, 3, SPHERE, 0], [0, 5, 8, 3, SPHERE, 14]]))
    assert (a - b).abs().amax(0).gt(0.1).sum() > 200


def test_shading(ds):
    ids, shade = ds.geometry()
    light = F.normalize(torch.tensor(LIGHT), dim=0)
    floor = shade[ids == FLOOR]
    # Lit floor: AMBIENT + (1 − AMBIENT)·(n·l) with n = +y; shadowed floor: AMBIENT.
    assert floor.max().item() == round(255 * (AMBIENT + (1 - AMBIENT) * light[1].item()))
    assert floor.min().item() == round(255 * AMBIENT)
    head_on_cube = np.ravel_multi_index((3, CUBE, HEAD_ON), shapes3d.GEOMETRY)
    in_shadow = (ids[head_on_cube] == FLOOR) & (shade[head_on_cube] == round(255 * AMBIENT))
    assert in_shadow.sum() > 100  # the object casts a visible shadow
    assert shade.max() <= 255 and shade.min() >= round(255 * AMBIENT)


def test_default_cache_dir_from_env(tmp_path):
    assert Shapes3D().cache_path == tmp_path / "default_cache" / CACHE_NAME


def test_cache_is_complete_and_reused(cache_dir, ds, monkeypatch, recwarn):
    with h5py.File(cache_dir / CACHE_NAME, "r") as f:
        assert bool(f.attrs["complete"]) and len(f.attrs["sha256"]) == 64
    monkeypatch.setattr(shapes3d, "build_geometry", lambda *a, **k: pytest.fail("rebuilt a valid cache"))
    again = Shapes3D(cache_dir=str(cache_dir))
    assert all(torch.equal(a, b) for a, b in zip(again.geometry(), ds.geometry()))
    assert not [w for w in recwarn if "shapes3d" in str(w.message)]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _incomplete(path):
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = False


def _flip_byte(path):
    with h5py.File(path, "r+") as f:
        f["shade"][3, 1, 7, 64, 64] ^= 0xFF


@pytest.mark.parametrize("corrupt", [_truncate, _incomplete, _flip_byte])
def test_corrupted_cache_is_rebuilt_with_warning(cache_dir, ds, tmp_path, monkeypatch, corrupt):
    shutil.copy(cache_dir / CACHE_NAME, tmp_path / CACHE_NAME)
    corrupt(tmp_path / CACHE_NAME)
    good = tuple(b.view(*shapes3d.GEOMETRY, *b.shape[1:]).numpy() for b in ds.geometry())
    calls = []
    monkeypatch.setattr(shapes3d, "build_geometry", lambda *a, **k: calls.append(1) or good)  # skip re-rendering
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        rebuilt = Shapes3D(cache_dir=str(tmp_path)).geometry()
    assert calls == [1]
    assert all(torch.equal(a, b) for a, b in zip(rebuilt, ds.geometry()))
    with h5py.File(tmp_path / CACHE_NAME, "r") as f:  # the rewritten file is valid again
        assert bool(f.attrs["complete"])
    assert shapes3d._read_cache(tmp_path / CACHE_NAME) is not None


def test_write_h5_round_trip(ds, tmp_path):
    rng = np.random.default_rng(3)
    index = rng.choice(len(ds), size=24, replace=False)
    path = tmp_path / "3dshapes_subset.h5"
    ds.write_h5(str(path), index)
    factors = ds.index_to_factors(index)
    with h5py.File(path, "r") as f:
        assert set(f) == {"images", "labels"}
        assert f["images"].shape == (24, 64, 64, 3) and f["images"].dtype == np.uint8
        assert f["labels"].shape == (24, 6) and f["labels"].dtype == np.float64
        expected = np.stack([HUES[factors[:, 0]], HUES[factors[:, 1]], HUES[factors[:, 2]],
                             SCALES[factors[:, 3]], factors[:, 4].astype(float), ORIENTATIONS[factors[:, 5]]], 1)
        np.testing.assert_array_equal(f["labels"][()], expected)
    real = Shapes3D(path=str(path))
    assert len(real) == 24
    assert np.array_equal(real.index_to_factors(np.arange(24)), factors)
    assert np.array_equal(real.factors_to_index(factors[::-1]), np.arange(24)[::-1])
    order = rng.permutation(np.r_[np.arange(24), [5, 5]])  # unsorted, with repeats
    torch.testing.assert_close(real.images(factors[order]), ds.images(factors[order]), atol=1 / 255, rtol=0)
    clone = pickle.loads(pickle.dumps(real))  # DataLoader workers: the h5py handle is reopened lazily
    assert torch.equal(clone.images(factors[:3]), real.images(factors[:3]))
    small = Shapes3D(path=str(path), resolution=16).images(factors[:4])
    torch.testing.assert_close(small, F.avg_pool2d(real.images(factors[:4]), 4))
    present = {tuple(r) for r in factors.tolist()}
    assert all(tuple(r) in present for r in real.sample_factors(200, rng).tolist())
    absent = ds.index_to_factors(np.setdiff1d(np.arange(100), index)[:1])
    with pytest.raises(DataError, match="no image for factors"):
        real.images(absent)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    with pytest.raises(DataError, match="nope.h5.*does not exist"):
        Shapes3D(path=str(path))


def test_file_without_labels(tmp_path):
    path = tmp_path / "no_labels.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 64, 64, 3), np.uint8)
    with pytest.raises(DataError, match="no_labels.h5.*'labels'"):
        Shapes3D(path=str(path))


def test_file_with_wrong_shapes(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 32, 32, 3), np.uint8)
        f["labels"] = np.zeros((2, 6))
    with pytest.raises(DataError, match=r"bad.h5.*'images'.*\(N, 64, 64, 3\)"):
        Shapes3D(path=str(path))
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 64, 64, 3), np.uint8)
        f["labels"] = np.zeros((2, 5))
    with pytest.raises(DataError, match=r"bad.h5.*'labels'"):
        Shapes3D(path=str(path))
    path.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="bad.h5.*not a readable HDF5"):
        Shapes3D(path=str(path))
