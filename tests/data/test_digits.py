"""Digits and the ICM mechanisms (004 App. C) on hand-made images; ICMPairs' disjoint halves and determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from causalrep.data.base import DATASETS, FILE_LOADERS
from causalrep.data.digits import Digits, ICMPairs
from causalrep.data.mechanisms import MECHANISM_NAMES, MECHANISMS, NOISE_STD, add_noise, apply_mechanisms, mechanism
from causalrep.errors import DataError


@pytest.fixture(scope="module")
def digits() -> Digits:
    return Digits()


def dot(row: int, col: int, size: int = 32) -> torch.Tensor:
    """(1, 1, size, size) image with a single lit pixel."""
    x = torch.zeros(1, 1, size, size)
    x[0, 0, row, col] = 1.0
    return x


# Rows grow downwards and columns rightwards: a pixel at (10, 12) moves by 4 in the named direction(s).
MOVES = {
    "up": (6, 12), "down": (14, 12), "left": (10, 8), "right": (10, 16),
    "up_left": (6, 8), "up_right": (6, 16), "down_left": (14, 8), "down_right": (14, 16),
}


def test_ten_mechanisms_in_order():
    assert MECHANISM_NAMES == ("up", "down", "left", "right", "up_left", "up_right", "down_left", "down_right",
                               "invert", "noise")
    assert len(MECHANISMS) == 10


@pytest.mark.parametrize("name", list(MOVES))
def test_translation_moves_a_single_pixel_by_four(name):
    out = mechanism(name)(dot(10, 12))
    assert out.shape == (1, 1, 32, 32)
    assert torch.equal(out, dot(*MOVES[name]))


@pytest.mark.parametrize("name", list(MOVES))
def test_translation_fills_with_zeros_and_does_not_wrap(name):
    # A pixel within 4 of the edge it moves towards leaves the image; the vacated side is zero.
    r, c = MOVES[name]
    dr, dc = (r - 10) // 4, (c - 12) // 4
    row = 1 if dr < 0 else 30 if dr > 0 else 10
    col = 1 if dc < 0 else 30 if dc > 0 else 12
    assert mechanism(name)(dot(row, col)).abs().sum() == 0
    full = mechanism(name)(torch.ones(1, 1, 32, 32))[0, 0]
    assert full.sum() == (32 - 4 * abs(dr)) * (32 - 4 * abs(dc))  # exactly the vacated strip(s) are zero
    if dr < 0:
        assert (full[-4:] == 0).all()
    if dc > 0:
        assert (full[:, :4] == 0).all()


def test_inversion():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 2, 2)
    assert torch.equal(mechanism("invert")(x), torch.tensor([1.0, 0.75, 0.5, 0.0]).view(1, 1, 2, 2))


def test_noise_std_half_then_clamped():
    grey = torch.full((64, 1, 32, 32), 0.5)  # 65,536 pixels
    raw = add_noise(grey, torch.Generator().manual_seed(0), clamp=False) - grey  # the added noise
    assert NOISE_STD == 0.5
    assert raw.std().item() == pytest.approx(0.5, abs=0.01)  # variance 0.25
    assert raw.mean().item() == pytest.approx(0.0, abs=0.01)
    out = mechanism("noise")(grey, torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, (grey + raw).clamp(0, 1))  # same draws, then clamped
    assert (out == 0).float().mean().item() == pytest.approx(0.1587, abs=0.01)  # P(N(0, .25) < −0.5) = Φ(−1)
    # Seeded: the same generator state gives the same noise.
    assert torch.equal(out, mechanism("noise")(grey, torch.Generator().manual_seed(0)))


def test_apply_mechanisms_per_sample():
    x = dot(10, 12).repeat(10, 1, 1, 1)
    out = apply_mechanisms(x, np.arange(10), torch.Generator().manual_seed(0))
    for k, name in enumerate(MECHANISM_NAMES[:8]):
        assert torch.equal(out[k:k + 1], dot(*MOVES[name]))
    assert torch.equal(out[8:9], 1 - dot(10, 12))
    with pytest.raises(DataError):
        apply_mechanisms(x, np.full(10, 10))


def test_digits_shape_range_and_registry(digits):
    assert DATASETS.get("digits") is Digits and FILE_LOADERS.get("digits") is Digits
    assert digits.factor_names == ("digit", "sample") and digits.factor_sizes == (10, 174) and len(digits) == 1740
    img = digits.images_at(np.arange(len(digits)))
    assert img.shape == (1740, 1, 32, 32) and img.dtype == torch.float32
    assert img.min() == 0 and img.max() == 1  # sklearn's 0..16 scaled to [0, 1]
    # The 4-pixel zero border (24×24 digit, padded) keeps translated digits whole.
    assert img[..., :4, :].abs().sum() == 0 and img[..., -4:].abs().sum() == 0
    assert (img.sum((1, 2, 3)) > 10).all()  # no blank images


def test_digits_match_sklearn_source(digits):
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = digits.factors_to_index(np.array([[3, 5]]))
    src = digits.source_index[idx[0]]
    assert d.target[src] == 3 and (np.flatnonzero(d.target == 3)[5] == src)
    img = digits.images_at(idx)[0, 0]
    # Bilinear ×3 upsampling (align_corners=False): the centre pixel of each 3×3 block is the source pixel.
    assert np.allclose(img[4 + 1:28:3, 4 + 1:28:3].numpy(), d.images[src] / 16, atol=1e-6)


def test_class_balance(digits):
    f = digits.index_to_factors(np.arange(len(digits)))
    assert np.array_equal(np.bincount(f[:, 0]), np.full(10, 174))
    from sklearn.datasets import load_digits
    assert np.array_equal(load_digits().target[digits.source_index], f[:, 0])  # labels match the source


@pytest.mark.parametrize("res", [16, 64])
def test_other_resolutions(res):
    img = Digits(resolution=res).images(np.array([[0, 0], [9, 173]]))
    assert img.shape == (2, 1, res, res) and img.min() >= 0 and img.max() <= 1


def test_bad_arguments(tmp_path, digits):
    with pytest.raises(DataError, match="resolution"):
        Digits(resolution=28)
    missing = tmp_path / "no_mnist_here"
    with pytest.raises(DataError, match=str(missing)):
        Digits(path=str(missing))
    with pytest.raises(DataError, match="no MNIST"):
        Digits(path=str(tmp_path))  # exists, but holds no MNIST files: never downloads
    with pytest.raises(DataError):
        digits.images(np.array([[10, 0]]))


def test_icm_halves_are_disjoint_and_cover_the_data(digits):
    icm = ICMPairs(digits, seed=0)
    parts = [icm.canonical["train"], icm.transformed["train"], icm.canonical["test"], icm.transformed["test"]]
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx) == len(digits)  # pairwise disjoint, together everything
    # Balanced classes in every part; the halves are (nearly) equal in size.
    for p in parts:
        counts = np.bincount(digits.index_to_factors(p)[:, 0], minlength=10)
        assert counts.max() == counts.min()
    assert abs(len(parts[0]) - len(parts[1])) <= 10 and len(parts[2]) + len(parts[3]) == 10 * 35


def test_icm_pairs_shapes_sources_and_determinism(digits):
    icm = ICMPairs(digits, seed=0)
    can, tr, mech, src = icm.pairs(200, np.random.default_rng(0), return_sources=True)
    assert can.shape == tr.shape == (200, 1, 32, 32) and mech.shape == (200,) and mech.dtype == torch.int64
    assert set(mech.tolist()) == set(range(10))
    assert np.isin(src, icm.transformed["train"]).all()
    assert tr.min() >= 0 and tr.max() <= 1
    # Transformed images are the mechanisms applied to their originals (the deterministic ones exactly).
    orig = digits.images_at(src)
    for k, m in enumerate(MECHANISMS[:9]):
        rows = (mech == k).nonzero().flatten()
        assert torch.equal(tr[rows], m(orig[rows]))
    # Canonical images are never the originals of transformed ones: no canonical image equals any source image.
    can_set = {tuple(x.flatten().tolist()) for x in digits.images_at(icm.canonical["train"])}
    assert not any(tuple(x.flatten().tolist()) in can_set for x in orig)
    # Deterministic given seed and rng; a different seed changes the split.
    again = ICMPairs(digits, seed=0).pairs(200, np.random.default_rng(0))
    assert all(torch.equal(a, b) for a, b in zip((can, tr, mech), again))
    assert not np.array_equal(ICMPairs(digits, seed=1).canonical["train"], icm.canonical["train"])
    t = icm.pairs(8, np.random.default_rng(0), split="test", return_sources=True)[3]
    assert np.isin(t, icm.transformed["test"]).all()
    with pytest.raises(DataError):
        icm.pairs(2, np.random.default_rng(0), split="val")


def test_digits_deterministic():
    f = np.array([[0, 0], [5, 100], [9, 173]])
    assert torch.equal(Digits().images(f), Digits().images(f))


def write_fake_mnist(root, per_class: int = 3) -> np.ndarray:
    """A tiny torchvision MNIST root (all four idx files): image k of class c is filled with grey level 10·c + k."""
    import struct

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)[::-1].copy()  # classes in reverse source order
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for c in range(10):
        for k, row in enumerate(np.flatnonzero(labels == c)):
            images[row] = 10 * c + k
    for split in ("train", "t10k"):
        header = struct.pack(">iiii", 2051, len(labels), 28, 28)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, len(labels)) + labels.tobytes())
    return labels


def test_mnist_loader_from_a_local_root(tmp_path):
    labels = write_fake_mnist(tmp_path)
    ds = Digits(path=str(tmp_path))
    assert ds.factor_sizes == (10, 3)
    assert (labels[ds.source_index] == np.repeat(np.arange(10), 3)).all()
    img = ds.images(np.array([[7, 2]]))[0, 0]  # class 7, its third image: grey 72, zero-padded 28 -> 32
    assert img.shape == (32, 32)
    assert torch.allclose(img[2:30, 2:30], torch.full((28, 28), 72 / 255))
    assert img[:2].abs().sum() == 0 and img[:, 30:].abs().sum() == 0
