"""Reconstruction error on images a run never trained on, chosen by factor (001 sec 3.2 / Table 3, 000 sec 3).

001's extrapolation reports "the average reconstruction error (MSE x1000) on novel observations": images
of the held-out shape that no stage saw. Every stage of a sweep uses the same seed and split fractions,
and Split depends only on (dataset size, seed) (data/base.py), so the unfiltered split's test images are
the same for all of them, whatever a stage's data.include / data.exclude; the held-out set is those test
images that pass the filter, minus any the run itself trained on (a filtered split can reach a few
positions further into the permutation).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from .build import build_split, load_run
from .data.base import GroundTruthDataset, Split, factor_mask
from .metrics.fid import fid_score
from .metrics.reconstruction import batched_images
from .models.base import LatentModel
from .spec.schema import Spec
from .spec.sweep import HeldoutSpec


def heldout_index(spec: Spec, dataset: GroundTruthDataset, *, include: Mapping | None = None,
                  exclude: Mapping | None = None, split: str = "test", n: int | None = None,
                  where: str = "heldout") -> np.ndarray:
    """Flat indices of the unfiltered `split` images passing include/exclude, minus the run's own training
    images, first n of them (the split's order is a seeded permutation, so these are a uniform sample)."""
    full = Split(len(dataset), spec.data.split, spec.seed)
    index = full[split]
    keep = factor_mask(dataset, include, exclude, where=where)
    if keep is not None:
        index = index[keep[index]]
    index = index[~np.isin(index, build_split(spec, dataset).train)]
    return index[:n] if n is not None else index


@torch.no_grad()
def mse_x1000(model: LatentModel, dataset: GroundTruthDataset, index: np.ndarray,
              device: torch.device | str = "cpu", batch_size: int = 256) -> float:
    """Mean squared error per pixel between the images and their reconstructions, times 1000 (001 Fig. 7)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x in batched_images(dataset, index, batch_size, device):
        total += float(((model.reconstruct(x).float() - x.float()) ** 2).sum())
        count += x.numel()
    model.train(was_training)
    return 1000.0 * total / max(count, 1)


@torch.no_grad()
def fid_reconstructions(model: LatentModel, dataset: GroundTruthDataset, index: np.ndarray,
                        device: torch.device | str = "cpu", batch_size: int = 256) -> tuple[float, str]:
    """FID between the images and their reconstructions (000 Fig. 8 scores each transfer stage's set this way),
    in the feature space metrics.fid picks (Inception with local weights, else the named random conv net)."""
    was_training = model.training
    model.eval()
    real = batched_images(dataset, index, batch_size, device)
    recon = (model.reconstruct(x) for x in batched_images(dataset, index, batch_size, device))
    out = fid_score(real, recon, features="auto", device=device)
    model.train(was_training)
    return float(out["fid"]), str(out["fid_features"])


def heldout_metrics(run_dir: str | Path, subsets: Mapping[str, HeldoutSpec], *,
                    device: str = "cpu") -> dict[str, float]:
    """{heldout_<name>_mse_x1000, heldout_<name>_images} for each named subset (a sweep's `heldout:` entry) of a
    finished run, and heldout_<name>_fid_recon_<features> where the subset asks for `fid: true`."""
    run = load_run(run_dir, device=device)
    out: dict[str, float] = {}
    for name, sub in subsets.items():
        n = sub.n if sub.n is not None else run.spec.evaluate.val_samples
        index = heldout_index(run.spec, run.dataset, include=sub.include, exclude=sub.exclude, split=sub.split, n=n,
                              where=f"heldout.{name}")
        out[f"heldout_{name}_mse_x1000"] = mse_x1000(run.model, run.dataset, index, device)
        out[f"heldout_{name}_images"] = int(len(index))
        if sub.fid:
            value, features = fid_reconstructions(run.model, run.dataset, index, device)
            out[f"heldout_{name}_fid_recon_{features}"] = value
    return out
