"""metrics/tensor.py against the numpy path (discretize.py, disentanglement.py) on the same data: exact labels,
MI-derived scores within floating-point bounds derived below, SAP within the band liblinear's tolerance leaves."""
from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from causalrep.metrics import discretize as nd
from causalrep.metrics import disentanglement as ndis
from causalrep.metrics import tensor as tm

if str(Path(__file__).parents[1] / "fuzz") not in sys.path:  # tests/ is not a package (see tests/test_cuda.py)
    sys.path.insert(0, str(Path(__file__).parents[1] / "fuzz"))
import fuzzing  # noqa: E402,F401  loads the project's Hypothesis profile (quick, or CAUSALREP_FUZZ_PROFILE=long)

T = torch.from_numpy
U = 2.0 ** -53  # float64 unit roundoff


def mi_bound(cells: int, n: int) -> float:
    """Worst-case |difference| of one MI entry between two float64 evaluations that sum the same <= `cells` terms
    p log(p / (p_a p_b)) in different orders: each term is within a few u of exact relative to |log(...)| <=
    log n^2 (counts >= 1 of n), and reordering a sum of `cells` terms moves it by <= cells u sum|terms|, where
    sum|terms| <= 2 log n. (Observed differences are ~1e-16; this bound is ~1e-12 for 400 cells and n = 10^4.)"""
    return (cells + 8) * 2 * U * 2 * math.log(max(n, 2))


def codes_for(kind: str, n: int, sizes, seed: int, spare: int = 3):
    """(codes, factors) of a kind of representation: an aligned code (one dim per factor plus noise dims),
    a rotated one (every dim mixes factors), pure noise, or discrete codes (ties everywhere)."""
    rng = np.random.default_rng(seed)
    f = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    K = len(sizes)
    if kind == "aligned":
        return np.concatenate([f + rng.random(f.shape), rng.normal(size=(n, spare))], 1), f
    if kind == "rotated":
        z = np.concatenate([f / np.asarray(sizes) + 0.1 * rng.normal(size=f.shape), rng.normal(size=(n, spare))], 1)
        q, _ = np.linalg.qr(rng.normal(size=(K + spare, K + spare)))
        return z @ q, f
    if kind == "noise":
        return rng.normal(size=(n, K + spare)), f
    if kind == "discrete":
        return np.concatenate([f.astype(float), 2.0 * rng.integers(0, 2, (n, spare))], 1), f
    raise ValueError(kind)


# -- histogram_discretize: the same labels exactly ----------------------------------------------------------------
def odd_columns(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.normal(size=n), rng.random(n) * 1e-9 + 3.0, np.full(n, 7.0), np.full(n, 0.1),
                     rng.integers(-3, 4, n).astype(float), 1e6 + rng.random(n), rng.standard_cauchy(n),
                     np.where(rng.random(n) < 0.3, -0.0, rng.integers(0, 2, n).astype(float))], axis=1)


@pytest.mark.parametrize("n", [1, 2, 997, 5000])
def test_histogram_discretize_equals_numpy_exactly(n):
    # constant columns (numpy's (v - .5, v + .5) range), ties, a 1e-9 range at offset 3, a large offset, heavy
    # tails, -0.0 beside 0.0 and 1.0
    x = odd_columns(n, n)
    assert torch.equal(tm.histogram_discretize(T(x)), T(nd.histogram_discretize(x)))
    for bins in (1, 2, 7):
        assert torch.equal(tm.histogram_discretize(T(x), bins), T(nd.histogram_discretize(x, bins)))


def test_histogram_discretize_float32_and_integer_inputs_follow_the_numpy_metrics():
    rng = np.random.default_rng(0)
    x32 = rng.normal(size=(999, 4)).astype(np.float32)
    # the numpy metrics discretise float64(codes) (_check converts); torch does the same on float32 input
    assert torch.equal(tm.histogram_discretize(T(x32)), T(nd.histogram_discretize(x32.astype(np.float64))))
    # irs discretises integer factors (float64 edges, numpy's bin_type): 32 values merge into 20 bins
    f = np.stack([rng.integers(0, 32, 999), rng.integers(-5, 3, 999), np.full(999, 4)], axis=1)
    assert torch.equal(tm.histogram_discretize(T(f)), T(nd.histogram_discretize(f)))


@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
                  elements=st.one_of(st.floats(-1e6, 1e6, allow_subnormal=True), st.sampled_from([0.0, 1.0, -2.5]))),
       st.integers(1, 25))
def test_histogram_discretize_property(x, bins):
    try:
        want = nd.histogram_discretize(x, bins)
    except ValueError:  # numpy: "Too many bins for data range" (a range of a few subnormals)
        with pytest.raises(ValueError, match="too small"):
            tm.histogram_discretize(T(x), bins)
        return
    assert torch.equal(tm.histogram_discretize(T(x), bins), T(want))


def test_histogram_discretize_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"\(N, D\).*\(5,\)"):
        tm.histogram_discretize(torch.zeros(5))
    with pytest.raises(ValueError, match="NaN or inf"):
        tm.histogram_discretize(torch.tensor([[0.0], [float("nan")]]))
    with pytest.raises(ValueError, match=r"columns \[1\].*too small"):  # numpy refuses it as well
        tm.histogram_discretize(torch.tensor([[0.0, 0.0], [1.0, 1e-323]], dtype=torch.float64))


# -- mutual information and entropy --------------------------------------------------------------------------------
def label_cases():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 7, size=(1001, 4)), rng.integers(3, 9, size=(1001, 3))
    a[:, 1] = 5  # a constant code
    b[:, 0] = a[:, 0] // 2  # a dependent pair
    b[:, 2] = -4  # a factor with one value
    yield a, b
    yield rng.integers(-50, 50, size=(10, 2)) * 7, rng.integers(0, 2, size=(10, 2))  # sparse values, N = 10
    z, f = codes_for("aligned", 4999, (2, 10, 32), 2)
    yield nd.histogram_discretize(z), f


@pytest.mark.parametrize("case", range(3))
def test_mutual_info_and_entropy_equal_numpy(case):
    a, b = list(label_cases())[case]
    want = nd.discrete_mutual_info(a, b)
    got = tm.discrete_mutual_info(T(a), T(b))
    cells = len(np.unique(a)) * len(np.unique(b))
    assert got.dtype == torch.float64 and got.shape == want.shape
    assert np.abs(got.numpy() - want).max() <= mi_bound(cells, len(a))
    h_bound = mi_bound(len(np.unique(b)), len(b))
    assert np.abs(tm.discrete_entropy(T(b)).numpy() - nd.discrete_entropy(b)).max() <= h_bound
    # chunking only splits the integer counts: the same numbers, bit for bit
    assert torch.equal(tm.discrete_mutual_info(T(a), T(b), chunk=7), got)


@given(st.integers(1, 60).flatmap(lambda n: st.tuples(hnp.arrays(np.int64, (n, 3), elements=st.integers(-3, 3)),
                                                     hnp.arrays(np.int64, (n, 2), elements=st.integers(0, 4)))))
def test_mutual_info_property(ab):
    a, b = ab
    got = tm.discrete_mutual_info(T(a), T(b)).numpy()
    assert np.abs(got - nd.discrete_mutual_info(a, b)).max() <= mi_bound(7 * 5, len(a))
    assert np.abs(tm.discrete_entropy(T(b)).numpy() - nd.discrete_entropy(b)).max() <= mi_bound(5, len(a))


def test_mutual_info_hand_computed():
    # z1 = v1 and z2 = v1 AND v2 on the 4 combinations of two balanced bits (test_disentanglement's case):
    # I(z1; v1) = ln 2, I(z1; v2) = 0, I(z2; v_i) = H(1/4, 3/4) - ln(2)/2
    v = np.tile(np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), (25, 1))
    z = np.stack([v[:, 0], v[:, 0] & v[:, 1]], axis=1)
    i_and = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) - 0.5 * math.log(2)
    assert np.allclose(tm.discrete_mutual_info(T(z), T(v)).numpy(), [[math.log(2), 0.0], [i_and, i_and]], atol=1e-15)


# -- MIG and modularity -----------------------------------------------------------------------------------------
def score_cases():
    yield codes_for("aligned", 3001, (2, 10, 5), 3)
    yield codes_for("rotated", 2000, (10, 10), 4)
    yield codes_for("noise", 1999, (2, 3), 5)
    z, f = codes_for("aligned", 1500, (4, 1, 3), 6)  # factor 1 has one value: no entropy, skipped by MIG
    z[:, 1] = 7.0  # and a constant code dim
    yield z, f


@pytest.mark.parametrize("case", range(4))
def test_mig_and_modularity_equal_numpy(case):
    z, f = list(score_cases())[case]
    mi = nd.discrete_mutual_info(nd.histogram_discretize(z), f)
    h = nd.discrete_entropy(f)
    delta = mi_bound(20 * f.max(initial=1) + 20, len(z))  # per MI / entropy entry
    # MIG: (m1 - m2) / H moves by <= (2 delta + delta MIG_k) / H_k per factor; mean over factors with H > 0
    keep = h > 0
    mig_tol = np.mean((2 * delta + delta) / h[keep]) + 8 * U
    assert abs(tm.mig(T(z), T(f)) - ndis.mig(z, f)) <= mig_tol
    # modularity: each ratio m_j / M moves by <= 2 delta / M and (m_j / M)^2 by <= 4 delta / M, so a code's score
    # by <= 4 delta / M; codes with M = 0 (no information: a constant code) are 0 in both
    mx = mi.max(1)
    mod_tol = np.mean(np.where(mx > 0, 4 * delta / np.where(mx > 0, mx, 1), 0.0)) + 8 * U * f.shape[1]
    assert abs(tm.modularity(T(z), T(f)) - ndis.modularity_from_mi(mi)) <= mod_tol
    # the formulas alone, on the numpy MI matrix: only the order of a few additions differs
    assert tm.mig_from_mi(T(mi), T(h)) == pytest.approx(ndis.mig(z, f), abs=8 * U * f.shape[1])
    assert tm.modularity_from_mi(T(mi)) == pytest.approx(ndis.modularity_from_mi(mi), abs=16 * U * f.shape[1])


def test_mig_modularity_hand_values():
    v = np.tile(np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), (25, 1))
    z = np.stack([v[:, 0], v[:, 0] & v[:, 1]], axis=1).astype(float)
    assert tm.mig(T(z), T(v)) == pytest.approx(0.5, abs=1e-15)  # test_disentanglement's hand-computed MIG
    mi = torch.tensor([[2.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 3.0]])  # test_disentanglement's rows
    assert tm.modularity_from_mi(mi) == pytest.approx(1.75 / 4)
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        tm.mig(T(z[:, :1]), T(v))


# -- IRS ----------------------------------------------------------------------------------------------------------
def irs_bound(z: np.ndarray) -> float:
    """|IRS difference| from summation order: the means (of N terms, or of a group's) differ by <= 2 N u max|z|
    (recursive summation), so do the deviations and their quantiles; a score 1 - cum / max_dev then moves by
    <= 3 that / max_dev, and so does its weighted mean."""
    z = z[:, z.max(0) > z.min(0)]
    return 3 * 2 * len(z) * U * np.abs(z).max() / np.abs(z - z.mean(0)).max(0).min() + 16 * U


@pytest.mark.parametrize("case", range(4))
def test_irs_equals_numpy(case):
    z, f = list(score_cases())[case]
    assert abs(tm.irs(T(z), T(f)) - ndis.irs(z, f)) <= irs_bound(z)


def test_irs_many_factor_values_uniform_codes_and_quantiles():
    rng = np.random.default_rng(7)
    f = np.stack([rng.integers(0, 32, 4001), rng.integers(0, 2, 4001), rng.integers(0, 40, 4001)], axis=1)
    z = np.concatenate([f[:, :1] / 32 + 0.01 * rng.random((4001, 1)), rng.uniform(-1, 1, (4001, 2))], axis=1)
    for q in (0.99, 0.5, 0.0, 1.0):  # interpolation weights above and below 1/2, the end points
        assert abs(tm.irs(T(z), T(f), diff_quantile=q) - ndis.irs(z, f, diff_quantile=q)) <= irs_bound(z)


@given(st.integers(2, 80).flatmap(lambda n: st.tuples(
    hnp.arrays(np.float64, (n, 3), elements=st.one_of(
        st.integers(-800, 800).map(lambda i: i / 8),  # ties, and groups whose deviations tie
        st.floats(-100, 100).filter(lambda v: v == 0 or abs(v) > 1e-100))),  # no squares that underflow to 0
    hnp.arrays(np.int64, (n, 2), elements=st.integers(0, 5)))))
def test_irs_property(zf):
    z, f = zf
    active = z.max(0) > z.min(0)
    if not active.any():  # nothing active: 0
        assert tm.irs(T(z), T(f)) == 0.0
        return
    # exactly constant dims are dropped; numpy's var > 0 may keep one whose mean rounds (see the 0.1 case below)
    assert abs(tm.irs(T(z), T(f)) - ndis.irs(z[:, active], f)) <= irs_bound(z)


def test_irs_hand_computed_and_constant_dims():
    f = np.tile(np.array([[0, 0], [0, 1], [1, 1], [1, 0]]), (25, 1))
    v3 = np.tile(np.array([0, 1, 0, 1]), 25)
    z = np.stack([2.0 * f[:, 0], 2.0 * v3], axis=1)
    assert tm.irs(T(z), T(f)) == pytest.approx(0.5, abs=1e-15)  # test_disentanglement's hand-computed IRS
    assert tm.irs(T(np.concatenate([z, np.zeros((100, 1))], 1)), T(f)) == pytest.approx(0.5, abs=1e-15)
    assert tm.irs(torch.ones(10, 2, dtype=torch.float64), T(f[:10])) == 0.0 == ndis.irs(np.ones((10, 2)), f[:10])
    # a constant 0.1 column: its float64 mean rounds off 0.1, so numpy's var > 0 keeps it with weight = its max
    # deviation (~1e-14); torch drops it (exactly constant), i.e. equals numpy on the codes without it
    z, f = codes_for("aligned", 10000, (3, 5), 8, spare=1)
    z01 = np.concatenate([z, np.full((len(z), 1), 0.1)], 1)
    assert np.var(z01[:, -1]) > 0
    assert abs(tm.irs(T(z01), T(f)) - ndis.irs(z, f)) <= irs_bound(z)
    weight = np.abs(z01[:, -1] - z01[:, -1].mean()).max()
    total = np.abs(z - z.mean(0)).max(0).sum()
    # its score is 1 - (mean group deviation) / (max deviation), in [0, 1] here (2/3: rounding noise within
    # groups vs over all); numpy's weighted mean moves by <= weight / total, plus an ulp for the extra term
    assert abs(ndis.irs(z01, f) - ndis.irs(z, f)) <= weight / total + 4 * U


# -- SAP: the LinearSVC problems and the score ------------------------------------------------------------------
def svc_problem(x: np.ndarray, f: np.ndarray, c: int):
    """liblinear's set-up of problem c (train and train_one in sklearn/svm/src/liblinear/linear.cpp): labels +-1
    and per-sample C_n with class_weight="balanced"; a binary factor is one problem with class 1 positive."""
    classes, counts = np.unique(f, return_counts=True)
    cw = len(f) / (len(classes) * counts)
    if len(classes) == 2:
        pos = f == classes[1]
        cn = tm.SAP_C * np.where(pos, cw[1], cw[0])
    else:
        pos = f == classes[c]
        cn = tm.SAP_C * np.where(pos, cw[c], 1.0)
    return np.where(pos, 1.0, -1.0), cn


def svc_grad(x, y, cn, w, b):
    """Gradient of 0.5 (w^2 + b^2) + sum_n C_n max(0, 1 - y_n (w x_n + b))^2, and the scale of what it sums."""
    m = 1 - y * (w * x + b)
    a = m > 0
    g = np.array([w - 2 * np.sum(cn[a] * m[a] * y[a] * x[a]), b - 2 * np.sum(cn[a] * m[a] * y[a])])
    scale = np.array([abs(w) + 2 * (abs(w) * np.sum(cn * x * x) + (abs(b) + 1) * np.sum(cn * np.abs(x))),
                      abs(b) + 2 * (abs(w) * np.sum(cn * np.abs(x)) + (abs(b) + 1) * np.sum(cn))])
    return g, scale


def svc_objective(x, y, cn, w, b):
    return 0.5 * (w * w + b * b) + np.sum(cn * np.maximum(0.0, 1 - y * (w * x + b)) ** 2)


def sap_reference(z, f, zt, ft):
    """The numpy path's (D, K) accuracies (disentanglement._sap_pair's classifier), the torch solver's, and per
    cell a bound on how many test points the two can classify differently.

    The objective is 1-strongly convex (the Hessian is >= I), so |theta - theta*| <= |grad f(theta)| for any
    theta: our and liblinear's (w, b) per problem differ by at most E = |grad(ours)| + |grad(liblinear)|, and a
    score w x + b by at most E sqrt(1 + x^2). A test point can change class only if its top two scores (or, for
    a binary factor, its score and 0) are within the sum of those bounds."""
    (N, D), K = z.shape, f.shape[1]
    y, counts, values = tm.sap_classes(T(f), "test")
    w, b = tm.linear_svc_1d(T(z), y, counts)
    acc_sk, acc_t, flips = np.zeros((D, K)), np.zeros((D, K)), np.zeros((D, K))
    for d in range(D):
        for k in range(K):
            clf = LinearSVC(C=tm.SAP_C, class_weight="balanced")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(z[:, d:d + 1], f[:, k])
            acc_sk[d, k] = np.mean(clf.predict(zt[:, d:d + 1]) == ft[:, k])
            classes = clf.classes_
            probs = [1] if len(classes) == 2 else range(len(classes))
            E, ours = [], []
            for row, c in enumerate(probs):
                yy, cn = svc_problem(z[:, d], f[:, k], c)
                wo, bo = w[d, k, c].item(), b[d, k, c].item()
                g_o, scale = svc_grad(z[:, d], yy, cn, wo, bo)
                g_s, _ = svc_grad(z[:, d], yy, cn, clf.coef_[row, 0], clf.intercept_[row])
                # ours is the optimum up to rounding: |grad| within the worst-case error of summing its N terms
                assert np.all(np.abs(g_o) <= N * U * scale), (d, k, c, g_o, scale)
                assert svc_objective(z[:, d], yy, cn, wo, bo) <= svc_objective(
                    z[:, d], yy, cn, clf.coef_[row, 0], clf.intercept_[row]) * (1 + 4 * N * U)
                gap = math.hypot(wo - clf.coef_[row, 0], bo - clf.intercept_[row])
                E.append(np.linalg.norm(g_o) + np.linalg.norm(g_s) + N * U * np.linalg.norm(scale))
                assert gap <= E[-1], (d, k, c, gap, E[-1])  # strong convexity, checked
                ours.append((wo, bo))
            wo, bo = np.array(ours).T
            s = zt[:, d:d + 1] * wo[None] + bo[None]  # (M, problems) our scores
            if len(classes) == 2:
                margin = np.abs(s[:, 0])
            else:
                top2 = np.sort(s, axis=1)[:, -2:]
                margin = top2[:, 1] - top2[:, 0]
            flips[d, k] = np.sum(margin <= 2 * max(E) * np.sqrt(1 + zt[:, d] ** 2))
    acc_t = tm.sap_score_matrix(T(z), T(f), T(zt), T(ft)).numpy()
    return acc_sk, acc_t, flips / len(zt)


def check_sap_case(kind, sizes, n, seed):
    z, f = codes_for(kind, n, sizes, seed)
    zt, ft = codes_for(kind, n // 2, sizes, seed + 1000)
    acc_sk, acc_t, flip_bound = sap_reference(z, f, zt, ft)
    assert np.all(np.abs(acc_t - acc_sk) <= flip_bound + 1e-15)
    # the numpy path's matrix is exactly sap_reference's (the same classifier), so is its score
    assert np.array_equal(ndis.sap_score_matrix(z, f, zt, ft, n_jobs=1), acc_sk)
    got, want = tm.sap(T(z), T(f), T(zt), T(ft)), ndis.sap(z, f, zt, ft, n_jobs=1, backend="sklearn")
    # the gap of the top two dims moves by at most twice the largest change of a cell in that factor's column
    assert abs(got - want) <= np.mean(2 * flip_bound.max(0)) + 1e-15
    assert abs(got - want) <= 1e-3  # what that allowed on the measured cases (0 to 1.2e-4 at 10k / 5k points)
    return got - want


@pytest.mark.parametrize("kind", ["aligned", "rotated", "noise", "discrete"])
def test_sap_matches_sklearn_within_the_liblinear_band(kind):
    check_sap_case(kind, (2, 10, 3), 1601, 11)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["aligned", "rotated", "noise"])
@pytest.mark.parametrize("sizes", [(2,) * 5, (10,) * 5])
def test_sap_matches_sklearn_at_benchmark_size(kind, sizes):
    check_sap_case(kind, sizes, 10000, 21)


@given(st.integers(20, 300), st.integers(2, 5), st.sampled_from(["aligned", "noise", "discrete"]),
       st.integers(0, 10**6))
def test_linear_svc_1d_property(n, size, kind, seed):
    z, f = codes_for(kind, n, (size, 2), seed, spare=1)
    if min(len(np.unique(c)) for c in f.T) < 2:  # a factor with one value: no classifier (tested below)
        return
    zt, ft = codes_for(kind, n, (size, 2), seed + 1, spare=1)
    acc_sk, acc_t, flip_bound = sap_reference(z, f, zt, ft)
    assert np.all(np.abs(acc_t - acc_sk) <= flip_bound + 1e-15)


def test_sap_hand_cases_and_class_values():
    v = np.tile(np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), (25, 1))
    z = 2.0 * v - 1.0  # test_disentanglement's case: gap 0.5 per factor, 0 with duplicated dims
    assert tm.sap(T(z), T(v), T(z), T(v)) == pytest.approx(0.5, abs=1e-15)
    zz = np.concatenate([z, z], 1)
    assert tm.sap(T(zz), T(v), T(zz), T(v)) == pytest.approx(0.0, abs=1e-15)
    # class values that are not 0..k-1, and a test value never seen in training (always wrong, as in sklearn)
    z, f = codes_for("aligned", 900, (3, 4), 12)
    zt, ft = codes_for("aligned", 450, (3, 4), 13)
    f, ft = f * 7 - 3, ft * 7 - 3
    ft[:5, 0] = 99
    acc_sk, acc_t, flip_bound = sap_reference(z, f, zt, ft)
    assert np.all(np.abs(acc_t - acc_sk) <= flip_bound + 1e-15)
    assert acc_t[:, 0].max() <= 1 - 5 / len(zt)


def test_sap_refuses_a_factor_with_one_value_as_sklearn_does():
    z, f = codes_for("aligned", 200, (3, 1), 14)
    with pytest.raises(ValueError, match="at least 2 classes"):
        ndis.sap(z, f, z, f, backend="sklearn")
    with pytest.raises(ValueError, match=r"factor 1 has a single value \(0\)"):
        ndis.sap(z, f, z, f)  # the default backend is the torch one
    with pytest.raises(ValueError, match=r"factor 1 has a single value \(0\)"):
        tm.sap(T(z), T(f), T(z), T(f))


def test_sap_backend_of_the_numpy_function():
    z, f = codes_for("rotated", 1200, (2, 6), 15)
    zt, ft = codes_for("rotated", 600, (2, 6), 16)
    assert ndis.sap(z, f, zt, ft, backend="torch") == tm.sap(T(z), T(f), T(zt), T(ft)) == ndis.sap(z, f, zt, ft)
    # sap_score.py's LinearSVC, selected by name: on this case (no test point within liblinear's tolerance of a
    # boundary) both solve to the same predictions
    assert ndis.sap(z, f, zt, ft, backend="sklearn") == pytest.approx(ndis.sap(z, f, zt, ft), abs=1e-3)
    with pytest.raises(ValueError, match="unknown backend 'svm'; valid: sklearn, torch"):
        ndis.sap(z, f, zt, ft, backend="svm")


# -- suite, dtypes, errors, devices ---------------------------------------------------------------------------------
def test_suite_is_the_four_functions_in_one_pass():
    z, f = codes_for("aligned", 2500, (2, 10, 4), 17)
    zt, ft = codes_for("aligned", 1250, (2, 10, 4), 18)
    s = tm.suite(T(z), T(f), T(zt), T(ft))
    assert s == {"mig": tm.mig(T(z), T(f)), "sap": tm.sap(T(z), T(f), T(zt), T(ft)), "irs": tm.irs(T(z), T(f)),
                 "modexp_modularity": tm.modularity(T(z), T(f))}
    assert all(isinstance(v, float) for v in s.values())


def test_float32_codes_give_the_numpy_path_on_their_float64_values():
    z, f = codes_for("rotated", 1800, (3, 5), 19)
    z32 = z.astype(np.float32)
    z64 = z32.astype(np.float64)  # what the numpy path computes on (its _check converts)
    delta = mi_bound(20 * 5 + 20, len(z))
    assert tm.mig(T(z32), T(f)) == pytest.approx(ndis.mig(z64, f), abs=3 * delta / nd.discrete_entropy(f).min())
    assert tm.mig(T(z32), T(f)) == tm.mig(T(z64), T(f))
    assert tm.irs(T(z32), T(f)) == tm.irs(T(z64), T(f))


def test_errors_name_shapes_and_dtypes():
    z, f = torch.zeros(10, 3), torch.zeros(10, 2, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"mig: expected codes \(N, D\) and factors \(N, K\).*\(10, 3\) and \(9, 2\)"):
        tm.mig(z, f[:9])
    with pytest.raises(ValueError, match="irs: factors must be integer factor indices, got dtype torch.float32"):
        tm.irs(z, f.float())
    with pytest.raises(ValueError, match="codes must be a floating-point tensor, got dtype torch.int64"):
        tm.modularity(f, f)
    with pytest.raises(ValueError, match=r"sap \(train\): codes contain NaN or inf \(1 entries\)"):
        tm.sap(z.index_put((torch.tensor(0), torch.tensor(0)), torch.tensor(float("inf"))), f, z, f)
    with pytest.raises(ValueError, match=r"sap: train codes/factors \(10, 3\)/\(10, 2\) and test \(10, 4\)"):
        tm.sap(z, f, torch.zeros(10, 4), f)
    with pytest.raises(TypeError, match="expected torch tensors, got ndarray"):
        tm.suite(np.zeros((10, 3)), f, z, f)
    with pytest.raises(ValueError, match="discrete_mutual_info: b must be integer labels, got dtype torch.float32"):
        tm.discrete_mutual_info(f, z)
    with pytest.raises(ValueError, match=r"10 rows|same number of rows"):
        tm.discrete_mutual_info(f, f[:3])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_equals_cpu():
    z, f = codes_for("rotated", 5000, (2, 10, 10), 20)
    zt, ft = codes_for("rotated", 2500, (2, 10, 10), 21)
    cpu = tm.suite(T(z), T(f), T(zt), T(ft))
    cuda = tm.suite(*(T(a).cuda() for a in (z, f, zt, ft)))
    # float64 on both; CUDA's atomic adds (bincount is exact, index_add_ is not ordered) reorder sums only
    assert torch.equal(tm.histogram_discretize(T(z).cuda()).cpu(), tm.histogram_discretize(T(z)))
    for key in ("mig", "modexp_modularity"):
        assert cuda[key] == pytest.approx(cpu[key], abs=1e-12)
    assert cuda["irs"] == pytest.approx(cpu["irs"], abs=irs_bound(z))
    assert cuda["sap"] == pytest.approx(cpu["sap"], abs=2 / len(zt))  # a point exactly on a boundary may flip
