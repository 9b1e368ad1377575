"""MIG, SAP, IRS, modularity, histogram discretisation and discrete MI in torch, on whatever device the codes are on.

The same quantities as disentanglement.py / discretize.py (disentanglement_lib's mig.py, sap_score.py, irs.py,
modularity_explicitness.py, utils.py), on torch tensors: codes (N, D) floating point and factors (N, K) integer
factor indices, rows are samples. Everything is computed in float64 where the device has it (CPU, CUDA; MPS falls
back to float32), as the numpy path converts codes to float64 first. Loops run over factors, bins, row chunks or
solver iterations, never over samples. Equality with the numpy path (tests/metrics/test_tensor.py):
- histogram_discretize: the same labels exactly (numpy's edges are rebuilt with numpy's own linspace arithmetic);
- discrete_mutual_info / discrete_entropy / mig / modularity / irs: equal up to floating-point summation order;
- sap: solves the same convex problems as sklearn's LinearSVC to ~1e-12 instead of liblinear's tol=1e-4, so a
  test point within that tolerance of a decision boundary can be classified differently (see `linear_svc_1d`).
"""
from __future__ import annotations

import warnings

import torch

from .discretize import NUM_BINS

SAP_C = 0.01  # sap_score.py: svm.LinearSVC(C=0.01, class_weight="balanced")


def work_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device supports it (CPU, CUDA), float32 on Apple's MPS, which has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def _is_int(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _check_labels(t, what: str, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{what}: expected {name} of shape (N, M) with N >= 1, got shape {tuple(t.shape)}")
    if not _is_int(t):
        raise ValueError(f"{what}: {name} must be integer labels, got dtype {t.dtype}")
    return t.to(torch.int64)


def _check(codes, factors, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """codes (N, D) floating, factors (N, K) integer, same N and device, finite -> (work-dtype codes, int64 factors)."""
    if not isinstance(codes, torch.Tensor) or not isinstance(factors, torch.Tensor):
        raise TypeError(f"{what}: expected torch tensors, got {type(codes).__name__} and {type(factors).__name__}")
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or len(codes) == 0:
        raise ValueError(f"{what}: expected codes (N, D) and factors (N, K) with the same N >= 1, "
                         f"got {tuple(codes.shape)} and {tuple(factors.shape)}")
    if not codes.is_floating_point():
        raise ValueError(f"{what}: codes must be a floating-point tensor, got dtype {codes.dtype}")
    if not _is_int(factors):
        raise ValueError(f"{what}: factors must be integer factor indices, got dtype {factors.dtype}")
    if codes.device != factors.device:
        raise ValueError(f"{what}: codes are on {codes.device} but factors on {factors.device}")
    codes = codes.to(work_dtype(codes.device))
    bad = ~torch.isfinite(codes)
    if bad.any():
        raise ValueError(f"{what}: codes contain NaN or inf ({int(bad.sum())} entries)")
    return codes, factors.to(torch.int64)


# -- discretisation and mutual information (discretize.py) ------------------------------------------------------
def histogram_discretize(x: torch.Tensor, num_bins: int = NUM_BINS) -> torch.Tensor:
    """(N, D) values -> (N, D) int64 bin labels in 1..num_bins: discretize.histogram_discretize, all columns at once.

    The edges are np.histogram_bin_edges(column, num_bins) rebuilt with numpy's arithmetic (numpy 2's
    _get_outer_edges and linspace): range (min, max), widened to (v - .5, v + .5) for a constant column;
    edges = arange(num_bins + 1) * ((max - min) / num_bins) + min (numpy's subnormal-step branch
    arange / num_bins * delta where that step is 0), the last edge set to max. torch.linspace computes its points
    differently (from both ends), so it is not used. Labels are the number of left edges <= value (np.digitize).
    Integer input gets float64 edges (numpy's bin_type); floating input is discretised in float64, as the numpy
    metrics do after converting codes to float64.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"histogram_discretize: expected an (N, D) tensor with N >= 1, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"histogram_discretize: expected real numbers, got dtype {x.dtype}")
    v = x.to(work_dtype(x.device))
    if not torch.isfinite(v).all():
        raise ValueError(f"histogram_discretize: values contain NaN or inf ({int((~torch.isfinite(v)).sum())} entries)")
    lo, hi = v.amin(0), v.amax(0)  # (D,)
    same = lo == hi
    lo, hi = torch.where(same, lo - 0.5, lo), torch.where(same, hi + 0.5, hi)
    delta = hi - lo
    step = delta / num_bins
    ar = torch.arange(num_bins + 1, dtype=v.dtype, device=v.device)[None, :]  # (1, B + 1)
    edges = torch.where((step == 0)[:, None], ar / num_bins * delta[:, None], ar * step[:, None]) + lo[:, None]
    edges[:, -1] = hi  # (D, B + 1), numpy's endpoint
    flat = edges[:, 1:] <= edges[:, :-1]
    if flat.any():
        cols = torch.nonzero(flat.any(1)).flatten().tolist()
        raise ValueError(f"histogram_discretize: columns {cols} have a range too small for {num_bins} finite-sized "
                         f"bins (numpy's 'Too many bins for data range')")
    # searchsorted(right=True) counts the left edges <= value: np.digitize's rule for increasing bins
    return torch.searchsorted(edges[:, :-1].contiguous(), v.T.contiguous(), right=True).T.contiguous()


def _dense_labels(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, M) int labels -> (N, M) labels renumbered 0..n_j-1 per column (order kept), (M,) counts n_j, and the
    (max n_j, M) table of original values (padded with each column's largest value): one sort for all columns."""
    s, idx = torch.sort(a, dim=0)
    rank = torch.zeros_like(s)
    rank[1:] = torch.cumsum(s[1:] != s[:-1], dim=0)  # (N, M) index of each sorted value among the distinct ones
    dense = torch.empty_like(rank).scatter_(0, idx, rank)
    n = rank[-1] + 1
    values = s[-1:].repeat(int(n.max()), 1).scatter_(0, rank, s)  # duplicates write the same value
    return dense, n, values


def discrete_mutual_info(a: torch.Tensor, b: torch.Tensor, chunk: int = 1 << 22) -> torch.Tensor:
    """(N, D) and (N, K) discrete labels -> (D, K) mutual information I(a_i; b_j) in nats (float64 where available).

    discretize.discrete_mutual_info in one bincount: labels are renumbered densely per column (at most A and B
    values), pair (i, j) owns an A x B block of a (D, K, A, B) joint histogram and each sample adds 1 to cell
    (a_i, b_j) of every block; then I = sum p log(p / (p_a p_b)) over the non-empty cells of all blocks at once.
    Rows go in chunks of at most `chunk` (sample, pair) cell codes.
    """
    a = _check_labels(a, "discrete_mutual_info", "a")
    b = _check_labels(b, "discrete_mutual_info", "b")
    if len(a) != len(b) or a.device != b.device:
        raise ValueError(f"discrete_mutual_info: a {tuple(a.shape)} on {a.device} and b {tuple(b.shape)} on "
                         f"{b.device} need the same number of rows and device")
    a, na, _ = _dense_labels(a)
    b, nb, _ = _dense_labels(b)
    (N, D), K = a.shape, b.shape[1]
    A, B = int(na.max()), int(nb.max())
    dev = a.device
    base = (torch.arange(D, device=dev)[:, None] * K + torch.arange(K, device=dev)[None, :]) * (A * B)  # (D, K)
    joint = torch.zeros(D * K * A * B, dtype=torch.int64, device=dev)
    rows = max(1, chunk // max(1, D * K))
    for s in range(0, N, rows):
        cell = base + a[s:s + rows, :, None] * B + b[s:s + rows, None, :]  # (rows, D, K) cell of each sample per pair
        joint += torch.bincount(cell.reshape(-1), minlength=joint.numel())
    p = joint.reshape(D, K, A, B).to(work_dtype(dev)) / N
    pa, pb = p.sum(3, keepdim=True), p.sum(2, keepdim=True)  # marginals of every block
    nz = p > 0
    terms = torch.where(nz, p * torch.log(torch.where(nz, p / (pa * pb), 1.0)), 0.0)
    return terms.sum((2, 3)).clamp_min(0.0)  # sklearn's mutual_info_score clips round-off below 0; so does numpy's


def discrete_entropy(b: torch.Tensor) -> torch.Tensor:
    """(N, K) discrete labels -> (K,) entropies in nats (discretize.discrete_entropy), one bincount for all columns."""
    b = _check_labels(b, "discrete_entropy", "b")
    b, nb, _ = _dense_labels(b)
    (N, K), B = b.shape, int(nb.max())
    cell = b + torch.arange(K, device=b.device)[None, :] * B
    p = torch.bincount(cell.reshape(-1), minlength=K * B).reshape(K, B).to(work_dtype(b.device)) / N
    return -torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), 0.0).sum(1)


# -- MIG and modularity (mig.py, modularity_explicitness.py) ----------------------------------------------------
def mig_from_mi(mi: torch.Tensor, entropy: torch.Tensor) -> float:
    """(D, K) MI and (K,) factor entropies -> mean over factors with H > 0 of (top1 - top2 MI) / H."""
    if mi.shape[0] < 2:
        raise ValueError("mig: needs at least 2 code dimensions (the gap between the top two)")
    top = torch.topk(mi, 2, dim=0).values  # (2, K) descending
    keep = entropy > 0  # disentanglement.mig's deviation: a constant factor is skipped, not nan
    if not keep.any():
        return 0.0
    return float(((top[0] - top[1])[keep] / entropy[keep]).mean())


def mig(codes: torch.Tensor, factors: torch.Tensor, *, num_bins: int = NUM_BINS) -> float:
    """Mutual information gap (disentanglement.mig): codes histogram-discretised, MI matrix in nats."""
    codes, factors = _check(codes, factors, "mig")
    return mig_from_mi(discrete_mutual_info(histogram_discretize(codes, num_bins), factors), discrete_entropy(factors))


def modularity_from_mi(mi: torch.Tensor) -> float:
    """(D, K) MI -> mean over codes of 1 - (sum_j m_ij^2 - max^2) / (max^2 (K - 1)); 0 for an uninformative code
    (disentanglement.modularity_from_mi)."""
    sq = mi.square()
    mx = sq.amax(1)
    K = sq.shape[1]
    score = 1.0 - (sq.sum(1) - mx) / (mx * (K - 1)) if K > 1 else torch.ones_like(mx)
    return float(torch.where(mx == 0, 0.0, score).mean())


def modularity(codes: torch.Tensor, factors: torch.Tensor, *, num_bins: int = NUM_BINS) -> float:
    """Modularity (Ridgeway & Mozer 2018) from the discretised MI matrix: modularity_explicitness()["modularity"]."""
    codes, factors = _check(codes, factors, "modularity")
    return modularity_from_mi(discrete_mutual_info(histogram_discretize(codes, num_bins), factors))


# -- IRS (irs.py) -------------------------------------------------------------------------------------------------
def irs(codes: torch.Tensor, factors: torch.Tensor, *, diff_quantile: float = 0.99, num_bins: int = NUM_BINS) -> float:
    """Interventional robustness score (disentanglement.irs): all factors and code dims at once.

    Per factor (histogram-discretised into num_bins) and value group, the `diff_quantile` quantile of
    |z - E[z | group]| is taken with numpy's default 'linear' method: virtual index (n - 1) q, and numpy's _lerp
    (a + (b - a) t, or b - (b - a)(1 - t) for t >= .5; written out, not torch.lerp, whose CPU kernel fuses a
    multiply-add). The per-group order statistics come from two sorts of the (N, K, D) deviations (by value, then
    stably by group), so every group is a contiguous, sorted segment of its column.
    Deviation from numpy's path: a code dim is dropped when it is exactly constant (max == min), where
    irs.py's `var > 0` keeps a constant like 0.1 whose float64 mean rounds off its value (variance ~1e-28); numpy
    then weighs that dim by its max deviation (~1e-14), so the two differ by ~1e-14 there, except when every dim
    is constant: 0 here (irs.py's "nothing active"), a weighted mean of rounding noise in numpy's path.
    """
    codes, factors = _check(codes, factors, "irs")
    z = codes[:, codes.amax(0) > codes.amin(0)]
    if z.shape[1] == 0:
        return 0.0
    (N, Dz), K, B = z.shape, factors.shape[1], num_bins
    g = histogram_discretize(factors, num_bins) - 1 + torch.arange(K, device=z.device)[None, :] * B  # (N, K) group
    max_dev = (z - z.mean(0)).abs().amax(0)  # (Dz,)
    counts = torch.bincount(g.reshape(-1), minlength=K * B)  # (K*B,)
    # group sums: sample n adds to group g[n, k] of every factor; sums in sample order, as numpy's grp.mean
    sums = torch.zeros(K * B, Dz, dtype=z.dtype, device=z.device).index_add_(
        0, g.reshape(-1), z.repeat_interleave(K, dim=0))
    means = sums / counts[:, None]  # empty groups: nan, never read
    dev = (z[:, None, :] - means[g]).abs()  # (N, K, Dz)
    dev, order = torch.sort(dev, dim=0)
    _, order2 = torch.sort(torch.gather(g[:, :, None].expand(N, K, Dz), 0, order), dim=0, stable=True)
    dev = torch.gather(dev, 0, order2)  # column (k, d): group 0's deviations ascending, then group 1's, ...
    counts = counts.reshape(K, B)
    starts = torch.cumsum(counts, 1) - counts
    vi = (counts - 1).to(z.dtype) * diff_quantile  # numpy's virtual index (n - 1) * q
    prev = torch.floor(vi)
    t = (vi - prev)[..., None]  # (K, B, 1) interpolation weight
    top = (counts - 1).clamp(min=0)  # last index in a group (an empty group's indices are clamped, never used)
    lo_i = prev.long().clamp(min=0).minimum(top)
    hi_i = (lo_i + 1).minimum(top)

    def at(i: torch.Tensor) -> torch.Tensor:  # (K, B) positions within groups -> (K, B, Dz) sorted deviations
        pos = (starts + i).clamp(max=N - 1)
        return torch.gather(dev, 0, pos.T[:, :, None].expand(B, K, Dz)).transpose(0, 1)

    a, b = at(lo_i), at(hi_i)
    diff = b - a
    quant = torch.where(t >= 0.5, b - diff * (1 - t), a + diff * t)  # (K, B, Dz) numpy's _lerp
    nonempty = counts > 0
    cum = torch.zeros(K, Dz, dtype=z.dtype, device=z.device)
    for v in range(B):  # numpy adds the groups' quantiles in value order; same order here
        cum = cum + torch.where(nonempty[:, v, None], quant[:, v], 0.0)
    cum = cum / nonempty.sum(1, keepdim=True)
    scores = (1.0 - cum.T / max_dev[:, None]).amax(1)  # (Dz,) 1 - min over factors
    return float((scores * max_dev).sum() / max_dev.sum())  # every kept dim has max_dev > 0


# -- SAP (sap_score.py) with the LinearSVC problems solved in torch -------------------------------------------
class _SortedProblems:
    """Range sums for every one-vs-rest problem of a 1-D linear SVM on code dim d and factor k, in O(log N) each.

    Each code dim is sorted once (xs, prefix sums of x and x^2); for every (d, k) the samples are also sorted by
    (class, x) - key class * N + rank of x - so that each class is a contiguous, x-sorted segment with its own
    prefix sums. The samples of one class with x < t are then found by two searchsorted calls.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, counts: torch.Tensor):
        (N, D), K = x.shape, y.shape[1]
        dev, dt = x.device, x.dtype
        self.N = N
        self.xs, order = torch.sort(x.T.contiguous(), dim=1, stable=True)  # (D, N)
        zero = torch.zeros(D, 1, dtype=dt, device=dev)
        self.pa1 = torch.cat([zero, self.xs.cumsum(1)], 1)  # (D, N + 1) sums of the r smallest x
        self.pa2 = torch.cat([zero, (self.xs * self.xs).cumsum(1)], 1)
        # every (d, k): the labels in x order, sorted stably by class -> segments of classes, each in x order;
        # small labels sort faster, so they are narrowed first (a class index fits in uint8 for <= 256 classes)
        narrow = torch.uint8 if counts.shape[1] <= 256 else torch.int32
        ys = torch.gather(y.T.to(narrow)[None].expand(D, K, N), 2, order[:, None, :].expand(D, K, N))
        ys, pos = torch.sort(ys, dim=2, stable=True)  # pos: the rank (position in x order) of each entry
        self.keys = ys.long() * N + pos  # (D, K, N) increasing: class * N + rank
        xc = torch.gather(self.xs[:, None, :].expand(D, K, N), 2, pos)
        zero = torch.zeros(D, K, 1, dtype=dt, device=dev)
        self.pc1 = torch.cat([zero, xc.cumsum(2)], 2)  # (D, K, N + 1)
        self.pc2 = torch.cat([zero, (xc * xc).cumsum(2)], 2)
        start = (torch.cumsum(counts, 1) - counts)[None, :, None, :]  # (1, K, 1, Cm) class segments
        self.start, self.end = start, start + counts[None, :, None, :]
        self.s1, self.s2 = self._at(self.pc1, self.start), self._at(self.pc2, self.start)  # (D, K, 1, Cm)
        self.e1, self.e2 = self._at(self.pc1, self.end), self._at(self.pc2, self.end)
        self.cls = torch.arange(counts.shape[1], device=dev)

    @staticmethod
    def _at(prefix: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """(D, K, N + 1) prefix sums at positions i (broadcast to (D, K, L, Cm)) -> (D, K, L, Cm)."""
        D, K = prefix.shape[:2]
        i = i.expand(D, K, *i.shape[2:])
        return torch.gather(prefix, 2, i.reshape(D, K, -1)).reshape(i.shape)

    def region(self, t: torch.Tensor, lower: torch.Tensor):
        """t, lower: (D, K, L, Cm) -> (count, sum x, sum x^2) over {x < t} (lower) or {x >= t}, for the samples of
        class c and for all samples; (D, K, L, Cm) each."""
        D, K = t.shape[:2]
        r = torch.searchsorted(self.xs, t.reshape(D, -1)).reshape(t.shape)  # #(x < t) among all samples
        q = torch.searchsorted(self.keys, (self.cls * self.N + r).reshape(D, K, -1)).reshape(t.shape)
        a1 = torch.gather(self.pa1, 1, r.reshape(D, -1)).reshape(t.shape)
        a2 = torch.gather(self.pa2, 1, r.reshape(D, -1)).reshape(t.shape)
        c1, c2 = self._at(self.pc1, q), self._at(self.pc2, q)
        cls = (torch.where(lower, q - self.start, self.end - q).to(t.dtype),
               torch.where(lower, c1 - self.s1, self.e1 - c1), torch.where(lower, c2 - self.s2, self.e2 - c2))
        tot = (torch.where(lower, r, self.N - r).to(t.dtype),
               torch.where(lower, a1, self.pa1[:, -1, None, None, None] - a1),
               torch.where(lower, a2, self.pa2[:, -1, None, None, None] - a2))
        return cls, tot, r

    def moments(self, w: torch.Tensor, b: torch.Tensor, cp: torch.Tensor, cn: torch.Tensor):
        """(S0, S1, S2, T0, T1) = sums over the active samples of C_n (1, x, x^2) and C_n y_n (1, x) at (w, b).

        Active: y = +1 with w x + b < 1, y = -1 with w x + b > -1. For w > 0 the positives are active below
        (1 - b) / w and the negatives above (-1 - b) / w, mirrored for w < 0; w = 0 makes all or none active.
        A sample exactly on the margin contributes 0 to the loss and its gradient either way.
        """
        zero = w == 0
        ws = torch.where(zero, 1.0, w)
        inf = torch.full_like(w, float("inf"))
        tp = torch.where(zero, torch.where(b < 1, inf, -inf), (1 - b) / ws)
        tn = torch.where(zero, torch.where(b > -1, inf, -inf), (-1 - b) / ws)
        (pn, p1, p2), _, rp = self.region(tp, w >= 0)
        (cn_, c1, c2), (an, a1, a2), rn = self.region(tn, w <= 0)
        nn, n1, n2 = an - cn_, a1 - c1, a2 - c2  # negatives: every sample in the region but class c's
        active = torch.stack([2 * rp + (w >= 0), 2 * rn + (w <= 0)])  # which samples are active, as ranks + side
        return (cp * pn + cn * nn, cp * p1 + cn * n1, cp * p2 + cn * n2, cp * pn - cn * nn, cp * p1 - cn * n1), active


def _newton(w, b, m):
    """Gradient (gw, gb), Hessian (h11, h12, h22) of the active set's quadratic at (w, b), and its minimiser."""
    S0, S1, S2, T0, T1 = m
    h11, h12, h22 = 1 + 2 * S2, 2 * S1, 1 + 2 * S0  # I + 2 sum_active C_n (x, 1)(x, 1)^T: det >= 1
    det = h11 * h22 - h12 * h12
    target = ((h22 * 2 * T1 - h12 * 2 * T0) / det, (h11 * 2 * T0 - h12 * 2 * T1) / det)
    return (h11 * w + h12 * b - 2 * T1, h12 * w + h22 * b - 2 * T0), (h11, h12, h22), target


def _along(sp, w, b, dw, db, t, cp, cn):
    """At (w, b) + t (dw, db): phi'(t) = grad . d, phi''(t) = d^T H d (of the active set there), the active set."""
    m, active = sp.moments(w + t * dw, b + t * db, cp, cn)
    (gw, gb), (h11, h12, h22), _ = _newton(w + t * dw, b + t * db, m)
    return gw * dw + gb * db, h11 * dw * dw + 2 * h12 * dw * db + h22 * db * db, active


def linear_svc_1d(x: torch.Tensor, y: torch.Tensor, counts: torch.Tensor, *, C: float = SAP_C,
                  max_iter: int = 100, line_iter: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's LinearSVC(C, class_weight="balanced") fitted on each code dim alone, for every factor at once.

    x (N, D) codes, y (N, K) dense class labels 0..n_k-1, counts (K, Cm) class counts -> w, b (D, K, Cm): the
    decision function w x + b of class c (one-vs-rest) for each (d, k); for a binary factor only c = 1 is a
    problem (class 1 positive, sklearn's `scores > 0`), c = 0 is left 0.
    The problem is liblinear's L2R_L2LOSS_SVC (sklearn/svm/src/liblinear/linear.cpp, train and train_one;
    LinearSVC docs): minimise 0.5 (w^2 + b^2) + sum_n C_n max(0, 1 - y_n (w x_n + b))^2, the intercept an
    extra feature of value intercept_scaling = 1 that IS regularised; balanced class weights n / (k n_c) scale C:
    multi-class one-vs-rest gives the positives C w_c and the negatives plain C, a binary factor gives class 1
    C w_1 and class 0 C w_0. The objective is strictly convex, differentiable and piecewise quadratic, so it has
    one optimum, found by the finite Newton method (Mangasarian 2002, "A finite Newton method for
    classification"; Keerthi & DeCoste 2005, JMLR 6, with their exact line search): step to the minimiser of
    the current active set's quadratic; where that overshoots (phi'(1) > 0 along the step), find the root of the
    piecewise-linear, increasing phi'(t) by Newton steps safeguarded by bisection. phi' is a gradient, free of
    the cancellation that makes objective values useless for a line search near the optimum. Batched over all
    D * K * Cm problems, each evaluation O(log N) (_SortedProblems). A problem is solved when the minimiser of
    its active set's quadratic has the same active set (the exact optimum, up to rounding), or its step is
    below 1e-13 of (w, b) (the optimum on a margin kink, where both neighbouring pieces share it).
    liblinear's TRON instead stops at |grad| <= tol * max(min(pos, neg), 1) / n * |grad at 0| (tol = 1e-4).
    """
    (N, D), (K, Cm) = x.shape, counts.shape
    dt, dev = x.dtype, x.device
    nk = (counts > 0).sum(1, keepdim=True)  # (K, 1) classes per factor
    cls = torch.arange(Cm, device=dev)[None, :]
    cw = N / (nk * counts).to(dt)  # sklearn's compute_class_weight("balanced"): n / (k * n_c); inf where unused
    binary = nk == 2
    valid = (cls < nk) & ~(binary & (cls == 0))
    cp = torch.where(valid, C * cw, 0.0)[None, :, None, :]  # (1, K, 1, Cm)
    cn = torch.where(valid, torch.where(binary, C * cw[:, :1], C), 0.0)[None, :, None, :]
    sp = _SortedProblems(x, y, counts)
    shape = (D, K, 1, Cm)
    w, b = torch.zeros(shape, dtype=dt, device=dev), torch.zeros(shape, dtype=dt, device=dev)
    todo = valid[None, :, None, :].expand(shape).clone()
    one = torch.ones(shape, dtype=dt, device=dev)
    for _ in range(max_iter):
        m, active = sp.moments(w, b, cp, cn)
        _, _, (wn, bn) = _newton(w, b, m)
        dw, db = wn - w, bn - b
        dphi, curv, active_n = _along(sp, w, b, dw, db, one, cp, cn)
        scale = torch.maximum(torch.maximum(w.abs(), b.abs()), one)
        done = todo & ((active_n == active).all(0) | (torch.maximum(dw.abs(), db.abs()) <= 1e-13 * scale))
        w, b = torch.where(done, wn, w), torch.where(done, bn, b)
        full = todo & ~done & (dphi <= 0)  # phi' <= 0 on [0, 1]: the whole step descends
        w, b = torch.where(full, wn, w), torch.where(full, bn, b)
        todo &= ~done
        search = todo & ~full  # overshoot: phi'(0) < 0 < phi'(1)
        if search.any():
            lo, hi, t = torch.zeros_like(w), one.clone(), one.clone()
            for _ in range(line_iter):
                tn = t - dphi / curv  # Newton on phi', exact when t and tn share an active set
                newton = (tn > lo) & (tn < hi)
                tn = torch.where(newton, tn, (lo + hi) / 2)
                dphi_n, curv_n, active_t = _along(sp, w, b, dw, db, tn, cp, cn)
                root = search & ((dphi_n == 0) | (newton & (active_t == active_n).all(0)))
                lo = torch.where(search & ((dphi_n <= 0) | root), tn, lo)
                hi = torch.where(search & (dphi_n > 0) & ~root, tn, hi)
                search &= ~root & (hi - lo > 1e-15 * hi)
                t, dphi, curv, active_n = tn, dphi_n, curv_n, active_t
                if not search.any():
                    break
            step = todo & ~full
            w, b = torch.where(step, w + lo * dw, w), torch.where(step, b + lo * db, b)
        if not todo.any():
            break
    else:
        warnings.warn(f"sap: {int(todo.sum())} of {int(valid.sum()) * D} linear SVM problems did not converge in "
                      f"{max_iter} Newton steps", RuntimeWarning, stacklevel=3)
    return w[:, :, 0], b[:, :, 0]


def sap_classes(factors: torch.Tensor, what: str):
    y, nk, values = _dense_labels(factors)
    if (nk < 2).any():
        k = int(torch.nonzero(nk < 2)[0])
        raise ValueError(f"{what}: factor {k} has a single value ({int(values[0, k])}) in the training set; a "
                         f"classifier needs at least 2 classes (sklearn's LinearSVC refuses it too)")
    counts = torch.zeros(factors.shape[1] * int(nk.max()), dtype=torch.int64, device=factors.device)
    Cm = len(values)
    counts.index_add_(0, (y + torch.arange(factors.shape[1], device=y.device)[None, :] * Cm).reshape(-1),
                      torch.ones(y.numel(), dtype=torch.int64, device=y.device))
    return y, counts.reshape(-1, Cm), values


def sap_score_matrix(codes_train, factors_train, codes_test, factors_test) -> torch.Tensor:
    """(D, K) test accuracy of a linear SVM predicting factor k from code dim d alone (sap_score.py's matrix)."""
    codes_train, factors_train = _check(codes_train, factors_train, "sap (train)")
    codes_test, factors_test = _check(codes_test, factors_test, "sap (test)")
    if codes_train.shape[1] != codes_test.shape[1] or factors_train.shape[1] != factors_test.shape[1]:
        raise ValueError(f"sap: train codes/factors {tuple(codes_train.shape)}/{tuple(factors_train.shape)} and "
                         f"test {tuple(codes_test.shape)}/{tuple(factors_test.shape)} differ in D or K")
    if codes_train.device != codes_test.device:
        raise ValueError(f"sap: train tensors on {codes_train.device}, test tensors on {codes_test.device}")
    y, counts, values = sap_classes(factors_train, "sap")
    w, b = linear_svc_1d(codes_train, y, counts)  # (D, K, Cm)
    K, Cm = counts.shape
    cls = torch.arange(Cm, device=w.device)
    acc = []
    for k in range(K):  # (D, M, Cm) scores per factor: sklearn's argmax over classes (first on ties), or > 0
        nk = int((counts[k] > 0).sum())
        binary0 = (cls == 0) & (nk == 2)  # a binary factor's class 0 scores 0: class 1 wins where w x + b > 0
        s = codes_test.T[:, :, None] * w[:, k, None, :] + b[:, k, None, :]
        s = torch.where((cls < nk) & ~binary0, s, torch.where(binary0, 0.0, float("-inf")))
        pred = values[:, k][s.argmax(2)]  # (D, M) predicted factor values
        acc.append((pred == factors_test[None, :, k]).to(w.dtype).mean(1))
    return torch.stack(acc, 1)


def sap_from_matrix(matrix: torch.Tensor) -> float:
    """Mean over factors of the gap between the two most predictive code dims."""
    if matrix.shape[0] < 2:
        raise ValueError("sap: needs at least 2 code dimensions (the gap between the top two)")
    top = torch.topk(matrix, 2, dim=0).values
    return float((top[0] - top[1]).mean())


def sap(codes_train, factors_train, codes_test, factors_test) -> float:
    """SAP score (Kumar et al. 2018) with discrete factors, as disentanglement.sap, on the codes' device."""
    return sap_from_matrix(sap_score_matrix(codes_train, factors_train, codes_test, factors_test))


# -- all of them -----------------------------------------------------------------------------------------------
def suite(codes_train, factors_train, codes_test, factors_test, *, num_bins: int = NUM_BINS) -> dict[str, float]:
    """{mig, sap, irs, modexp_modularity} as wrappers.py's metrics compute them on one draw (train codes for
    MIG, IRS and modularity; train and test for SAP), discretising the codes and building the MI matrix once."""
    codes, factors = _check(codes_train, factors_train, "suite (train)")
    mi = discrete_mutual_info(histogram_discretize(codes, num_bins), factors)
    return {"mig": mig_from_mi(mi, discrete_entropy(factors)),
            "sap": sap(codes, factors, codes_test, factors_test),
            "irs": irs(codes, factors, num_bins=num_bins),
            "modexp_modularity": modularity_from_mi(mi)}
