"""Fréchet distance between image sets in a named feature space (FID, Heusel et al. 2017; 001 sec 3), and the FIDs
of a model's samples and reconstructions (the registered `fid` metric)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg.lapack import dpstrf
from torch import nn
from torchvision.models import inception_v3
from tqdm.auto import tqdm

from ..data.base import GroundTruthDataset, Split
from ..errors import CausalrepError
from ..generate.sampling import SAMPLERS, iter_samples
from ..models.base import LatentModel
from ..registry import Registry
from .reconstruction import batched_images
from .registry import METRICS

WEIGHTS_ENV = "CAUSALREP_INCEPTION_WEIGHTS"
PROGRESS_MIN_BATCHES = 4  # a tqdm bar only when a feature pass takes more batches than this

# name -> fn(*, weights: str | Path | None) -> nn.Module mapping (B, 3, H, W) in [0, 1] to (B, dim) features
FEATURES: Registry[Callable[..., nn.Module]] = Registry("FID feature network")


# -- the distance ------------------------------------------------------------------------------------
def _psd_factor(s: np.ndarray) -> np.ndarray:
    """B (d, r) with B Bᵀ = s for a symmetric PSD s of numerical rank r: pivoted Cholesky (LAPACK
    dpstrf, stopping at pivots below d * eps * max(diag)), exact for singular covariances."""
    c, piv, rank, info = dpstrf(s, lower=1)
    if info < 0:
        raise ValueError(f"frechet_distance: LAPACK dpstrf rejected argument {-info}")
    b = np.empty((s.shape[0], rank))
    b[piv - 1] = np.tril(c)[:, :rank]  # s = P L Lᵀ Pᵀ, so B = P L[:, :rank]
    return b


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^{1/2}): the squared 2-Wasserstein distance between
    N(mu1, S1) and N(mu2, S2) (Heusel et al. 2017, eq. 6 - the FID), in float64.

    S1 S2 is not symmetric, so its matrix square root (scipy.linalg.sqrtm in pytorch-fid) can come
    out complex or inaccurate when the covariances are near-singular (fewer images than feature
    dims), which pytorch-fid patches with an eps * I offset. Instead the trace term is taken from a
    symmetric PSD matrix: Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2} = Σ sqrt(eig). Any
    factor S1 = B Bᵀ gives the same nonzero eigenvalues (AB and BA share them: S1^{1/2} S2 S1^{1/2}
    ~ S2 S1 = S2 B Bᵀ ~ Bᵀ S2 B), so we use the pivoted Cholesky factor B (d x rank) and one
    symmetric `eigvalsh` of Bᵀ S2 B: no eigenvectors (a 2048-d eigh with vectors costs ~3x the
    eigenvalues alone), exact for singular S1, no offset. Round-off negatives are clipped to 0.
    """
    mu1, mu2 = (np.asarray(m, dtype=np.float64).reshape(-1) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape} / {mu2.shape}, "
                         f"sigma {s1.shape} / {s2.shape}")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2  # symmetrise round-off
    b = _psd_factor(s1)  # (d, r)
    m = b.T @ s2 @ b  # (r, r) symmetric PSD, nonzero eigenvalues those of S1^{1/2} S2 S1^{1/2}
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum() if b.shape[1] else 0.0
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt), 0.0)


# -- feature networks ----------------------------------------------------------------------------------
def _as_rgb01(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] (uint8 is divided by 255); grey (C = 1) repeated to 3 channels."""
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    x = x.float()
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"FID: expected images (B, 1 or 3, H, W), got shape {tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class RandomConvFeatures(nn.Module):
    """A fixed, randomly initialised conv net (seed 0): 4 × (3x3 conv stride 2 + ReLU), global average
    pool -> 256-d. No weights file: built bit-identically on the fly, so "FID[random_conv]" is a
    named, reproducible feature space wherever the Inception weights are not available. Random
    convolutional embeddings are a known stand-in for ImageNet features off ImageNet's domain
    (Naeem et al. 2020, "Reliable fidelity and diversity metrics"), but the numbers are only
    comparable with other FID[random_conv] numbers at the same input size.
    """

    name = "random_conv"
    dim = 256
    size = 64  # inputs are bilinearly resized to 64 x 64 so the feature space does not depend on resolution

    def __init__(self, seed: int = 0):
        super().__init__()
        widths = (3, 32, 64, 128, 256)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # He-normal weights (fan_in, ReLU gain) and zero biases, from the seeded generator
            for conv in self.convs:
                fan_in = conv.weight[0].numel()
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                conv.bias.zero_()
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_rgb01(x)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        h = x * 2 - 1  # (B, 3, 64, 64) in [-1, 1]
        for conv in self.convs:
            h = F.relu(conv(h))  # 64 -> 32 -> 16 -> 8 -> 4
        return h.mean(dim=(2, 3))  # (B, 256)


class InceptionFeatures(nn.Module):
    """torchvision's Inception-v3, pool3 (the 2048-d average pool before the classifier), from a
    LOCAL weights file (a torchvision state_dict, e.g. inception_v3_google-0cc3c7bd.pth).

    Honest caveat: torchvision's ImageNet Inception-v3 weights are NOT the TF-FID Inception weights
    (pt_inception-2015-12-05, which pytorch-fid and the original TF code use); the architectures
    and weights differ slightly, so these numbers are "FID (torchvision Inception)" and are not
    comparable with published FIDs - compare them only with each other.
    Preprocessing as torchvision's pretrained pipeline: bilinear resize to 299 x 299 (no crop, to
    keep the whole image), ImageNet mean/std normalisation, and `transform_input=True`, which maps
    that back to the [-1, 1] range the ported weights were trained with.
    """

    name = "inception"
    dim = 2048
    size = 299
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self, weights: str | Path):
        super().__init__()
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        try:
            net.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise CausalrepError(f"FID: {weights} is not a torchvision inception_v3 state_dict: "
                                 f"{str(e).splitlines()[0]}") from None
        net.fc = nn.Identity()  # eval-mode forward now returns the pool3 features (dropout is off)
        self.net = net
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_rgb01(x)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - self._mean) / self._std)  # (B, 2048)


def inception_weights_path(weights: str | Path | None = None) -> Path | None:
    """The configured Inception weights file: the explicit argument, else $CAUSALREP_INCEPTION_WEIGHTS."""
    weights = weights if weights is not None else os.environ.get(WEIGHTS_ENV) or None
    return Path(weights).expanduser() if weights is not None else None


@FEATURES.register("inception")
def _inception(*, weights: str | Path | None = None) -> nn.Module:
    path = inception_weights_path(weights)
    if path is None:
        raise CausalrepError(f"FID features 'inception' need a local torchvision inception_v3 weights file "
                             f"(nothing is downloaded): set {WEIGHTS_ENV}=/path/to/inception_v3.pth or pass "
                             f"weights=PATH; or use features='random_conv'")
    if not path.is_file():
        source = "argument weights" if weights is not None else f"${WEIGHTS_ENV}"
        raise CausalrepError(f"FID features 'inception': weights file {str(path)!r} (from {source}) does not exist")
    return InceptionFeatures(path)


@FEATURES.register("random_conv")
def _random_conv(*, weights: str | Path | None = None) -> nn.Module:
    return RandomConvFeatures(seed=0)


def resolve_features(features: str = "auto", weights: str | Path | None = None) -> str:
    """'auto' -> 'inception' when Inception weights are configured, else 'random_conv'."""
    if features == "auto":
        return "inception" if inception_weights_path(weights) is not None else "random_conv"
    FEATURES.get(features)  # raises, listing the valid names
    return features


_NETS: dict[tuple, nn.Module] = {}


def feature_net(features: str = "auto", *, weights: str | Path | None = None,
                device: torch.device | str = "cpu") -> nn.Module:
    """The (cached) feature network named by `features`, in eval mode on `device`; `.name` says which."""
    name = resolve_features(features, weights)
    path = inception_weights_path(weights) if name == "inception" else None
    stamp = path.stat().st_mtime_ns if path is not None and path.is_file() else None  # a rewritten file reloads
    key = (name, str(path), stamp, str(torch.device(device)))
    if key not in _NETS:
        _NETS[key] = FEATURES.get(name)(weights=weights).to(device).eval()
    return _NETS[key]


# -- statistics and the score -----------------------------------------------------------------------------
def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> tuple[Iterable[torch.Tensor], int | None]:
    if isinstance(images, torch.Tensor):
        return (images[i:i + batch_size] for i in range(0, len(images), batch_size)), -(-len(images) // batch_size)
    return images, getattr(images, "__len__", lambda: None)()


@torch.no_grad()
def activation_stats(images: torch.Tensor | Iterable[torch.Tensor], net: nn.Module, *, batch_size: int = 64,
                     device: torch.device | str = "cpu", total: int | None = None,
                     desc: str = "FID features") -> tuple[np.ndarray, np.ndarray, int]:
    """Mean (dim,) and covariance (dim, dim) in float64 of net's features over `images` - a
    (N, C, H, W) tensor in [0, 1] or an iterable of such batches (streamed: features are not kept,
    only float64 running sums). `total` is the number of batches of an iterable, for the bar."""
    batches, n_batches = _batches(images, batch_size)
    n_batches = n_batches if n_batches is not None else total
    s1 = s2 = None
    count = 0
    bar = tqdm(batches, total=n_batches, desc=desc, leave=False,
               disable=n_batches is not None and n_batches <= PROGRESS_MIN_BATCHES)
    for x in bar:
        f = net(x.to(device)).double().cpu()  # (B, dim)
        s1 = f.sum(0) if s1 is None else s1 + f.sum(0)
        s2 = f.T @ f if s2 is None else s2 + f.T @ f
        count += len(f)
    if count < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {count}")
    mu = s1 / count
    sigma = (s2 - count * torch.outer(mu, mu)) / (count - 1)  # unbiased, like np.cov
    return mu.numpy(), sigma.numpy(), count


def fid_score(images_a: torch.Tensor | Iterable[torch.Tensor], images_b: torch.Tensor | Iterable[torch.Tensor],
              features: str = "auto", batch_size: int = 64, device: torch.device | str = "cpu",
              weights: str | Path | None = None) -> dict:
    """FID between two image sets ((N, C, H, W) in [0, 1], or iterables of batches) in the named
    feature space: {"fid": value, "fid_features": "inception" | "random_conv"}. Name the metric
    after the features (fid_inception, fid_random_conv): the two are not comparable."""
    net = feature_net(features, weights=weights, device=device)
    mu1, s1, _ = activation_stats(images_a, net, batch_size=batch_size, device=device)
    mu2, s2, _ = activation_stats(images_b, net, batch_size=batch_size, device=device)
    return {"fid": frechet_distance(mu1, s1, mu2, s2), "fid_features": net.name}


# -- FIDs of samples and reconstructions (sampling: generate.sampling) --------------------------------------
@torch.no_grad()
def sample_fids(model: LatentModel, dataset: GroundTruthDataset, split: Split, n: int, features: str = "auto",
                device: torch.device | str | None = None, methods: Sequence[str] = ("hybrid", "prior"),
                batch_size: int = 256, seed: int = 0, groups: Sequence[Sequence[str]] | None = None,
                weights: str | Path | None = None) -> dict:
    """FID of n generated images per sampling method, and of the reconstructions of the n held-out
    test images, each against those n test images (001 sec 3; test split as in 000 sec 3):
    {"fid_<method>_<features>": ..., "fid_recon_<features>": ..., "fid_features": name}.
    Prior sampling is skipped where the model has no prior (001 sec 3). Each method draws from its
    own generator seeded with `seed`, so a method's FID does not depend on which others are asked."""
    device = torch.device(device) if device is not None else model.latent_bank.device
    net = feature_net(features, weights=weights, device=device)
    test = split.test[:n]
    m = len(test)
    batches = -(-m // batch_size)
    stats = lambda images, what: activation_stats(images, net, device=device, total=batches,  # noqa: E731
                                                  desc=f"FID features ({what})")
    mu_r, s_r, _ = stats(batched_images(dataset, test, batch_size, device), "real")
    out: dict = {}
    was_training = model.training
    model.eval()
    try:
        recon = (model.reconstruct(x.to(model.latent_bank.device)) for x in
                 batched_images(dataset, test, batch_size, device))
        out[f"fid_recon_{net.name}"] = frechet_distance(mu_r, s_r, *stats(recon, "recon")[:2])
        for method in methods:
            SAMPLERS.get(method)  # an unknown method is an error listing the valid ones
            if method == "prior" and not model.can("prior"):
                continue
            gen = torch.Generator().manual_seed(seed)
            fake = iter_samples(model, m, method, gen, batch_size, groups)
            out[f"fid_{method}_{net.name}"] = frechet_distance(mu_r, s_r, *stats(fake, method)[:2])
    finally:
        model.train(was_training)
    out["fid_features"] = net.name
    return out


# -- the registered metric ------------------------------------------------------------------------------------
@METRICS.register("fid")
def fid(*, model, dataset, split, n: int, loss: str, device: torch.device | str = "cpu",
        batch_size: int = 256) -> dict:
    """fid_<method>_<features> of n generated images per sampling method (hybrid, structured, and
    prior where the model has one) and of reconstructions, each against n held-out test images
    (001 sec 3); features 'auto' (Inception when weights are configured, else random_conv)."""
    return sample_fids(model, dataset, split, n, features="auto", device=device,
                       methods=("hybrid", "structured", "prior"), batch_size=batch_size)
