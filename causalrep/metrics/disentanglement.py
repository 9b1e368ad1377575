"""Disentanglement metrics on arrays (MIG, DCI, SAP, Modularity/Explicitness, IRS), after disentanglement_lib.

Every function takes codes (N, D) float and factors (N, K) int factor indices (rows are samples;
disentanglement_lib passes the transposes) and follows google-research/disentanglement_lib
(Locatello et al. 2019) as used by 001 (sec 4, appendix tables: DCI-d/c, IRS, MIG, SAP, ModExp).
Where we compute the same quantity another way (vectorised, in parallel) the comment says so;
where the value can differ from the reference (the fast DCI estimator), the docstring says how much.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.stats
import torch
from joblib import Parallel, cpu_count, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from .discretize import NUM_BINS, discrete_entropy, discrete_mutual_info, histogram_discretize
from .gbt import GBT_DEFAULT, GBT_KINDS, check_kind, fit_factor  # noqa: F401  (GBT_*: re-exported)
from .tensor import sap as torch_sap

SAP_BACKENDS = ("sklearn", "torch")


def _check(codes: np.ndarray, factors: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"{what}: expected codes (N, D) and factors (N, K) with the same N, "
                         f"got {codes.shape} and {factors.shape}")
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"{what}: factors must be integer factor indices, got dtype {factors.dtype}")
    if not np.isfinite(codes).all():
        raise ValueError(f"{what}: codes contain NaN or inf ({int((~np.isfinite(codes)).sum())} entries)")
    return codes, factors.astype(np.int64)


def _n_jobs(n_jobs: int | None, tasks: int) -> int:
    return max(1, min(tasks, n_jobs if n_jobs is not None else cpu_count()))


# -- MIG (Chen et al. 2018; disentanglement_lib mig.py) -----------------------------------------------
def mig(codes: np.ndarray, factors: np.ndarray, *, num_bins: int = NUM_BINS) -> float:
    """Mean over factors of (I(z_top1; v) - I(z_top2; v)) / H(v), codes histogram-discretised (20 bins).

    As mig.py's `discrete_mig`, with the (D, K) MI matrix from one vectorised pass (discretize.py).
    Deviation: a constant factor (H = 0) is skipped instead of producing nan (the reference divides by 0).
    """
    codes, factors = _check(codes, factors, "mig")
    m = discrete_mutual_info(histogram_discretize(codes, num_bins), factors)  # (D, K) nats
    h = discrete_entropy(factors)  # (K,)
    if m.shape[0] < 2:
        raise ValueError("mig: needs at least 2 code dimensions (the gap between the top two)")
    top = -np.sort(-m, axis=0)  # descending per factor
    keep = h > 0
    if not keep.any():
        return 0.0
    return float(np.mean((top[0, keep] - top[1, keep]) / h[keep]))


# -- DCI (Eastwood & Williams 2018; disentanglement_lib dci.py) -----------------------------------------
def dci_scores_from_importance(R: np.ndarray) -> tuple[float, float]:
    """(D codes, K factors) importance matrix -> (disentanglement, completeness).

    disentanglement = sum_i rho_i (1 - H_K(P_i.)), P_i. = row i normalised, rho_i = row share of R;
    completeness = sum_j rho_j (1 - H_D(P_.j)), over columns. The 1e-11 added before normalising
    and the all-zero fallback (uniform weights) are dci.py's. K = 1 (or D = 1) makes every row
    (column) trivially pure, scored 1 (the reference's log base 1 is undefined there).
    """
    R = np.abs(np.asarray(R, dtype=np.float64))
    D, K = R.shape

    def one_minus_entropy(P: np.ndarray, base: int) -> np.ndarray:  # P: (rows, n) -> (rows,)
        if base < 2:
            return np.ones(len(P))
        P = P + 1e-11
        P = P / P.sum(1, keepdims=True)
        return 1.0 + np.sum(P * np.log(P), axis=1) / np.log(base)

    W = R if R.sum() > 0 else np.ones_like(R)
    d = float(np.sum(one_minus_entropy(R, K) * W.sum(1) / W.sum()))
    c = float(np.sum(one_minus_entropy(R.T, D) * W.sum(0) / W.sum()))
    return d, c


def dci(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
        *, gbt: str = GBT_DEFAULT, n_jobs: int | None = None) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness (train/test ACCURACY, as dci.py reports).

    As dci.py's `compute_importance_gbt`: one boosted-tree classifier per factor on all codes, the
    importance matrix R (D, K) from their feature importances (GBC's definition for every estimator,
    gbt.py). The K fits are independent, so they run in parallel on joblib threads, each
    single-threaded (LightGBM's and sklearn's tree code release the GIL; on 2 shared cores this beat
    2 OpenMP threads per fit and process workers, which pay seconds to start). gbt="gbt" is the
    reference estimator (sklearn's GradientBoostingClassifier); the default "lightgbm" fits the same
    model with histograms (docs/metrics.md: speed and agreement); "hist" is sklearn's histogram twin.
    """
    check_kind(gbt)
    codes_train, factors_train = _check(codes_train, factors_train, "dci (train)")
    codes_test, factors_test = _check(codes_test, factors_test, "dci (test)")
    K = factors_train.shape[1]
    # most classes first (one tree per class per stage): the longest fits start first, the short ones
    # fill in behind them, so the threads finish together (longest-processing-time scheduling)
    order = sorted(range(K), key=lambda k: -len(np.unique(factors_train[:, k])))
    with threadpool_limits(1):
        done = Parallel(n_jobs=_n_jobs(n_jobs, K), prefer="threads")(
            delayed(fit_factor)(gbt, codes_train, factors_train[:, k], codes_test, factors_test[:, k]) for k in order)
    fits = [done[order.index(k)] for k in range(K)]
    R = np.stack([f[0] for f in fits], axis=1)  # (D, K)
    d, c = dci_scores_from_importance(R)
    return {"disentanglement": d, "completeness": c,
            "informativeness_train": float(np.mean([f[1] for f in fits])),
            "informativeness_test": float(np.mean([f[2] for f in fits]))}


# -- SAP (Kumar et al. 2018; disentanglement_lib sap_score.py, discrete factors) ----------------------
def _sap_pair(x_train, y_train, x_test, y_test) -> float:
    clf = LinearSVC(C=0.01, class_weight="balanced")  # sap_score.py's classifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train[:, None], y_train)
    return float(np.mean(clf.predict(x_test[:, None]) == y_test))


def sap_score_matrix(codes_train, factors_train, codes_test, factors_test, *, n_jobs: int | None = None) -> np.ndarray:
    """(D, K) test accuracy of a linear SVM predicting factor j from code dim i alone."""
    D, K = codes_train.shape[1], factors_train.shape[1]
    # D*K independent 1-D fits; liblinear releases the GIL, so threads run them in parallel
    acc = Parallel(n_jobs=_n_jobs(n_jobs, D * K), prefer="threads")(
        delayed(_sap_pair)(codes_train[:, i], factors_train[:, j], codes_test[:, i], factors_test[:, j])
        for i in range(D) for j in range(K))
    return np.asarray(acc).reshape(D, K)


def sap(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
        *, n_jobs: int | None = None, backend: str = "torch") -> float:
    """Mean over factors of the gap between the two most predictive single code dims (accuracy).

    backend="torch" (the default; evaluate.sap: exact) solves the same LinearSVC problems to their exact optimum
    (tensor.sap on CPU tensors; tensor.sap itself runs on any device): 2-3x faster at 10k / 5k points with one
    torch thread (tools/bench_tensor_metrics.py --threads 1); it differs from liblinear's tol=1e-4 solutions only at
    test points near a decision boundary (<= 1.2e-4 in SAP on the measured cases, tests/metrics/test_tensor.py).
    backend="sklearn" (evaluate.sap: reference) fits sap_score.py's
    LinearSVC(C=0.01, class_weight="balanced") per pair, on joblib threads.
    """
    codes_train, factors_train = _check(codes_train, factors_train, "sap (train)")
    codes_test, factors_test = _check(codes_test, factors_test, "sap (test)")
    if codes_train.shape[1] < 2:
        raise ValueError("sap: needs at least 2 code dimensions (the gap between the top two)")
    if backend not in SAP_BACKENDS:
        raise ValueError(f"sap: unknown backend {backend!r}; valid: {', '.join(SAP_BACKENDS)}")
    if backend == "torch":
        return torch_sap(*map(torch.from_numpy, (codes_train, factors_train, codes_test, factors_test)))
    s = np.sort(sap_score_matrix(codes_train, factors_train, codes_test, factors_test, n_jobs=n_jobs), axis=0)
    return float(np.mean(s[-1] - s[-2]))


# -- Modularity and explicitness (Ridgeway & Mozer 2018; modularity_explicitness.py) ------------------
def modularity_from_mi(mi: np.ndarray) -> float:
    """(D, K) mutual information -> mean over codes of 1 - (sum_j m_ij^2 - max^2) / (max^2 (K - 1)).

    A code with no information about any factor scores 0 (as the reference); with K = 1 every
    informative code is trivially modular (1).
    """
    sq = np.square(np.asarray(mi, dtype=np.float64))
    mx = sq.max(axis=1)
    K = sq.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        score = 1.0 - (sq.sum(1) - mx) / (mx * (K - 1)) if K > 1 else np.ones(len(sq))
    score[mx == 0] = 0.0
    return float(np.mean(score))


def macro_roc_auc(Y: np.ndarray, P: np.ndarray) -> float:
    """Mean over columns of the ROC-AUC of scores P (N, C) for binary labels Y (N, C), every column both classes.

    = sklearn's roc_auc_score(Y, P, average="macro"), computed as the Mann-Whitney statistic: the AUC of a
    column is (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg) with tied scores given
    their average rank, which is the trapezoidal ROC area sklearn integrates (ties count one half). One
    rankdata over all columns instead of C sorted ROC curves: ~10x faster at 10k points.
    """
    Y = np.asarray(Y, dtype=bool)
    ranks = scipy.stats.rankdata(P, axis=0)  # (N, C) average ranks of ties
    n_pos = Y.sum(0).astype(np.float64)
    n_neg = len(Y) - n_pos
    return float(np.mean((np.where(Y, ranks, 0.0).sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)))


def _explicitness_factor(x_train, y_train, x_test, y_test) -> tuple[float, float]:
    # LogisticRegression() with current sklearn defaults (lbfgs, multinomial, C=1); the 2019 reference
    # ran sklearn 0.20's default (liblinear one-vs-rest) - the ROC-AUCs differ in the 3rd decimal.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression().fit(x_train, y_train)

    def auc(x, y):  # macro ROC-AUC over one-hot classes (the reference's MultiLabelBinarizer + roc_auc_score)
        Y = y[:, None] == clf.classes_[None]
        ok = Y.any(0) & ~Y.all(0)  # a class absent from y (or the only one) has no AUC (the reference errors)
        return macro_roc_auc(Y[:, ok], clf.predict_proba(x)[:, ok]) if ok.any() else float("nan")

    return auc(x_train, y_train), auc(x_test, y_test)


def modularity_explicitness(codes_train: np.ndarray, factors_train: np.ndarray, codes_test: np.ndarray,
                            factors_test: np.ndarray, *, num_bins: int = NUM_BINS,
                            n_jobs: int | None = None) -> dict[str, float]:
    """modularity (from the discretised MI matrix) and explicitness (ROC-AUC of a logistic regression
    per factor on all standardised codes; train and test)."""
    codes_train, factors_train = _check(codes_train, factors_train, "modularity_explicitness (train)")
    codes_test, factors_test = _check(codes_test, factors_test, "modularity_explicitness (test)")
    mi = discrete_mutual_info(histogram_discretize(codes_train, num_bins), factors_train)
    mean, std = codes_train.mean(0), codes_train.std(0)
    std = np.where(std > 0, std, 1.0)  # deviation: a constant code would give 0/0 in the reference
    x_train, x_test = (codes_train - mean) / std, (codes_test - mean) / std
    K = factors_train.shape[1]
    with threadpool_limits(1):  # K small fits on threads, no nested BLAS/OpenMP threads
        aucs = Parallel(n_jobs=_n_jobs(n_jobs, K), prefer="threads")(
            delayed(_explicitness_factor)(x_train, factors_train[:, k], x_test, factors_test[:, k]) for k in range(K))
    aucs = np.asarray(aucs)
    return {"modularity": modularity_from_mi(mi), "explicitness_score_train": float(np.nanmean(aucs[:, 0])),
            "explicitness_score_test": float(np.nanmean(aucs[:, 1]))}


# -- IRS (Suter et al. 2019; disentanglement_lib irs.py) ---------------------------------------------
def irs(codes: np.ndarray, factors: np.ndarray, *, diff_quantile: float = 0.99, num_bins: int = NUM_BINS) -> float:
    """Interventional robustness score, irs.py's `scalable_disentanglement_score(...)["avg_score"]`.

    As the reference: factors are histogram-discretised (20 bins, so factors with more than 20 values
    get merged bins), constant code dims are dropped (score 0 if none is left); per factor value
    group, the `diff_quantile` quantile of |z - E[z | v]| is averaged over the values, normalised by
    each dim's max deviation from its mean; a dim's score is 1 - min over factors; the mean is
    weighted by max deviations. One stable sort per factor replaces the reference's boolean masks.
    """
    codes, factors = _check(codes, factors, "irs")
    z = codes[:, codes.var(axis=0) > 0]  # _drop_constant_dims
    if z.shape[1] == 0:
        return 0.0
    g = histogram_discretize(factors, num_bins)
    max_dev = np.max(np.abs(z - z.mean(axis=0)), axis=0)  # (D',)
    cum = np.zeros((z.shape[1], g.shape[1]))  # (D', K) mean quantile deviation within factor groups
    for i in range(g.shape[1]):
        values, inv = np.unique(g[:, i], return_inverse=True)
        order = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[order], np.arange(len(values) + 1))
        zs = z[order]
        for a, b in zip(bounds[:-1], bounds[1:]):
            grp = zs[a:b]
            cum[:, i] += np.quantile(np.abs(grp - grp.mean(axis=0)), diff_quantile, axis=0)
        cum[:, i] /= len(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = (1.0 - cum / max_dev[:, None]).max(axis=1)  # (D',)
    if max_dev.sum() > 0:
        return float(np.average(scores, weights=max_dev))
    return float(np.mean(scores))
