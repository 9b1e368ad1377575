"""Histogram discretisation, and discrete mutual information / entropies computed in one vectorised pass."""
from __future__ import annotations

import numpy as np

from ..data.discretize import NUM_BINS, histogram_bins


def histogram_discretize(x: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """(N, D) values -> (N, D) int64 bin labels in 1..num_bins, one equal-width histogram per column.

    Follows disentanglement_lib's `utils._histogram_discretize` (data.discretize.histogram_bins, one column at a
    time: cheap, D is small and each column one vectorised searchsorted); the reference works on (D, N), we on (N, D).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"histogram_discretize: expected an (N, D) array, got shape {x.shape}")
    out = np.empty(x.shape, dtype=np.int64)
    for j in range(x.shape[1]):
        out[:, j] = histogram_bins(x[:, j], num_bins)[0]
    return out


def _dense_labels(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, M) labels -> (N, M) int64 labels renumbered 0..n_j-1 per column, and (M,) counts n_j."""
    dense = np.empty(a.shape, dtype=np.int64)
    n = np.empty(a.shape[1], dtype=np.int64)
    for j in range(a.shape[1]):
        uniq, dense[:, j] = np.unique(a[:, j], return_inverse=True)
        n[j] = len(uniq)
    return dense, n


def discrete_mutual_info(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """(N, D) and (N, K) discrete labels -> (D, K) mutual information I(a_i; b_j) in nats.

    Equals `sklearn.metrics.mutual_info_score(b[:, j], a[:, i])` for every pair (the reference's
    `utils.discrete_mutual_info` makes those D*K calls); here every joint histogram comes from ONE
    np.bincount: the pair (i, j) owns a block of n_i * n_j cells at a fixed offset, and each sample
    adds 1 to cell a_i * n_j + b_j of every block. Rows are processed in chunks so that at most
    `chunk` (sample, pair) codes exist at once.
    """
    a, na = _dense_labels(np.asarray(a))
    b, nb = _dense_labels(np.asarray(b))
    if len(a) != len(b):
        raise ValueError(f"discrete_mutual_info: {len(a)} rows of codes but {len(b)} rows of factors")
    N, D = a.shape
    K = b.shape[1]
    cells = (na[:, None] * nb[None, :]).ravel()  # (D*K,) cells per pair
    offset = np.concatenate([[0], np.cumsum(cells)[:-1]]).reshape(D, K)
    joint = np.zeros(int(cells.sum()), dtype=np.int64)
    rows = max(1, chunk // max(1, D * K))
    for s in range(0, N, rows):
        # codes: (rows, D, K) cell index of each sample in each pair's block
        codes = offset[None] + a[s:s + rows, :, None] * nb[None, None, :] + b[s:s + rows, None, :]
        joint += np.bincount(codes.ravel(), minlength=len(joint))
    mi = np.zeros((D, K))
    for i in range(D):  # D*K tiny (n_i, n_j) tables; the O(N) work is all in the bincount above
        for j in range(K):
            p = joint[offset[i, j]:offset[i, j] + cells[i * K + j]].reshape(na[i], nb[j]) / N
            pa, pb = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
            nz = p > 0
            mi[i, j] = np.sum(p[nz] * np.log(p[nz] / (pa @ pb)[nz]))
    # sklearn clips tiny negative round-off to 0 in mutual_info_score; so do we
    return np.clip(mi, 0.0, None)


def discrete_entropy(b: np.ndarray) -> np.ndarray:
    """(N, K) discrete labels -> (K,) entropies in nats (= mutual_info_score(b_j, b_j), the reference's)."""
    b, nb = _dense_labels(np.asarray(b))
    h = np.zeros(b.shape[1])
    for j in range(b.shape[1]):
        p = np.bincount(b[:, j], minlength=nb[j]) / len(b)
        p = p[p > 0]
        h[j] = -np.sum(p * np.log(p))
    return h
