"""Scores from factor-controlled batches: BetaVAE (003; Higgins et al. 2017), FactorVAE (Kim & Mnih 2018), fairness (000).

Each follows disentanglement_lib (beta_vae.py, factor_vae.py, fairness.py) with its default sizes,
but samples many points per call: the factors of all points are drawn at once and their images
rendered and encoded a chunk at a time, instead of one `representation_function` call per
point. The sampled distribution is the reference's; the random stream is not (numpy Generator).
Fixing a factor goes through dataset.fix_factor: on a full grid it overwrites the one entry, as the reference
does; a dataset of rows that is no grid (data/user.py) draws rows whose discretised factor has the fixed value.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ..data.base import GroundTruthDataset
from .disentanglement import _n_jobs
from .gbt import fit_gbt

Encode = Callable[[torch.Tensor], torch.Tensor]  # (B, C, H, W) images in [0, 1] -> (B, D) codes

BAR_DELAY = 3.0  # seconds before a progress bar appears: short runs stay silent


def _codes(encode: Encode, images: torch.Tensor) -> np.ndarray:
    """encode(images) -> (B, D) float64 numpy (float32 / float64 outputs kept as they are, others via float32)."""
    z = encode(images).detach()
    z = z.reshape(len(z), -1)
    if z.dtype not in (torch.float32, torch.float64):
        z = z.float()  # bf16 / fp16: numpy has no bf16
    return z.cpu().numpy().astype(np.float64, copy=False)


@torch.no_grad()
def represent(encode: Encode, dataset: GroundTruthDataset, factors: np.ndarray, *, chunk: int = 1024,
              bar: tqdm | None = None) -> np.ndarray:
    """(N, K) factor indices -> (N, D) float64 codes; images rendered and encoded `chunk` at a time."""
    out = []
    for s in range(0, len(factors), chunk):
        out.append(_codes(encode, dataset.images(factors[s:s + chunk])))
        if bar is not None:
            bar.update(min(chunk, len(factors) - s))
    return np.concatenate(out) if out else np.zeros((0, 0))


def _points_per_chunk(batch_size: int, chunk: int) -> int:
    return max(1, chunk // batch_size)


# -- BetaVAE score (003: "disentanglement metric"; beta_vae.py compute_beta_vae_sklearn) ----------------
@torch.no_grad()
def _betavae_points(encode: Encode, dataset: GroundTruthDataset, rng: np.random.Generator, batch_size: int,
                    num_points: int, chunk: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """(num_points, D) features z_diff^b = mean_l |z(x1_l) - z(x2_l)| over pairs sharing factor y,
    and (num_points,) labels y (beta_vae.py `_generate_training_sample`, many points per call).

    Every point's factors are drawn up front, (num_points, batch_size, K) twice (~5 MB per 1,000
    points at K = 6), and encoded `chunk` images at a time: one sampling call instead of one per chunk.
    """
    K = dataset.num_factors
    labels = rng.integers(K, size=num_points)
    f1 = dataset.sample_factors(num_points * batch_size, rng).reshape(num_points, batch_size, K)
    f2 = dataset.sample_factors(num_points * batch_size, rng)
    which = np.repeat(labels, batch_size)  # pair l of point i shares factor y_i
    f2 = dataset.fix_factor(f2, which, f1.reshape(-1, K)[np.arange(num_points * batch_size), which],
                            rng).reshape(num_points, batch_size, K)
    feats = []
    step = _points_per_chunk(batch_size, chunk)
    with tqdm(total=num_points, desc=desc, unit="pt", delay=BAR_DELAY) as bar:
        for s in range(0, num_points, step):
            p = min(step, num_points - s)
            z = _codes(encode, dataset.images(np.concatenate([f1[s:s + p], f2[s:s + p]]).reshape(-1, K)))
            z = z.reshape(2, p, batch_size, -1)
            d = np.subtract(z[0], z[1])
            feats.append(np.abs(d, out=d).mean(axis=1))  # (p, D)
            bar.update(p)
    return np.concatenate(feats), labels


def betavae_score(encode: Encode, dataset: GroundTruthDataset, rng: np.random.Generator, *, batch_size: int = 64,
                  num_train: int = 10000, num_eval: int = 5000, chunk: int = 1024) -> dict[str, float]:
    """Accuracy of a linear classifier predicting which factor was held fixed from z_diff^b (003).

    As beta_vae.py: LogisticRegression with sklearn defaults (today lbfgs/multinomial; 2019's was
    liblinear one-vs-rest) on unscaled features; train accuracy, then accuracy on a fresh eval set.
    """
    x_tr, y_tr = _betavae_points(encode, dataset, rng, batch_size, num_train, chunk, "betavae train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(random_state=int(rng.integers(2**31))).fit(x_tr, y_tr)
    x_ev, y_ev = _betavae_points(encode, dataset, rng, batch_size, num_eval, chunk, "betavae eval")
    return {"train_accuracy": float(np.mean(model.predict(x_tr) == y_tr)),
            "eval_accuracy": float(np.mean(model.predict(x_ev) == y_ev))}


# -- FactorVAE score (Kim & Mnih 2018; factor_vae.py compute_factor_vae) ------------------------------
@torch.no_grad()
def _factorvae_votes(encode: Encode, dataset: GroundTruthDataset, rng: np.random.Generator, batch_size: int,
                     num_points: int, global_var: np.ndarray, active: np.ndarray, chunk: int,
                     desc: str) -> np.ndarray:
    """(K, D) votes: for each point, fix one random factor over a batch and vote for the active dim
    with the least variance relative to its global variance (factor_vae.py `_generate_training_sample`).
    The factors of all points are drawn up front, as in `_betavae_points`."""
    K = dataset.num_factors
    labels = rng.integers(K, size=num_points)
    f = dataset.sample_factors(num_points * batch_size, rng).reshape(num_points, batch_size, K)
    first = f[np.arange(num_points), 0, labels]  # factor y_i takes the first sample's value in batch i
    f = dataset.fix_factor(f.reshape(-1, K), np.repeat(labels, batch_size), np.repeat(first, batch_size),
                           rng).reshape(num_points, batch_size, K)
    votes = np.zeros((K, len(global_var)), dtype=np.int64)
    idx = np.flatnonzero(active)
    every = len(idx) == len(active)  # all dims active (the common case): no copy of the codes' active columns
    step = _points_per_chunk(batch_size, chunk)
    with tqdm(total=num_points, desc=desc, unit="pt", delay=BAR_DELAY) as bar:
        for s in range(0, num_points, step):
            p = min(step, num_points - s)
            z = _codes(encode, dataset.images(f[s:s + p].reshape(-1, K))).reshape(p, batch_size, -1)
            local = np.var(z if every else z[:, :, idx], axis=1, ddof=1)  # (p, active)
            np.add.at(votes, (labels[s:s + p], idx[np.argmin(local / global_var[idx], axis=1)]), 1)
            bar.update(p)
    return votes


def factorvae_score(encode: Encode, dataset: GroundTruthDataset, rng: np.random.Generator, *, batch_size: int = 64,
                    num_train: int = 10000, num_eval: int = 5000, num_variance_estimate: int = 10000,
                    prune_threshold: float = 0.05, chunk: int = 1024) -> dict[str, float]:
    """Accuracy of the majority-vote classifier (code dim -> factor) on train and eval votes.

    Global variances from `num_variance_estimate` random images (ddof=1); dims whose std is below
    `prune_threshold` (the study configs' prune_dims.threshold = 0.05) are collapsed and ignored.
    num_active_dims counts them (factor_vae.py reports len() of its boolean mask, i.e. always D).
    """
    with tqdm(total=num_variance_estimate, desc="factorvae variances", unit="img", delay=BAR_DELAY) as bar:
        z = represent(encode, dataset, dataset.sample_factors(num_variance_estimate, rng), chunk=chunk, bar=bar)
    global_var = np.var(z, axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0}
    train = _factorvae_votes(encode, dataset, rng, batch_size, num_train, global_var, active, chunk, "factorvae train")
    classifier = np.argmax(train, axis=0)  # (D,) majority factor per code dim
    cols = np.arange(train.shape[1])
    evals = _factorvae_votes(encode, dataset, rng, batch_size, num_eval, global_var, active, chunk, "factorvae eval")
    return {"train_accuracy": float(train[classifier, cols].sum() / train.sum()),
            "eval_accuracy": float(evals[classifier, cols].sum() / evals.sum()),
            "num_active_dims": float(active.sum())}


# -- Fairness (000 Table 1, after Locatello et al. 2019 sec 4; fairness.py compute_fairness) --------------
def inter_group_fairness(counts: np.ndarray) -> tuple[float, float]:
    """(target classes, sensitive classes) prediction counts -> (mean, max) total-variation distance
    between each sensitive class's prediction distribution and the overall one (the mean weighted
    by the sensitive classes' counts), as fairness.py."""
    counts = np.asarray(counts, dtype=np.float64)
    overall = counts.sum(1) / counts.sum()
    per_class = counts.sum(0)
    tv = np.abs(counts / per_class[None] - overall[:, None]).sum(0) / 2.0  # (sensitive classes,)
    return float(np.sum(tv * per_class) / per_class.sum()), float(tv.max())


def fairness_aggregates(metric: np.ndarray, prefix: str) -> dict[str, float]:
    """fairness.py's `compute_scores_dict` aggregates of a (K, K) pred x sens matrix (diagonal unused):
    mean/max over sensitive factors per predicted factor, then mean/max over those, and the same
    column-first. The per-pair entries stay in the returned matrices."""
    K = len(metric)
    off = ~np.eye(K, dtype=bool)
    rows = [metric[i, off[i]] for i in range(K)]
    cols = [metric[off[:, j], j] for j in range(K)]
    rm, rx = np.array([r.mean() for r in rows]), np.array([r.max() for r in rows])
    cm, cx = np.array([c.mean() for c in cols]), np.array([c.max() for c in cols])
    return {f"{prefix}:mean_sens:mean_pred": float(cm.mean()), f"{prefix}:mean_sens:max_pred": float(cx.mean()),
            f"{prefix}:max_sens:mean_pred": float(cm.max()), f"{prefix}:max_sens:max_pred": float(cx.max()),
            f"{prefix}:mean_pred:mean_sens": float(rm.mean()), f"{prefix}:mean_pred:max_sens": float(rx.mean()),
            f"{prefix}:max_pred:mean_sens": float(rm.max()), f"{prefix}:max_pred:max_sens": float(rx.max())}


def fairness(encode: Encode, dataset: GroundTruthDataset, rng: np.random.Generator, *, num_train: int = 10000,
             num_test_points_per_class: int = 100, gbt: str = "hist", chunk: int = 1024,
             n_jobs: int | None = None) -> dict:
    """Unfairness of a factor-i predictor on the codes under interventions do(v_j = c) on another factor.

    As fairness.py with the fairness study's settings (num_train 10000, 100 test points per class,
    gradient-boosted-tree predictor; gbt="hist" is sklearn's histogram twin of it, see gbt.py).
    For each pair (i, j != i): counts[:, c] = predictions of factor i on the codes of the same
    random factors with v_j set to c; (mean, max) TV distance via `inter_group_fairness`.
    Deviation: the intervened codes for sensitive factor j are encoded once and shared by all
    predictors i (the reference re-draws them per pair): K-1 times fewer images, same distribution
    per pair. "unfairness" is the paper's score (mean_fairness:mean_pred:mean_sens) and
    "neg_log_unfairness" its -log, 000 Table 1's "fairness" (floored at 1e-9 to stay finite).
    """
    sizes = list(dataset.factor_sizes)
    K = len(sizes)
    if K < 2:
        raise ValueError(f"fairness: needs at least 2 factors (a target and a sensitive one), got {K}")
    f_train = dataset.sample_factors(num_train, rng)
    with tqdm(total=num_train, desc="fairness codes", unit="img", delay=BAR_DELAY) as bar:
        z_train = represent(encode, dataset, f_train, chunk=chunk, bar=bar)
    with threadpool_limits(1):  # K independent single-threaded fits on threads, as disentanglement.dci
        models = Parallel(n_jobs=_n_jobs(n_jobs, K), prefer="threads")(
            delayed(fit_gbt)(gbt, z_train, f_train[:, i]) for i in range(K))
    mean_f = np.zeros((K, K))
    max_f = np.zeros((K, K))
    with tqdm(total=sum(sizes) * num_test_points_per_class, desc="fairness interventions", unit="img",
              delay=BAR_DELAY) as bar:
        for j in range(K):
            base = dataset.sample_factors(num_test_points_per_class, rng)
            f = np.repeat(base[None], sizes[j], axis=0).reshape(-1, K)  # (values of v_j x points, K)
            f = dataset.fix_factor(f, np.full(len(f), j), np.repeat(np.arange(sizes[j]), num_test_points_per_class),
                                   rng)  # do(v_j = c) for every value c
            z = represent(encode, dataset, f, chunk=chunk, bar=bar)
            for i in range(K):
                if i == j:
                    continue
                pred = models[i].predict(z).reshape(sizes[j], num_test_points_per_class)
                counts = np.stack([np.bincount(p, minlength=sizes[i]) for p in pred], axis=1)  # (sizes[i], sizes[j])
                mean_f[i, j], max_f[i, j] = inter_group_fairness(counts)
    out: dict = {"mean_fairness": mean_f, "max_fairness": max_f}
    out.update(fairness_aggregates(mean_f, "mean_fairness"))
    out.update(fairness_aggregates(max_f, "max_fairness"))
    out["unfairness"] = out["mean_fairness:mean_pred:mean_sens"]
    out["neg_log_unfairness"] = float(-np.log(max(out["unfairness"], 1e-9)))
    return out
