"""Properties every procedural dataset must have: the originals' grids, determinism, and every factor
visibly changing the image."""
from __future__ import annotations

import numpy as np
import pytest

from causalrep.data import DATASETS

PROCEDURAL = [n for n in DATASETS.names() if n not in ("mpi3d", "folder", "hdf5")]  # these exist only as files
# the originals' factor grids (Matthey et al. 2017; Burgess & Kim 2018; CausalVAE's generator: 84 x 88 causes)
GRIDS = {"dsprites": (3, 6, 40, 32, 32), "shapes3d": (10, 10, 10, 8, 4, 15), "pendulum": (84, 88)}
# smallest mean absolute pixel change between neighbouring values of one factor (others at mid-range),
# per dataset: a one-step move of a 64 px sprite position by 1.4 px changes >= ~40 of 4096 binary pixels
# (~0.01 mean); a one-step hue change recolours a whole surface; a 0.9-degree pendulum step moves the rod
MIN_CHANGE = {"dsprites": 2e-3, "shapes3d": 2e-3, "pendulum": 2e-4, "digits": 1e-2, "icm_digits": 1e-2}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_factor_grids_equal_the_originals(name):
    assert tuple(DATASETS.get(name)(resolution=64).factor_sizes) == GRIDS[name]


@pytest.mark.parametrize("name", PROCEDURAL)
def test_generation_is_deterministic(name):
    a, b = DATASETS.get(name)(resolution=64), DATASETS.get(name)(resolution=64)
    f = a.sample_factors(8, np.random.default_rng(0))
    assert np.array_equal(f, b.sample_factors(8, np.random.default_rng(0)))
    assert (a.images(f) == b.images(f)).all()


@pytest.mark.parametrize("name", PROCEDURAL)
def test_every_factor_changes_the_image(name):
    ds = DATASETS.get(name)(resolution=64)
    rng = np.random.default_rng(1)
    for k, size in enumerate(ds.factor_sizes):
        base = ds.sample_factors(6, rng)
        nxt = base.copy()
        base[:, k] = rng.integers(0, size - 1, len(base))
        nxt[:, k] = base[:, k] + 1  # neighbouring factor values
        change = (ds.images(base) - ds.images(nxt)).abs().mean(dim=(1, 2, 3))
        assert float(change.min()) > MIN_CHANGE[name], (ds.factor_names[k], change.tolist())
