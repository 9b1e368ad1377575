"""Reconstruction error on held-out images, beside the error of predicting the mean training image."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..data.base import GroundTruthDataset, Split
from ..models.base import LatentModel, reconstruction_loss
from .registry import METRICS


def batched_images(dataset: GroundTruthDataset, index: np.ndarray, batch_size: int,
                   device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    for start in range(0, len(index), batch_size):
        yield dataset.images_at(index[start:start + batch_size]).to(device)


@torch.no_grad()
def mean_image(dataset: GroundTruthDataset, index: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Pixelwise mean of the images at `index`: (C, H, W)."""
    total = None
    for x in batched_images(dataset, index, batch_size):
        s = x.double().sum(0)
        total = s if total is None else total + s
    return (total / len(index)).float()


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


@METRICS.register("reconstruction")
@torch.no_grad()
def reconstruction(*, model: LatentModel, dataset: GroundTruthDataset, split: Split, n: int, loss: str,
                   device: torch.device | str = "cpu", batch_size: int = 256) -> dict[str, float]:
    """val_recon_error: the per-image loss (summed over pixels, as trained; 001 sec 3) on the first
    n validation images; val_recon_error_mean_image: the same loss when every image is predicted
    by the mean of n training images — the floor a model must beat to have learnt anything."""
    val = split.val[:n]
    mean = mean_image(dataset, split.train[:n]).to(device)
    was_training = model.training
    model.eval()
    err = base = 0.0
    for x in batched_images(dataset, val, batch_size, device):
        err += float(reconstruction_loss(model.decode_logits(model.encode(x)), x, loss)) * len(x)
        base += float(reconstruction_loss(_logit(mean).expand_as(x), x, loss)) * len(x)
    model.train(was_training)
    return {"val_recon_error": err / len(val), "val_recon_error_mean_image": base / len(val)}
