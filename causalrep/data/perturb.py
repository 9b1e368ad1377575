"""The 002 dataset perturbation x + eps * f(s(x)) (sec 4) and its uniform-noise control (sec 5.3)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import DataError
from .base import GroundTruthDataset

PATTERN_ROWS = 4096  # rows of the random pattern beyond the image; shifts wrap modulo (H + PATTERN_ROWS)


FITS = ("rescale", "clamp")


class PerturbedDataset(GroundTruthDataset):
    """Wraps a dataset, keeping its factors and labels, and perturbs every image it returns.

    x + delta lies in [-eps, 1 + eps]; BCE needs targets in [0, 1]. fit="rescale" maps it back linearly,
    x~ = (x + delta + eps) / (1 + 2 eps), which keeps the whole pattern on every pixel (the relative amplitude
    becomes eps / (1 + 2 eps)); fit="clamp" cuts it at 0 and 1, which on a binary image (dSprites) keeps
    only +eps on the background and -eps on the sprite: half of 002's pattern.
    """

    epsilon: float

    def __init__(self, base: GroundTruthDataset, fit: str = "rescale"):
        if fit not in FITS:
            raise DataError(f"data.perturbation.fit: unknown {fit!r}; valid: {', '.join(FITS)}")
        self.fit = fit
        self.base = base
        self.factor_names, self.factor_sizes = base.factor_names, base.factor_sizes
        self.factor_value_names = base.factor_value_names
        self.channels, self.resolution = base.channels, base.resolution

    def __len__(self) -> int:
        return len(self.base)

    @property
    def true_graph(self):
        return self.base.true_graph

    def sample_factors(self, n, rng):
        return self.base.sample_factors(n, rng)

    def index_to_factors(self, index):
        return self.base.index_to_factors(index)

    def factors_to_index(self, factors):
        return self.base.factors_to_index(factors)

    def fix_factor(self, factors, which, values, rng):
        return self.base.fix_factor(factors, which, values, rng)

    def factor_table(self):
        return self.base.factor_table()

    def images(self, factors: np.ndarray, device=None) -> torch.Tensor:
        x = self.base.images(factors) if device is None else self.base.images(factors, device=device)
        y = x + self.delta(np.asarray(factors), x)
        if self.fit == "clamp":
            return y.clamp(0.0, 1.0)
        return (y + self.epsilon) / (1.0 + 2.0 * self.epsilon)

    def delta(self, factors: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PatternPerturbation(PerturbedDataset):
    """x~ = x + eps * f(s(x)), (f(s))_{i,j} = p_{i',j} with i' = round(s / c_j) + i (002 eq. 8).

    p is a fixed random {-1, +1} pattern and c_j in {1, 2, 3, 4} a random column factor, both drawn
    from `seed`; the pattern slides down column j by s / c_j, so s is encoded at four scales. s is
    given as a function of (factors, images) -> (N,): a chosen factor's index (factor_s), or the least-noisy
    latent of a trained VAE (002 sec 4.1, eq. 6; build.latent_s, which loads the run). The pattern has
    PATTERN_ROWS extra rows and wraps beyond them.
    """

    def __init__(self, base: GroundTruthDataset, *, epsilon: float, s: Callable[[np.ndarray, torch.Tensor], torch.Tensor],
                 seed: int = 0, fit: str = "rescale"):
        super().__init__(base, fit)
        self.epsilon, self.s = epsilon, s
        g = torch.Generator().manual_seed(seed)
        r = base.resolution
        self.rows = r + PATTERN_ROWS
        self.pattern = torch.randint(0, 2, (self.rows, r), generator=g).float() * 2 - 1  # p_{i,j}, (rows, W)
        self.column_factor = torch.randint(1, 5, (r,), generator=g).float()  # c_j, (W,)

    def f(self, s: torch.Tensor) -> torch.Tensor:
        """(N,) values of s -> (N, H, W) patterns in {-1, +1}."""
        r = self.resolution
        shift = torch.round(s.float()[:, None] / self.column_factor[None, :]).long()  # (N, W)
        rows = (shift[:, None, :] + torch.arange(r)[None, :, None]) % self.rows  # i' = round(s/c_j) + i
        return self.pattern[rows, torch.arange(r)[None, None, :]]

    def delta(self, factors, x):
        return self.epsilon * self.f(self.s(factors, x).cpu())[:, None].to(x.device)


class UniformNoise(PerturbedDataset):
    """The control of 002 sec 5.3: pixel-wise uniform noise in [-eps, eps], fixed per image (seeded by
    the image's flat index, so an image looks the same every time it is drawn)."""

    def __init__(self, base: GroundTruthDataset, *, epsilon: float, seed: int = 0, fit: str = "rescale"):
        super().__init__(base, fit)
        self.epsilon, self.seed = epsilon, seed

    def delta(self, factors, x):
        index = self.base.factors_to_index(factors)
        noise = torch.empty(x.shape)
        for row, i in enumerate(index.tolist()):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            noise[row] = torch.rand(x.shape[1:], generator=g)
        return ((noise * 2 - 1) * self.epsilon).to(x.device)


def factor_s(dataset: GroundTruthDataset, factor: str, scale: float = 1.0):
    """s(x) = scale * (index of `factor`): the perturbation tied to a ground-truth factor."""
    sampled = dataset.factor_names[:dataset.num_factors]
    if factor not in sampled:
        raise DataError(f"data.perturbation.factor: unknown factor {factor!r}; factors: {', '.join(sampled)}")
    k = dataset.factor_names.index(factor)
    return lambda factors, x: torch.as_tensor(factors[:, k] * scale, dtype=torch.float32)
