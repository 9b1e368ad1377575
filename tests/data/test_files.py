"""Real-file loaders on small files written in the originals' formats."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from causalrep.data.files import DSpritesFile, MPI3D, npz_array
from causalrep.errors import DataError


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_array_memmaps_stored_members_and_loads_compressed_ones(tmp_path, compressed):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    b = np.linspace(0, 1, 5)
    path = tmp_path / "f.npz"
    (np.savez_compressed if compressed else np.savez)(path, a=a, b=b)
    got = npz_array(path, "a")
    assert isinstance(got, np.memmap) != compressed  # stored members are mapped, not read
    assert np.array_equal(got, a) and np.array_equal(npz_array(path, "b"), b)
    with pytest.raises(DataError, match=r"no array 'c' in the file \(it has: a, b\)"):
        npz_array(path, "c")


class SmallDSprites(DSpritesFile):
    factor_sizes = (3, 2, 2, 2, 2)  # the dSprites format on a 48-image grid


def write_dsprites(path, sizes):
    n = int(np.prod(sizes))
    grid = np.stack(np.unravel_index(np.arange(n), sizes), axis=1)
    imgs = np.zeros((n, 64, 64), dtype=np.uint8)
    for i, f in enumerate(grid):  # a bar whose row/column encode the factors: every image distinct
        imgs[i, 2 + 4 * f[0]: 4 + 4 * f[0], :] = 1
        imgs[i, :, 8 * f[1] + 4 * f[2] + 2 * f[3] + f[4]] = 1
    classes = np.concatenate([np.zeros((n, 1), dtype=np.int64), grid], axis=1)  # colour column first
    np.savez(path, imgs=imgs, latents_classes=classes, latents_values=classes.astype(float))
    return imgs


def test_dsprites_npz_round_trip(tmp_path):
    imgs = write_dsprites(tmp_path / "d.npz", SmallDSprites.factor_sizes)
    ds = SmallDSprites(path=str(tmp_path / "d.npz"), resolution=64)
    assert len(ds) == 48
    factors = np.array([[2, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
    x = ds.images(factors)
    assert x.shape == (3, 1, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], torch.from_numpy(imgs[ds.factors_to_index(factors)]).float())
    small = SmallDSprites(path=str(tmp_path / "d.npz"), resolution=16).images(factors)
    assert torch.allclose(small, torch.nn.functional.avg_pool2d(x, 4))


def test_dsprites_npz_in_the_wrong_order_is_rejected(tmp_path):
    write_dsprites(tmp_path / "d.npz", SmallDSprites.factor_sizes)
    data = dict(np.load(tmp_path / "d.npz"))
    data["latents_classes"] = data["latents_classes"][::-1].copy()
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(DataError, match="not in the row-major factor order"):
        SmallDSprites(path=str(tmp_path / "bad.npz"))


class SmallMPI3D(MPI3D):
    factor_sizes = (2, 1, 2, 1, 1, 2, 3)  # the MPI3D format on a 24-image grid


def test_mpi3d_npz_round_trip_and_errors(tmp_path):
    n = 24
    images = np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "m.npz", images=images)
    ds = SmallMPI3D(path=str(tmp_path / "m.npz"))
    f = np.array([[1, 0, 1, 0, 0, 1, 2], [0, 0, 0, 0, 0, 0, 1]])
    x = ds.images(f)
    expect = torch.from_numpy(images[ds.factors_to_index(f)]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(x, expect) and ds.factors_to_index(f).tolist() == [23, 1]
    np.savez(tmp_path / "short.npz", images=images[:10])
    with pytest.raises(DataError, match=r"short.npz: 'images' has shape \(10, 64, 64, 3\); expected \(24, 64, 64, 3\)"):
        SmallMPI3D(path=str(tmp_path / "short.npz"))
    np.savez(tmp_path / "nokey.npz", imgs=images)
    with pytest.raises(DataError, match="nokey.npz: no array 'images'"):
        SmallMPI3D(path=str(tmp_path / "nokey.npz"))
    with pytest.raises(DataError, match="file not found"):
        MPI3D(path=str(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match="mpi3d has no procedural generator"):
        MPI3D()
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match="junk.npz: not a readable .npz"):
        SmallMPI3D(path=str(tmp_path / "junk.npz"))
