"""The learnable adjacency of a `learned` graph and its acyclicity penalty (CausalVAE, 003)."""
from __future__ import annotations

import torch
from torch import nn


def dag_penalty(a: torch.Tensor) -> torch.Tensor:
    """h(A) = tr((I + A∘A / n)^n) - n: zero iff the weighted graph of A is acyclic.

    (I + M)^n = sum_k C(n, k) M^k, and tr(M^k) > 0 iff a k-cycle exists (M = A∘A >= 0), so
    h(A) = 0 exactly for a DAG. The 1/n scaling is DAG-GNN's (Yu et al. 2019) variant of the
    constraint CausalVAE uses (003); it keeps the powers from overflowing.
    """
    n = a.shape[-1]
    m = torch.eye(n, dtype=a.dtype, device=a.device) + a * a / n
    return torch.diagonal(torch.linalg.matrix_power(m, n), dim1=-2, dim2=-1).sum(-1) - n


class LearnedAdjacency(nn.Module):
    """A (n, n) weighted adjacency, A[i, j] != 0 meaning an edge i -> j, with edge masks.

    Forbidden edges (and self-loops) are held at 0; required (`prior`) edges are reported
    present whatever their weight. The penalty is `dag_weight * h(A) + sparsity * |A|_1`.
    """

    def __init__(self, *, nodes: list[str], prior_edges=(), forbidden_edges=(), dag_weight: float = 1.0,
                 sparsity: float = 0.0, threshold: float = 0.3, init_scale: float = 0.0):
        super().__init__()
        self.nodes = list(nodes)
        n = len(self.nodes)
        idx = {v: i for i, v in enumerate(self.nodes)}
        allowed = 1.0 - torch.eye(n)
        required = torch.zeros(n, n)
        for u, v in forbidden_edges:
            allowed[idx[u], idx[v]] = 0.0
        for u, v in prior_edges:
            required[idx[u], idx[v]] = 1.0
        self.register_buffer("allowed", allowed)
        self.register_buffer("required", required)
        self.weight = nn.Parameter(init_scale * torch.randn(n, n))
        self.dag_weight = dag_weight
        self.sparsity = sparsity
        self.threshold = threshold

    @property
    def matrix(self) -> torch.Tensor:
        return self.weight * self.allowed

    def penalty(self) -> torch.Tensor:
        a = self.matrix
        return self.dag_weight * dag_penalty(a) + self.sparsity * a.abs().sum()

    def edges(self) -> list[tuple[str, str]]:
        """The thresholded graph: |A_ij| > threshold, plus the required edges."""
        present = (self.matrix.detach().abs() > self.threshold) | (self.required > 0)
        return [(self.nodes[i], self.nodes[j]) for i, j in present.nonzero().tolist()]
