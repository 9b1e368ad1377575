"""Sampling from a trained LatentModel: prior, hybrid (001 sec 2.3), structured hybrid (000 sec 4), traversals."""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from scipy.special import digamma
from torchvision.utils import make_grid

from ..models.base import LatentModel
from ..registry import Registry

# method -> fn(model, n, generator, groups) -> (n, latent_dim) latents on the model's device
SAMPLERS: Registry[Callable[..., torch.Tensor]] = Registry("sampling method")

# Structured hybrid sampling groups nodes whose stored latents share at least this much mutual
# information (nats). 0.3 nats is the MI of a Gaussian pair with |rho| = sqrt(1 - e^-0.6) ≈ 0.67; on
# N = 128 stored latents the KSG estimate of independent pairs has sd ≈ 0.06 (so 0.3 ≈ 5 sd: few false
# groupings over 66 pairs), while the 2-D periodic hue embeddings of 000 sec 4 score > 1 nat.
MI_THRESHOLD = 0.3


# -- latents ------------------------------------------------------------------------------------------
@torch.no_grad()
def prior_latents(model: LatentModel, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, latent_dim) from the model's own prior, model.sample_latents(n, "prior"): N(0, I) for the VAE family,
    ancestral z_L ~ N(0, I), z_i ~ p(z_i | z_>i) for the Ladder VAE (its hierarchical prior, 003); meaningful
    where model.can("prior"). Drawn on the generator's device (CPU by default), then moved to the model's."""
    return model.sample_latents(n, "prior", generator)


@torch.no_grad()
def hybrid_latents(model: LatentModel, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, latent_dim): each node's slice copied from an independently, uniformly chosen one of the N
    stored latents, Ũ_i <- U_i^(j), j ~ U{1..N} (001 sec 2.3); a node's dims stay together, and
    baselines' graphs have one node per dim (001 sec 3.1). The model implements it."""
    return model.sample_latents(n, "hybrid", generator)


def mutual_information(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, k: int = 3) -> float:
    """Kraskov-Stögbauer-Grassberger estimate (estimator 1, Kraskov et al. 2004) of I(X; Y) in nats
    between paired samples x (N, dx) and y (N, dy): it detects nonlinear dependence such as two dims
    on a circle, which correlation misses. Each dim is standardised and jittered by 1e-10 (fixed
    seed) to break ties, as scikit-learn's mutual_info_regression does."""
    x = torch.as_tensor(x, dtype=torch.float64).reshape(len(x), -1)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(len(y), -1)
    n = len(x)
    if n != len(y) or n <= k:
        raise ValueError(f"mutual_information: need the same number (> k={k}) of x and y rows, got {len(x)}, {len(y)}")
    g = torch.Generator().manual_seed(0)

    def prep(z: torch.Tensor) -> torch.Tensor:
        z = (z - z.mean(0)) / z.std(0).clamp_min(1e-12)
        return z + 1e-10 * torch.randn(z.shape, generator=g, dtype=torch.float64)

    x, y = prep(x), prep(y)
    dx, dy = torch.cdist(x, x, p=float("inf")), torch.cdist(y, y, p=float("inf"))  # max-norm, (N, N)
    dz = torch.maximum(dx, dy)
    dz.fill_diagonal_(float("inf"))
    eps = dz.kthvalue(k, dim=1).values[:, None]  # distance to the k-th neighbour in the joint space
    nx = ((dx < eps).sum(1) - 1).numpy()  # neighbours strictly closer in each marginal, self excluded
    ny = ((dy < eps).sum(1) - 1).numpy()
    return float(digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1)))


def _bank(model: LatentModel) -> torch.Tensor:
    if not bool(model.latent_bank_filled):
        raise RuntimeError("hybrid sampling needs stored latents: call store_latents() (the trainer does)")
    return model.latent_bank


@torch.no_grad()
def node_mutual_information(model: LatentModel, k: int = 3, max_rows: int = 1024) -> np.ndarray:
    """(nodes, nodes) matrix of KSG mutual information (nats) between the nodes' stored latents
    (the first max_rows of the bank); the diagonal is 0."""
    bank = _bank(model)[:max_rows].detach().cpu()
    nodes = model.graph.nodes
    mi = np.zeros((len(nodes), len(nodes)))
    for a in range(len(nodes)):
        for b in range(a + 1, len(nodes)):
            va = bank[:, model.graph.slice(nodes[a])]
            vb = bank[:, model.graph.slice(nodes[b])]
            mi[a, b] = mi[b, a] = mutual_information(va, vb, k)
    return mi


def dependent_groups(model: LatentModel, threshold: float = MI_THRESHOLD, k: int = 3,
                     max_rows: int = 1024) -> list[list[str]]:
    """Groups (connected components, in graph order) of >= 2 nodes whose stored latents are
    dependent (pairwise KSG mutual information >= threshold nats) - our automatic stand-in for the
    inspection by which 000 sec 4 found the pairs of dims encoding one periodic hue."""
    nodes = model.graph.nodes
    mi = node_mutual_information(model, k, max_rows)
    root = list(range(len(nodes)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for a, b in zip(*np.nonzero(np.triu(mi >= threshold, 1))):
        root[find(int(a))] = find(int(b))
    comps: dict[int, list[str]] = {}
    for i, node in enumerate(nodes):
        comps.setdefault(find(i), []).append(node)
    return [c for c in comps.values() if len(c) > 1]


def _check_groups(model: LatentModel, groups: Sequence[Sequence[str]]) -> dict[str, int]:
    """node -> group index; every node at most once, unknown names are an error naming the nodes."""
    owner: dict[str, int] = {}
    for gi, group in enumerate(groups):
        if isinstance(group, str):
            raise ValueError(f"structured sampling: groups[{gi}] must be a list of node names, got the string {group!r}")
        for node in group:
            model.graph.slice(node)  # raises on an unknown node, listing the nodes
            if node in owner:
                raise ValueError(f"structured sampling: node {node!r} is in groups[{owner[node]}] and groups[{gi}]")
            owner[node] = gi
    return owner


@torch.no_grad()
def structured_hybrid_latents(model: LatentModel, n: int, generator: torch.Generator | None = None,
                              groups: Sequence[Sequence[str]] | None = None) -> torch.Tensor:
    """(n, latent_dim): hybrid sampling that keeps the learned structure of the representation
    (000 sec 4, the "strctrd" rows of its Fig. 4): latent variables that jointly encode one degree
    of freedom - in 000 the 12-SAE's *pairs* of dims embedding each periodic hue on a circle - are
    copied together from one stored latent, j ~ U{1..N} per group, instead of independently per
    variable as plain hybrid sampling does (which "neglects some of the useful structure learned by
    the structural decoder" and mixes colours). Nodes in no group are sampled alone, as in hybrid.

    groups: lists of node names (000 chose them by inspecting traversals, Figs. 5-6); None detects
    them from the stored latents (`dependent_groups`). With no groups the draws equal
    hybrid_latents' for the same generator state (one index per node, in graph order).
    """
    bank = _bank(model)
    groups = dependent_groups(model) if groups is None else groups
    owner = _check_groups(model, groups)
    out = torch.empty(n, model.latent_dim, device=bank.device, dtype=bank.dtype)
    drawn: dict[object, torch.Tensor] = {}
    for node in model.graph.nodes:
        key = ("group", owner[node]) if node in owner else ("node", node)
        if key not in drawn:  # one stored-latent index per group, drawn when its first node comes up
            drawn[key] = torch.randint(0, bank.shape[0], (n,), generator=generator).to(bank.device)
        sl = model.graph.slice(node)
        out[:, sl] = bank[drawn[key], sl]
    return out


SAMPLERS.register("prior")(lambda model, n, generator=None, groups=None: prior_latents(model, n, generator))
SAMPLERS.register("hybrid")(lambda model, n, generator=None, groups=None: hybrid_latents(model, n, generator))
SAMPLERS.register("structured")(structured_hybrid_latents)


def sample_latents(model: LatentModel, n: int, method: str = "hybrid", generator: torch.Generator | None = None,
                   groups: Sequence[Sequence[str]] | None = None) -> torch.Tensor:
    """(n, latent_dim) latents by `method`: prior | hybrid | structured."""
    return SAMPLERS.get(method)(model, n, generator, groups)


# -- images ---------------------------------------------------------------------------------------------
@torch.no_grad()
def iter_samples(model: LatentModel, n: int, method: str = "hybrid", generator: torch.Generator | None = None,
                 batch_size: int = 256, groups: Sequence[Sequence[str]] | None = None) -> Iterator[torch.Tensor]:
    """Decoded samples in batches of (<= batch_size, C, H, W) on the model's device (eval mode while
    decoding); all n latents are drawn first, so the images do not depend on batch_size."""
    u = sample_latents(model, n, method, generator, groups)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            yield model.decode(u[start:start + batch_size])
    finally:
        model.train(was_training)


@torch.no_grad()
def sample_images(model: LatentModel, n: int, method: str = "hybrid", generator: torch.Generator | None = None,
                  batch_size: int = 256, groups: Sequence[Sequence[str]] | None = None) -> torch.Tensor:
    """(n, C, H, W) float images in [0, 1] on the CPU, decoded batch_size at a time."""
    return torch.cat([x.float().cpu() for x in iter_samples(model, n, method, generator, batch_size, groups)])


@torch.no_grad()
def traversal_grid(model: LatentModel, x: torch.Tensor, node: str, steps: int = 9) -> torch.Tensor:
    """make_grid (3, H', W') of model.traverse: one row per image of x, one column per value of node."""
    t = model.traverse(x, node, steps)  # (B, steps, C, H, W)
    t = t.flatten(0, 1).float().cpu()
    t = t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t
    return make_grid(t, nrow=steps, padding=2, pad_value=0.5)
