"""MIC and TIC (Reshef et al. 2011 / 2016) with minepy's defaults, and the registered `mic_tic` metric (003)."""
from __future__ import annotations

import bisect
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.base import GroundTruthDataset, Split
from ..models.base import LatentModel
from .interventional import BAR_DELAY
from .reconstruction import batched_images
from .registry import METRICS
from .wrappers import _check_n, encode_factors, eval_mode

# The estimator is ApproxMaxMI of Reshef et al. 2011 ("Detecting novel associations in large data sets", Science,
# supplementary (SOM) algorithms ApproxMaxMI, EquipartitionYAxis, GetClumpsPartition, OptimizeXAxis) as minepy runs it
# with est="mic_approx"; we followed libmine's mine.c (the step order, the tie rules, the superclumps and H(Q) of all
# points inside OptimizeXAxis) and wrote our own numpy. The characteristic matrix M[i, j] is the largest normalised
# mutual information I / min(log nx, log ny) found for ny = i + 2 rows (y) and nx = j + 2 columns (x), nx * ny <= B(n);
# MIC = max M (Reshef 2011) and TIC = sum M (Reshef et al. 2016, "Measuring dependence powerfully and equitably",
# JMLR; minepy's tic(norm=True) divides by the number of entries). Checked against minepy's published outputs
# (tests/metrics/test_mic.py): MIC, TIC, MAS and MCN of its docs example agree to all 12 printed digits.
ALPHA = 0.6  # B(n) = n ** alpha grid cells (minepy's default, the exponent Reshef 2011 used)
CLUMPS = 15  # c: at most c * nx clumps when drawing nx columns (minepy's default)


def grid_budget(n: int, alpha: float = ALPHA) -> float:
    """B(n): max(n ** alpha, 4) for alpha in (0, 1], or min(alpha, n) for alpha >= 4 (minepy's mine_parameter)."""
    if 0.0 < alpha <= 1.0:
        return max(float(n) ** alpha, 4.0)
    if alpha >= 4.0:
        return float(min(alpha, n))
    raise ValueError(f"MIC: alpha must be in (0, 1] (B = n ** alpha) or >= 4 (B = alpha); got {alpha!r}")


def _equipartition(sizes: np.ndarray, bins: int) -> tuple[np.ndarray, int]:
    """EquipartitionYAxis: groups of tied values (sizes, in sorted order) -> row per group, and the row count.

    Greedy as in libmine: a row is closed before group g when it is non-empty and
    |h + s_g - r| >= |h - r| (h points in the row, r = remaining points / remaining rows), i.e. when
    2h + s_g >= 2r. In integers, (2h + s_g) * (bins - row) >= 2 * (n - start): exact where the floats tie, and
    since 2 * (points before g) + s_g grows with g, each row's end is one bisection.
    """
    cb = np.concatenate(([0], np.cumsum(sizes)))  # cb[g]: points before group g
    n, groups = int(cb[-1]), len(sizes)
    key = (cb[:-1] + cb[1:]).tolist()  # 2 * cb[g] + s_g, strictly increasing (a list: bisect beats numpy per call)
    cb = cb.tolist()
    starts = [0]
    while True:
        g0, row = starts[-1], len(starts) - 1
        i0 = cb[g0]
        # the last row (bins - row == 1) never closes: 2h + s <= 2(n - i0) - s < 2(n - i0)
        need = 2 * i0 + -(-2 * (n - i0) // (bins - row))  # ceil of 2 * i0 + 2r
        g = max(g0 + 1, bisect.bisect_left(key, need))
        if g >= groups:
            break
        starts.append(g)
    labels = np.zeros(groups, dtype=np.int64)
    labels[starts[1:]] = 1
    return np.cumsum(labels), len(starts)


def _clumps(q_sorted: np.ndarray, x_rank_sorted: np.ndarray, x_starts: np.ndarray, max_clumps: int
            ) -> tuple[np.ndarray, int]:
    """GetClumpsPartition + libmine's GetSuperclumpsPartition: clump label per point, in x order.

    Clumps are maximal runs of points (sorted by x) in the same row; points tied in x but in different rows form a
    clump of their own (libmine's GetClumpsPartition). Past `max_clumps` the clumps are merged into `max_clumps`
    superclumps of nearly equal size by EquipartitionYAxis over the clump labels.
    """
    lo = np.minimum.reduceat(q_sorted, x_starts)
    hi = np.maximum.reduceat(q_sorted, x_starts)
    mixed = (lo != hi)[x_rank_sorted]  # (n,) point lies in an x-tie spanning rows
    label = np.where(mixed, -1 - x_rank_sorted, q_sorted)
    p_map = np.concatenate(([0], np.cumsum(label[1:] != label[:-1])))
    p = int(p_map[-1]) + 1
    if p > max_clumps:
        merged, p = _equipartition(np.bincount(p_map, minlength=p), max_clumps)
        p_map = merged[p_map]
    return p_map, p


def _optimize_x_axis(q_sorted: np.ndarray, q: int, p_map: np.ndarray, p: int, max_cols: int,
                     xlogx: np.ndarray) -> np.ndarray:
    """OptimizeXAxis: (max_cols - 1,) normalised MI for 2..max_cols columns drawn at the p clump boundaries.

    With J(t, l) = I(t, l) - H(Q) for the first t clumps cut into l columns (H(Q) of all points, as ApproxMaxMI
    uses it), J(t, 1) = -H(Q | first t clumps) and
      J(t, l) = max_{l-1 <= s <= t} c_s / c_t * J(s, l-1) - (c_t - c_s) / c_t * H(Q | clumps s+1..t),
    which is libmine's recursion for l >= 3 and its hp3 - hp3q step for l = 2 (the H(<c_s, c_t>) terms cancel).
    Entropies from counts: -sum a/T log(a/T) = log T - sum a log a / T (`xlogx[a]` = a log a).
    """
    out = np.zeros(max_cols - 1)
    if p == 1:  # one clump: no column boundary to draw, MI = 0 (libmine returns zeros)
        return out
    n = len(q_sorted)
    hist = np.bincount(q_sorted * p + p_map, minlength=q * p).reshape(q, p)
    cum = np.cumsum(hist, axis=1)  # (q, p): points of row i in clumps 1..t
    c = cum.sum(axis=0)  # (p,): points in clumps 1..t
    hq = math.log(n) - xlogx[cum[:, -1]].sum() / n
    # index a = s - 1 (clumps 1..s), b = t - 1; only a <= b is used
    diff = np.abs(cum[:, None, :] - cum[:, :, None])  # (q, p, p): row i's points in clumps s+1..t
    w = (xlogx[np.abs(c[None, :] - c[:, None])] - xlogx[diff].sum(axis=0)) / c[None, :]  # (c_t-c_s)/c_t H(Q|s..t)
    w[np.tril_indices(p, -1)] = np.inf  # s > t is not a split
    ratio = c[:, None] / c[None, :]  # c_s / c_t
    j = (xlogx[cum].sum(axis=0) - xlogx[c]) / c  # J(t, 1)
    top = min(max_cols, p)
    for cols in range(2, top + 1):
        a = cols - 2  # s >= cols - 1
        j_next = np.full(p, -np.inf)
        j_next[a + 1:] = (ratio[a:, a + 1:] * j[a:, None] - w[a:, a + 1:]).max(axis=0)
        j = j_next
        out[cols - 2] = hq + j[-1]
    out[top - 1:] = out[top - 2]  # more columns than clumps: I(p, l) = I(p, p), as libmine fills them
    return out / np.minimum(np.log(np.arange(2, max_cols + 1)), math.log(q))


def _rank(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dense rank per point, stable sort order, tie-group sizes in sorted order)."""
    _, rank, sizes = np.unique(v, return_inverse=True, return_counts=True)
    rank = rank.reshape(-1)
    return rank, np.argsort(rank, kind="stable"), sizes


def _check(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"MIC: x and y must be 1-d arrays of the same length; got shapes {x.shape} and {y.shape}")
    if len(x) < 4:
        raise ValueError(f"MIC: needs at least 4 points (the smallest grid is 2 x 2); got shapes {x.shape} and "
                         f"{y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("MIC: x and y must be finite (no NaN or inf)")
    return x, y


def characteristic_matrix(x, y, *, alpha: float = ALPHA, c: float = CLUMPS) -> np.ndarray:
    """(rows, cols) approximate characteristic matrix: [i, j] for i + 2 y-rows and j + 2 x-columns; NaN where
    (i + 2)(j + 2) > B(n). Each entry is the larger of the two passes (columns optimised on x with y
    equipartitioned, and the transpose), as libmine's mine_compute_score; depends on x and y through ranks only.
    """
    x, y = _check(x, y)
    if c <= 0:
        raise ValueError(f"MIC: the clump factor c must be > 0; got {c!r}")
    n = len(x)
    budget = grid_budget(n, alpha)
    rows = max(int(math.floor(budget / 2.0)), 2) - 1
    widths = [int(math.floor(budget / (i + 2))) - 1 for i in range(rows)]  # columns in row i
    m = np.full((rows, widths[0]), np.nan)
    for i, w in enumerate(widths):
        m[i, :w] = 0.0
    xr, xo, xs = _rank(x)
    yr, yo, ys = _rank(y)
    if len(xs) == 1 or len(ys) == 1:  # a constant: MI is 0 on every grid (libmine would divide 0 by log 1)
        return m
    xlogx = np.zeros(n + 1)
    xlogx[1:] = np.arange(1, n + 1) * np.log(np.arange(1, n + 1))
    for pass_, (ar, ao, as_, br, bs) in enumerate(((xr, xo, xs, yr, ys), (yr, yo, ys, xr, xs))):
        # columns on a (optimised), rows on b (equipartitioned into i + 2)
        a_sorted = ar[ao]
        a_starts = np.concatenate(([0], np.cumsum(as_)[:-1]))
        for i, w in enumerate(widths):
            row_of_group, q = _equipartition(bs, i + 2)
            q_sorted = row_of_group[br][ao]  # row of each point, in a order
            p_map, p = _clumps(q_sorted, a_sorted, a_starts, max(int(c * (w + 1)), 1))
            scores = _optimize_x_axis(q_sorted, q, p_map, p, w + 1, xlogx)  # [j]: j + 2 columns on a
            if pass_ == 0:
                m[i, :w] = scores
            else:  # a = y: i + 2 x-columns, j + 2 y-rows
                m[:w, i] = np.maximum(m[:w, i], scores)
    # I <= min(log nx, log ny), so entries are <= 1; a perfect fit can round to 1 + 4e-16
    return np.minimum(m, 1.0)


def mine_scores(x, y, *, alpha: float = ALPHA, c: float = CLUMPS) -> dict[str, float]:
    """{"mic", "tic", "tic_norm"} from one characteristic matrix (tic_norm = tic / number of entries, in [0, 1],
    minepy's tic(norm=True))."""
    m = characteristic_matrix(x, y, alpha=alpha, c=c)
    tic = float(np.nansum(m))
    return {"mic": float(np.nanmax(m)), "tic": tic, "tic_norm": tic / int(np.isfinite(m).sum())}


def mic(x, y, *, alpha: float = ALPHA, c: float = CLUMPS) -> float:
    """Maximal information coefficient (Reshef et al. 2011), minepy's MINE(alpha, c, est="mic_approx").mic()."""
    return mine_scores(x, y, alpha=alpha, c=c)["mic"]


def tic(x, y, *, alpha: float = ALPHA, c: float = CLUMPS, norm: bool = False) -> float:
    """Total information coefficient (Reshef et al. 2016): the sum of the characteristic matrix, or its mean with
    norm=True (minepy's tic(norm))."""
    return mine_scores(x, y, alpha=alpha, c=c)["tic_norm" if norm else "tic"]


# -- the registered metric ----------------------------------------------------------------------------------
def ground_truth(dataset: GroundTruthDataset, factors: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """(N, K') ground-truth values and their names: `labels` where the dataset has them (pendulum's 4 concept
    labels, effects included, the variables 003 scores), else `values` (continuous factor values), else indices."""
    for attr in ("labels", "values"):
        if callable(getattr(dataset, attr, None)):
            truth = np.asarray(getattr(dataset, attr)(factors), dtype=np.float64)
            break
    else:
        truth = np.asarray(factors, dtype=np.float64)
    return truth, tuple(dataset.factor_names[:truth.shape[1]])


def _factor_name(label: str | int, names: tuple[str, ...]) -> str:
    """A label_nodes value, a factor name or a column of the ground truth, as the factor's name."""
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(names):
        return names[label]
    if isinstance(label, str) and label in names:
        return label
    raise ValueError(f"metric 'mic_tic': model.label_nodes maps a node to {label!r}, which is neither a factor nor "
                     f"a column 0..{len(names) - 1} of the ground truth; factors: {', '.join(names)}")


@METRICS.register("mic_tic")
def mic_tic(*, model: LatentModel, dataset: GroundTruthDataset, split: Split, n: int, loss: str,
            device: torch.device | str = "cpu", batch_size: int = 256) -> dict[str, float]:
    """MIC and TIC between learned concepts and true labels on the first n validation images.

    003 (CausalVAE, "Experiments"): evaluation criteria MIC and TIC, reported in % (e.g. pendulum CausalVAE 96.3 /
    89.0), TIC always below MIC; that only fits the normalised TIC (the mean of the characteristic matrix, in
    [0, 1]), so `tic` here is tic(norm=True); mic() and tic() give the raw numbers. 003 does not say how latents
    are paired with labels; ours: models with `label_nodes` (node -> factor name or ground-truth column; supervised
    models such as CausalVAE align node i with label i) are scored per aligned pair on the node's latent slice
    averaged over its dims (one scalar per concept, as 003's concepts are scalars); other models score each factor
    by its best single latent dim (the max of MIC and, separately, of TIC over dims). Returns mic, tic (means over
    the scored factors), mic/<factor> and tic/<factor>.
    """
    _check_n("mic_tic", n, 4)
    index = split.val[:n]
    if len(index) < 4:
        raise ValueError(f"metric 'mic_tic': the val split has {len(index)} images; needs at least 4")
    factors = dataset.index_to_factors(index)
    z = encode_factors(model, dataset, factors, device=device, batch_size=batch_size, desc="encode val")
    truth, names = ground_truth(dataset, factors)
    label_nodes = getattr(model, "label_nodes", None)
    if label_nodes:
        # a node's value (model.node_values: CausalVAE's z~_i, a baseline's latent slice) averaged over its dims
        with torch.no_grad(), eval_mode(model):
            parts = [model.node_values(x) for x in batched_images(dataset, index, batch_size, device)]
        values = {node: torch.cat([p[node] for p in parts]).float().mean(1).cpu().numpy() for node in label_nodes}
        pairs = [(_factor_name(f, names), [values[node]]) for node, f in label_nodes.items()]
    else:
        pairs = [(f, list(z.T)) for f in names]
    out: dict[str, float] = {}
    with tqdm(total=sum(len(codes) for _, codes in pairs), desc="mic_tic", unit="pair", delay=BAR_DELAY) as bar:
        for f, codes in pairs:
            col = truth[:, names.index(f)]
            scores = []
            for code in codes:
                scores.append(mine_scores(code, col))
                bar.update(1)
            out[f"mic/{f}"] = max(s["mic"] for s in scores)
            out[f"tic/{f}"] = max(s["tic_norm"] for s in scores)
    scored = [f for f, _ in pairs]
    return {"mic": float(np.mean([out[f"mic/{f}"] for f in scored])),
            "tic": float(np.mean([out[f"tic/{f}"] for f in scored])), **out}
