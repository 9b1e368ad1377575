"""Handwritten digits for the independent-mechanisms experiments (Parascandolo et al. 2018; paper 004, sec. 4).

By default the 1,797 8×8 digits bundled with scikit-learn (`sklearn.datasets.load_digits`, grey levels 0..16;
nothing is downloaded); with `path=` the MNIST training (or test) set from a local torchvision MNIST root.
Images are brought to 32×32 in [0, 1] as in 004 sec. 4 ("zero-padded so that they have size 32×32, and the pixel
intensities are scaled between 0 and 1"): MNIST's 28×28 digits are zero-padded by 2 pixels; scikit-learn's 8×8
digits (whose ink reaches the border) are scaled ×3 to 24×24 (bilinear) and zero-padded by 4 pixels, so the
4-pixel translations of the mechanisms (causalrep.data.mechanisms) move a digit without cutting it.

Factors: (digit class, sample index within the class). Every class keeps its first `per_class` images in source
order, where `per_class` is the smallest class count (174 for scikit-learn, 5,421 for the MNIST training set),
so the factor grid is complete and the classes are exactly balanced; flat index = class · per_class + sample.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torchvision.datasets import MNIST

from ..errors import DataError
from .base import DATASETS, FILE_LOADERS, GroundTruthDataset
from .mechanisms import MECHANISMS, apply_mechanisms

CANVAS = 32
RESOLUTIONS = (16, 32, 64)  # other than 32: the 32×32 image resized (bilinear, anti-aliased)
CHUNK = 4096


def _load_sklearn() -> tuple[torch.Tensor, np.ndarray, float]:
    """(1797, 1, 8, 8) float32 grey levels, (1797,) labels, and the maximum grey level (16)."""
    d = load_digits()
    return torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1), np.asarray(d.target, np.int64), 16.0


def _load_mnist(path: str, train: bool) -> tuple[torch.Tensor, np.ndarray, float]:
    """(N, 1, 28, 28) uint8 and (N,) labels from a torchvision MNIST root (<path>/MNIST/raw/...); no download."""
    if not os.path.isdir(path):
        raise DataError(f"digits: MNIST root {path} does not exist (expected a torchvision MNIST root holding "
                        f"MNIST/raw/*-idx*-ubyte; nothing is downloaded)")
    try:
        ds = MNIST(root=path, train=train, download=False)
    except (RuntimeError, OSError) as e:
        raise DataError(f"digits: no MNIST {'training' if train else 'test'} files under {path} ({e}); expected "
                        f"a torchvision MNIST root holding MNIST/raw/*-idx*-ubyte") from None
    return ds.data.unsqueeze(1), ds.targets.numpy().astype(np.int64), 255.0


@DATASETS.register("digits")
@FILE_LOADERS.register("digits")  # data.path: a local torchvision MNIST root
class Digits(GroundTruthDataset):
    """10 × per_class single-channel digit images (32×32 by default), factors (digit, sample)."""

    factor_names = ("digit", "sample")
    factor_sizes = (10, 174)  # scikit-learn's; an MNIST instance sets its own
    channels = 1

    def __init__(self, *, resolution: int = 32, path: str | None = None, train: bool = True):
        if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool) \
                or resolution not in RESOLUTIONS:
            raise DataError(f"digits: resolution {resolution!r} is not supported; allowed: 16, 32, 64")
        self.resolution = int(resolution)
        self.path = path
        raw, target, self._max = _load_sklearn() if path is None else _load_mnist(path, train)
        counts = np.bincount(target, minlength=10)
        if len(counts) != 10 or counts.min() == 0:
            raise DataError(f"digits: expected labels 0..9 with every class present; got counts {counts.tolist()}")
        per_class = int(counts.min())
        # Row-major (class, sample) order: each class's first per_class images in source order.
        order = np.concatenate([np.flatnonzero(target == c)[:per_class] for c in range(10)])
        self._raw = raw[torch.as_tensor(order)]  # (10·per_class, 1, h, w), source grey levels
        self.source_index = order  # flat index -> row of the source (sklearn's or MNIST's)
        self.factor_sizes = (10, per_class)

    def _check(self, factors: np.ndarray) -> np.ndarray:
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != 2 or not np.issubdtype(factors.dtype, np.integer):
            raise DataError(f"digits: factors must be integer (digit, sample) indices of shape (N, 2); got "
                            f"{factors.dtype} {factors.shape}")
        if (factors < 0).any() or (factors >= np.asarray(self.factor_sizes)).any():
            raise DataError(f"digits: factor indices out of range; sizes are {self.factor_sizes}")
        return factors.astype(np.int64)

    def images(self, factors: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
        """(N, 1, R, R) float32 in [0, 1] on `device` (default CPU) for (N, 2) (digit, sample) indices."""
        index = self.factors_to_index(self._check(factors))
        device = torch.device("cpu") if device is None else torch.device(device)
        out = torch.empty(len(index), 1, self.resolution, self.resolution, device=device)
        for start in range(0, len(index), CHUNK):
            out[start:start + CHUNK] = self._prepare(self._raw[torch.as_tensor(index[start:start + CHUNK])]).to(device)
        return out

    def _prepare(self, raw: torch.Tensor) -> torch.Tensor:
        """(n, 1, h, w) source grey levels -> (n, 1, R, R) in [0, 1]: scale, bring to 32×32, resize to R."""
        x = raw.float() / self._max
        if x.shape[-1] == 8:  # scikit-learn: 8×8 -> 24×24 (bilinear), then a 4-pixel zero border
            x = F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False)
        pad = (CANVAS - x.shape[-1]) // 2  # 4 (scikit-learn) or 2 (MNIST's 28×28)
        x = F.pad(x, (pad, pad, pad, pad))  # (n, 1, 32, 32)
        if self.resolution != CANVAS:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=True)
        return x.clamp(0.0, 1.0)


class ICMPairs:
    """Canonical and transformed digits as in 004 sec. 4, from disjoint halves of the data.

    Per class, the samples are shuffled with `seed`; the first `test_fraction` go to the test split, the rest to
    the train split, and each split is cut in two halves: a canonical half (shown as they are) and a transformed
    half (shown only after a mechanism), so no transformed digit has its original among the canonical ones, as
    in 004 ("we split the training partition of MNIST in half, and transform all and only the examples in the
    first half"). Everything is deterministic given `seed` and the sampling rng.
    """

    def __init__(self, dataset: Digits | None = None, *, seed: int = 0, test_fraction: float = 0.2):
        if not 0.0 <= test_fraction < 1.0:
            raise DataError(f"ICMPairs: test_fraction must lie in [0, 1); got {test_fraction}")
        self.dataset = dataset if dataset is not None else Digits()
        n_cls, per = self.dataset.factor_sizes
        rng = np.random.default_rng(seed)
        n_test = int(round(test_fraction * per))
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("train_c", "train_t", "test_c", "test_t")}
        for c in range(n_cls):
            perm = c * per + rng.permutation(per)  # flat indices of class c, shuffled
            test, train = perm[:n_test], perm[n_test:]
            for split, idx in (("train", train), ("test", test)):
                parts[f"{split}_c"].append(idx[:len(idx) // 2])
                parts[f"{split}_t"].append(idx[len(idx) // 2:])
        # Flat dataset indices per split; canonical[s] and transformed[s] are disjoint, and so are the splits.
        self.canonical = {s: np.sort(np.concatenate(parts[f"{s}_c"])) for s in ("train", "test")}
        self.transformed = {s: np.sort(np.concatenate(parts[f"{s}_t"])) for s in ("train", "test")}
        for s in ("train", "test"):
            if n_test == 0 and s == "test":
                continue
            if not len(self.canonical[s]) or not len(self.transformed[s]):
                raise DataError(f"ICMPairs: the {s} split has an empty half ({per} samples per class)")

    @property
    def num_mechanisms(self) -> int:
        return len(MECHANISMS)

    def pairs(self, n: int, rng: np.random.Generator, split: str = "train", *, return_sources: bool = False):
        """(canonical (n, 1, R, R), transformed (n, 1, R, R), mechanism_id (n,) int64).

        canonical[i] is drawn uniformly from the canonical half; transformed[i] is an independent draw from the
        transformed half with a uniformly drawn mechanism applied (the noise uses a torch.Generator seeded from
        `rng`). The two are unpaired, as in 004. With return_sources, also the (n,) flat dataset indices of the
        transformed images' originals (e.g. to score inverted mechanisms).
        """
        if split not in self.canonical:
            raise DataError(f"ICMPairs: unknown split {split!r}; valid: train, test")
        if not len(self.canonical[split]):
            raise DataError(f"ICMPairs: the {split} split is empty (test_fraction=0)")
        can = self.canonical[split][rng.integers(0, len(self.canonical[split]), n)]
        src = self.transformed[split][rng.integers(0, len(self.transformed[split]), n)]
        mech = rng.integers(0, len(MECHANISMS), n)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        ds = self.dataset
        transformed = apply_mechanisms(ds.images_at(src), mech, gen)
        out = (ds.images_at(can), transformed, torch.as_tensor(mech, dtype=torch.int64))
        return (*out, src) if return_sources else out
