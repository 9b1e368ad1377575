"""Benchmark the metric suite (MIG, DCI, SAP, ModExp, IRS, BetaVAE, FactorVAE) against a plain reference, same run.

The reference below is written the straightforward way disentanglement_lib computes each metric
(google-research/disentanglement_lib, evaluation/metrics/{utils,mig,dci,sap_score,
modularity_explicitness,irs,beta_vae,factor_vae}.py): (D, N) arrays, a loop of sklearn
mutual_info_score calls per (code, factor) pair, one GradientBoostingClassifier() per factor fitted
one after another, one LinearSVC per pair, boolean masks per factor value, one sampled batch (and
one representation call) per BetaVAE / FactorVAE training point. It runs single-threaded
(threadpool_limits(1)), its best case here: on these shared 2-core machines nested BLAS/OpenMP
threads only slow it down. Ours runs as the package runs it (threads over factors).

Cases (codes (N, D), factors (N, K)): aligned (one code dim per factor, value + jitter, the other
dims noise), permuted+rescaled (dims shuffled, scaled by +-[0.5, 3], shifted), rotated (a random
orthogonal D x D mix), partly mixed (the factor block times I + 0.4 * Gaussian), pure noise. BetaVAE
and FactorVAE sample their own factor batches: they get a ground-truth dataset whose "images" are
the case's codes drawn afresh for the given factors (`CaseCodes`) and the identity as encoder.

    python tools/bench_metrics.py                     # 10k train / 5k test, D=10, K=5 factors of 2,3,3,4,5 values
    python tools/bench_metrics.py --sizes 10,10,10,10,10 --reference-cache bench_ref_10x5.json --repeat 3

Prints one table per metric (case: reference s, ours s, of which in the stand-in dataset, ratio, max |diff|
over the metric's values, tolerance, within?), the values behind them, and, last, one JSON line: total_s and
reference_s are the time of ONE evaluation of the whole suite (per metric the mean over the cases; ours the
median of --repeat timings), ratio = reference_s / total_s, per_metric {metric: {ours_s, reference_s,
standin_s, ratio, max_abs_diff, within}}, total_s_without_sap (SAP is timed separately, so the total with
another SAP can be read), standin_s (the part of total_s spent drawing the stand-in dataset's codes, what
rendering and encoding images would cost; only BetaVAE and FactorVAE draw; the median over --repeat), the
sizes, the device and the load average. The default factor sizes keep the reference near 5-10 minutes on a busy 2-core machine (its sequential GradientBoostingClassifier fits: one tree
per class per stage, 100 stages); --sizes 10,10,10,10,10 takes the reference ~30-60 min, so
--reference-cache FILE records the reference's timings and values once (same sizes, seed and points)
and later runs reuse them, which the output says.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
import torch  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import mutual_info_score, roc_auc_score  # noqa: E402
from sklearn.preprocessing import MultiLabelBinarizer  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from causalrep.data.base import GroundTruthDataset  # noqa: E402
from causalrep.metrics.disentanglement import (GBT_DEFAULT, GBT_KINDS, dci, irs, mig,  # noqa: E402
                                               modularity_explicitness, sap)
from causalrep.metrics.interventional import betavae_score, factorvae_score  # noqa: E402
from causalrep.train.trainer import describe_device  # noqa: E402

# The cross-check tolerances (tests/metrics use the same): every value within 0.05 of the reference, DCI d/c 0.10.
TOL = {"dci_disentanglement": 0.10, "dci_completeness": 0.10}
TOL_DEFAULT = 0.05
SAMPLED = ("betavae_train_accuracy", "betavae_eval_accuracy", "factorvae_train_accuracy", "factorvae_eval_accuracy")


def tolerance(key: str, n_train: int, n_test: int) -> float:
    """The allowed |ours - reference| of a value.

    BetaVAE's and FactorVAE's accuracies are Monte-Carlo estimates that ours and the reference draw
    independently (different random streams), so their difference has a sampling error of its own: at
    most sqrt(2 * 0.25 / n) for accuracies over n points. They get the larger of 0.05 and 4 such standard
    errors: 0.05 at the default 10,000 / 5,000 points (4 s.e. = 0.028 / 0.04), wider only for small smoke runs.
    """
    tol = TOL.get(key, TOL_DEFAULT)
    if key in SAMPLED:
        n = n_test if "eval" in key else n_train
        tol = max(tol, 4.0 * (0.5 / n) ** 0.5)
    return tol
METRICS = ("mig", "dci", "sap", "modexp", "irs", "betavae", "factorvae")


# -- the reference, written plainly ([num_codes, num_points] arrays as disentanglement_lib) ---------------
def ref_discretize(target, num_bins=20):
    out = np.zeros_like(target)
    for i in range(target.shape[0]):
        out[i, :] = np.digitize(target[i, :], np.histogram(target[i, :], num_bins)[1][:-1])
    return out


def ref_mutual_info(mus, ys):
    m = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            m[i, j] = mutual_info_score(ys[j, :], mus[i, :])
    return m


def ref_entropy(ys):
    return np.array([mutual_info_score(ys[j, :], ys[j, :]) for j in range(ys.shape[0])])


def ref_mig(mus, ys):
    m = ref_mutual_info(ref_discretize(mus), ys)
    sorted_m = np.sort(m, axis=0)[::-1]
    return {"mig": float(np.mean((sorted_m[0, :] - sorted_m[1, :]) / ref_entropy(ys)))}


def ref_dci(mus_train, ys_train, mus_test, ys_test):
    R = np.zeros([mus_train.shape[0], ys_train.shape[0]])
    acc_train, acc_test = [], []
    for j in range(ys_train.shape[0]):
        model = GradientBoostingClassifier()
        model.fit(mus_train.T, ys_train[j, :])
        R[:, j] = np.abs(model.feature_importances_)
        acc_train.append(np.mean(model.predict(mus_train.T) == ys_train[j, :]))
        acc_test.append(np.mean(model.predict(mus_test.T) == ys_test[j, :]))
    per_code = 1.0 - scipy.stats.entropy(R.T + 1e-11, base=R.shape[1])
    per_factor = 1.0 - scipy.stats.entropy(R + 1e-11, base=R.shape[0])
    return {"dci_disentanglement": float(np.sum(per_code * R.sum(axis=1) / R.sum())),
            "dci_completeness": float(np.sum(per_factor * R.sum(axis=0) / R.sum())),
            "dci_informativeness_train": float(np.mean(acc_train)),
            "dci_informativeness_test": float(np.mean(acc_test))}


def ref_sap(mus, ys, mus_test, ys_test):
    score = np.zeros([mus.shape[0], ys.shape[0]])
    for i in range(mus.shape[0]):
        for j in range(ys.shape[0]):
            clf = LinearSVC(C=0.01, class_weight="balanced")
            clf.fit(mus[i, :, None], ys[j, :])
            score[i, j] = np.mean(clf.predict(mus_test[i, :, None]) == ys_test[j, :])
    s = np.sort(score, axis=0)
    return {"sap": float(np.mean(s[-1, :] - s[-2, :]))}


def ref_modexp(mus_train, ys_train, mus_test, ys_test):
    mi = ref_mutual_info(ref_discretize(mus_train), ys_train)
    sq = np.square(mi)
    mx = np.max(sq, axis=1)
    mod = 1.0 - (np.sum(sq, axis=1) - mx) / (mx * (sq.shape[1] - 1.0))
    mod[mx == 0.0] = 0.0
    mean, std = mus_train.mean(axis=1), mus_train.std(axis=1)
    xtr = ((mus_train - mean[:, None]) / std[:, None]).T
    xte = ((mus_test - mean[:, None]) / std[:, None]).T
    auc_train, auc_test = [], []
    for j in range(ys_train.shape[0]):
        clf = LogisticRegression().fit(xtr, ys_train[j, :])
        mlb = MultiLabelBinarizer()
        auc_train.append(roc_auc_score(mlb.fit_transform(ys_train[j, :, None]), clf.predict_proba(xtr)))
        auc_test.append(roc_auc_score(mlb.fit_transform(ys_test[j, :, None]), clf.predict_proba(xte)))
    return {"modexp_modularity": float(np.mean(mod)), "modexp_explicitness_train": float(np.mean(auc_train)),
            "modexp_explicitness_test": float(np.mean(auc_test))}


def ref_irs(mus, ys, diff_quantile=0.99):
    gen = ref_discretize(ys).T
    lat = mus[mus.var(axis=1) > 0.0, :].T
    max_dev = np.max(np.abs(lat - lat.mean(axis=0)), axis=0)
    cum = np.zeros([lat.shape[1], gen.shape[1]])
    for i in range(gen.shape[1]):
        values = np.unique(gen[:, i])
        for v in values:
            match = gen[:, i] == v
            cum[:, i] += np.quantile(np.abs(lat[match, :] - lat[match, :].mean(axis=0)), diff_quantile, axis=0)
        cum[:, i] /= len(values)
    scores = (1.0 - cum / max_dev[:, None]).max(axis=1)
    return {"irs": float(np.average(scores, weights=max_dev))}


def ref_sample_factors(sizes, n, random_state):  # ground_truth_data.sample_factors: randint per factor
    return np.stack([random_state.randint(s, size=n) for s in sizes], axis=1)


def ref_representation(dataset, factors):  # sample_observations_from_factors, then representation_function
    return dataset.images(factors).numpy()


def ref_betavae(dataset, random_state, batch_size=64, num_train=10000, num_eval=5000):
    """beta_vae.py compute_beta_vae_sklearn: one sample (2 x batch_size observations) per training point."""
    def sample():
        index = random_state.randint(dataset.num_factors)
        factors1 = ref_sample_factors(dataset.factor_sizes, batch_size, random_state)
        factors2 = ref_sample_factors(dataset.factor_sizes, batch_size, random_state)
        factors2[:, index] = factors1[:, index]
        r1, r2 = ref_representation(dataset, factors1), ref_representation(dataset, factors2)
        return index, np.mean(np.abs(r1 - r2), axis=0)

    def batch(num_points):
        points, labels = None, np.zeros(num_points, dtype=np.int64)
        for i in range(num_points):
            labels[i], feature_vector = sample()
            if points is None:
                points = np.zeros((num_points, feature_vector.shape[0]))
            points[i, :] = feature_vector
        return points, labels

    train_points, train_labels = batch(num_train)
    model = LogisticRegression(random_state=random_state).fit(train_points, train_labels)
    eval_points, eval_labels = batch(num_eval)
    return {"betavae_train_accuracy": float(model.score(train_points, train_labels)),
            "betavae_eval_accuracy": float(model.score(eval_points, eval_labels))}


def ref_factorvae(dataset, random_state, batch_size=64, num_train=10000, num_eval=5000, num_variance_estimate=10000,
                  threshold=0.05):
    """factor_vae.py compute_factor_vae (prune_dims.threshold = 0.05 as the study configs): one batch per vote."""
    observations = ref_sample_factors(dataset.factor_sizes, num_variance_estimate, random_state)
    reps = np.concatenate([ref_representation(dataset, observations[s:s + 64])
                           for s in range(0, num_variance_estimate, 64)])  # utils.obtain_representation, batch 64
    global_variances = np.var(reps, axis=0, ddof=1)
    active_dims = np.sqrt(global_variances) >= threshold
    if not active_dims.any():
        return {"factorvae_train_accuracy": 0.0, "factorvae_eval_accuracy": 0.0, "factorvae_num_active_dims": 0.0}

    def batch(num_points):
        votes = np.zeros((dataset.num_factors, global_variances.shape[0]), dtype=np.int64)
        for _ in range(num_points):
            factor_index = random_state.randint(dataset.num_factors)
            factors = ref_sample_factors(dataset.factor_sizes, batch_size, random_state)
            factors[:, factor_index] = factors[0, factor_index]
            local_variances = np.var(ref_representation(dataset, factors), axis=0, ddof=1)
            # the reference's argmin indexes the active dims; every bench case keeps all dims active
            argmin = np.argmin(local_variances[active_dims] / global_variances[active_dims])
            votes[factor_index, argmin] += 1
        return votes

    training_votes = batch(num_train)
    classifier = np.argmax(training_votes, axis=0)
    other_index = np.arange(training_votes.shape[1])
    eval_votes = batch(num_eval)
    return {"factorvae_train_accuracy": float(np.sum(training_votes[classifier, other_index]) / np.sum(training_votes)),
            "factorvae_eval_accuracy": float(np.sum(eval_votes[classifier, other_index]) / np.sum(eval_votes)),
            # factor_vae.py reports len(active_dims) of its boolean mask (always D); ours counts the active ones
            "factorvae_num_active_dims": float(active_dims.sum())}


# -- cases ---------------------------------------------------------------------------------------------
def draw_codes(rng: np.random.Generator, f: np.ndarray, sizes, dim: int) -> np.ndarray:
    """(n, K) factors -> (n, dim) aligned codes: factor value spread over its cell of [0, 1) + jitter, then noise dims."""
    u = (f + rng.random(f.shape)) / np.asarray(sizes)
    return np.concatenate([u + 0.02 * rng.standard_normal(u.shape), 0.3 * rng.standard_normal((len(f), dim - len(sizes)))], 1)


def make_transforms(rng: np.random.Generator, dim: int, K: int) -> dict:
    """case name -> codes (n, dim) -> codes; "noise" is None (codes drawn independently of the factors)."""
    perm = rng.permutation(dim)
    scale = rng.uniform(0.5, 3.0, dim) * rng.choice([-1.0, 1.0], dim)
    shift = rng.normal(0.0, 2.0, dim)
    rot, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    mix = np.eye(dim)
    mix[:K, :K] += 0.4 * rng.standard_normal((K, K))
    return {"aligned": lambda z: z, "permuted_rescaled": lambda z: z[:, perm] * scale + shift,
            "rotated": lambda z: z @ rot, "partly_mixed": lambda z: z @ mix, "noise": None}


def make_cases(n_train: int, n_test: int, dim: int, sizes: list[int], seed: int) -> tuple[dict, dict]:
    """(case -> (codes_train, factors_train, codes_test, factors_test), case -> transform)."""
    rng = np.random.default_rng(seed)

    def draw(n):
        f = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
        return draw_codes(rng, f, sizes, dim), f

    ztr, ftr = draw(n_train)
    zte, fte = draw(n_test)
    transforms = make_transforms(rng, dim, len(sizes))
    cases = {name: (t(ztr), ftr, t(zte), fte) for name, t in transforms.items() if t is not None}
    cases["noise"] = (rng.standard_normal(ztr.shape), ftr, rng.standard_normal(zte.shape), fte)
    return cases, transforms


class CaseCodes(GroundTruthDataset):
    """Ground-truth data whose "images" (N, dim) float64 are a case's codes drawn afresh for the given factors."""

    def __init__(self, sizes, dim: int, transform, seed: int):
        self.factor_sizes = tuple(sizes)
        self.factor_names = tuple(f"v{k}" for k in range(len(sizes)))
        self.dim, self.transform = dim, transform
        self.rng = np.random.default_rng(seed)
        self.seconds = 0.0  # time spent in images(): the stand-in's "rendering + encoding", not the metric's own

    def images(self, factors: np.ndarray) -> torch.Tensor:
        t0 = time.perf_counter()
        factors = np.asarray(factors)
        if self.transform is None:
            out = torch.from_numpy(self.rng.standard_normal((len(factors), self.dim)))
        else:
            out = torch.from_numpy(self.transform(draw_codes(self.rng, factors, self.factor_sizes, self.dim)))
        self.seconds += time.perf_counter() - t0
        return out


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


# -- ours and the reference, one call per (metric, case) ---------------------------------------------------
def run_ours(metric: str, data: tuple, dataset: CaseCodes, seed: int, gbt: str) -> dict[str, float]:
    a, b, c, d = data
    if metric == "mig":
        return {"mig": mig(a, b)}
    if metric == "dci":
        return {f"dci_{k}": v for k, v in dci(a, b, c, d, gbt=gbt).items()}
    if metric == "sap":
        return {"sap": sap(a, b, c, d)}
    if metric == "modexp":
        s = modularity_explicitness(a, b, c, d)
        return {"modexp_modularity": s["modularity"], "modexp_explicitness_train": s["explicitness_score_train"],
                "modexp_explicitness_test": s["explicitness_score_test"]}
    if metric == "irs":
        return {"irs": irs(a, b)}
    n_train, n_test = len(a), len(c)
    if metric == "betavae":
        s = betavae_score(identity, dataset, np.random.default_rng(seed), num_train=n_train, num_eval=n_test)
        return {f"betavae_{k}": v for k, v in s.items()}
    if metric == "factorvae":
        s = factorvae_score(identity, dataset, np.random.default_rng(seed), num_train=n_train, num_eval=n_test,
                            num_variance_estimate=n_train)
        return {f"factorvae_{k}": float(v) for k, v in s.items()}
    raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")


def run_reference(metric: str, data: tuple, dataset: CaseCodes, seed: int) -> dict[str, float]:
    a, b, c, d = data
    with threadpool_limits(1):
        if metric == "mig":
            return ref_mig(a.T, b.T)
        if metric == "dci":
            return ref_dci(a.T, b.T, c.T, d.T)
        if metric == "sap":
            return ref_sap(a.T, b.T, c.T, d.T)
        if metric == "modexp":
            return ref_modexp(a.T, b.T, c.T, d.T)
        if metric == "irs":
            return ref_irs(a.T, b.T)
        if metric == "betavae":
            return ref_betavae(dataset, np.random.RandomState(seed), num_train=len(a), num_eval=len(c))
        if metric == "factorvae":
            return ref_factorvae(dataset, np.random.RandomState(seed), num_train=len(a), num_eval=len(c),
                                 num_variance_estimate=len(a))
    raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")


# -- the reference cache ----------------------------------------------------------------------------------
def load_cache(path: Path | None, config: dict) -> dict:
    """{metric: {case: {"values": {...}, "seconds": s}}} recorded for exactly this config, or {} (no file)."""
    if path is None or not path.is_file():
        return {}
    stored = json.loads(path.read_text())
    if stored.get("config") != config:
        raise SystemExit(f"--reference-cache {path}: recorded for {stored.get('config')}, this run is {config}; "
                         f"use another file (or delete this one to re-record)")
    return stored["metrics"]


def save_cache(path: Path, config: dict, metrics: dict) -> None:
    path.write_text(json.dumps({"config": config, "metrics": metrics}, indent=1) + "\n")


# -- main -------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=10)
    ap.add_argument("--sizes", default="2,3,3,4,5", help="factor sizes, comma-separated (K = their count)")
    ap.add_argument("--gbt", default=GBT_DEFAULT, choices=GBT_KINDS, help="our DCI estimator")
    ap.add_argument("--metrics", default=",".join(METRICS))
    ap.add_argument("--cases", default="aligned,permuted_rescaled,rotated,partly_mixed,noise")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="time ours N times per (metric, case), report the median")
    ap.add_argument("--reference-cache", type=Path, default=None,
                    help="JSON file of the reference's values and seconds for this config: read where present, "
                         "computed and added where missing")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    metrics = args.metrics.split(",")
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        ap.error(f"--metrics: unknown {', '.join(unknown)}; valid: {', '.join(METRICS)}")
    if args.dim < len(sizes):
        ap.error(f"--dim {args.dim} is smaller than the number of factors {len(sizes)}")
    cases, transforms = make_cases(args.n_train, args.n_test, args.dim, sizes, args.seed)
    names = args.cases.split(",")
    if set(names) - set(cases):
        ap.error(f"--cases: unknown {', '.join(sorted(set(names) - set(cases)))}; valid: {', '.join(cases)}")
    config = {"n_train": args.n_train, "n_test": args.n_test, "dim": args.dim, "sizes": sizes, "seed": args.seed}
    cache = load_cache(args.reference_cache, config)
    from_cache: set[str] = set()

    print(f"# n_train={args.n_train} n_test={args.n_test} D={args.dim} sizes={sizes} ours.dci={args.gbt} "
          f"repeat={args.repeat} load={os.getloadavg()}", flush=True)
    res: dict = {m: {} for m in metrics}  # metric -> case -> {ours, ref, t_ours, t_ref}
    for case in names:
        data = cases[case]
        for metric in metrics:
            ds_seed = args.seed + 1  # the same fresh code draws for ours and the reference's first calls
            times, standin, mine = [], [], None
            for _ in range(args.repeat):
                dataset = CaseCodes(sizes, args.dim, transforms[case], ds_seed)
                t0 = time.perf_counter()
                mine = run_ours(metric, data, dataset, args.seed, args.gbt)
                times.append(time.perf_counter() - t0)
                standin.append(dataset.seconds)
            hit = cache.get(metric, {}).get(case)
            if hit is not None:
                ref, t_ref = hit["values"], hit["seconds"]
                from_cache.add(metric)
            else:
                t0 = time.perf_counter()
                ref = run_reference(metric, data, CaseCodes(sizes, args.dim, transforms[case], ds_seed), args.seed)
                t_ref = time.perf_counter() - t0
                cache.setdefault(metric, {})[case] = {"values": ref, "seconds": t_ref}
                if args.reference_cache is not None:
                    save_cache(args.reference_cache, config, cache)
            res[metric][case] = {"ours": mine, "ref": ref, "t_ours": statistics.median(times), "t_ref": t_ref,
                                 "t_standin": statistics.median(standin)}
            print(f"  {case:18s} {metric:9s} ours {statistics.median(times):7.3f}s  ref {t_ref:8.2f}s"
                  f"{' (cached)' if hit is not None else ''}", file=sys.stderr, flush=True)

    per_metric = {}
    for metric in metrics:
        print(f"\n## {metric}" + ("  (reference from --reference-cache " f"{args.reference_cache})"
                                  if metric in from_cache else ""))
        print(f"{'case':18s} {'ref s':>9s} {'ours s':>8s} {'stand-in':>8s} {'ratio':>8s} {'max|diff|':>9s} "
              f"{'value':28s} {'tol':>5s} within")
        worst_all, within_all = 0.0, True
        for case, r in res[metric].items():
            diffs = {k: abs(r["ours"][k] - r["ref"][k]) for k in r["ref"]}
            worst = max(diffs, key=diffs.get)
            within = all(d <= tolerance(k, args.n_train, args.n_test) for k, d in diffs.items())
            worst_all, within_all = max(worst_all, diffs[worst]), within_all and within
            print(f"{case:18s} {r['t_ref']:9.3f} {r['t_ours']:8.3f} {r['t_standin']:8.3f} "
                  f"{r['t_ref'] / r['t_ours']:7.1f}x {diffs[worst]:9.4f} {worst:28s} "
                  f"{tolerance(worst, args.n_train, args.n_test):5.2f} {'yes' if within else 'NO'}")
        t_ours = float(np.mean([r["t_ours"] for r in res[metric].values()]))
        t_ref = float(np.mean([r["t_ref"] for r in res[metric].values()]))
        t_standin = float(np.mean([r["t_standin"] for r in res[metric].values()]))
        per_metric[metric] = {"ours_s": round(t_ours, 4), "reference_s": round(t_ref, 3),
                              "standin_s": round(t_standin, 4), "ratio": round(t_ref / t_ours, 1), "max_abs_diff": round(worst_all, 4),
                              "within": within_all}
        print(f"{'mean over cases':18s} {t_ref:9.3f} {t_ours:8.3f} {t_standin:8.3f} {t_ref / t_ours:7.1f}x "
              f"{worst_all:9.4f}")

    print("\n# values (ours / reference)")
    for metric in metrics:
        for case, r in res[metric].items():
            print(f"{metric:9s} {case:18s} " + "  ".join(f"{k}={r['ours'][k]:.4f}/{r['ref'][k]:.4f}" for k in r["ref"]))
    total = sum(p["ours_s"] for p in per_metric.values())
    ref_total = sum(p["reference_s"] for p in per_metric.values())
    within = all(p["within"] for p in per_metric.values())
    out = {"total_s": round(total, 4), "reference_s": round(ref_total, 2), "ratio": round(ref_total / total, 1),
           "per_metric": per_metric,
           # total and total without SAP from the same 4-decimal per-metric values, rounded alike (no rounding drift)
           "total_s_without_sap": round(total - per_metric.get("sap", {}).get("ours_s", 0.0), 4),
           # of total_s, the time ours spent in the stand-in dataset's draws (BetaVAE's and FactorVAE's "rendering +
           # encoding" of 1.9 M / 1.0 M code vectors at the default sizes; the reference pays the same draws)
           "standin_s": round(sum(p["standin_s"] for p in per_metric.values()), 4),
           # the earlier keys, which tools/gpu_check.py reads: within_tolerance, speedup_vs_reference, seconds_ours
           "within_tolerance": within, "speedup_vs_reference": round(ref_total / total, 1),
           "seconds_ours": round(total, 4), "seconds_reference": round(ref_total, 2),
           "reference_from_cache": sorted(from_cache), "reference_cache": str(args.reference_cache or ""),
           "n_train": args.n_train, "n_test": args.n_test, "dim": args.dim, "sizes": sizes, "cases": names,
           "repeat": args.repeat, "dci_estimator": args.gbt, "load_avg": [round(x, 2) for x in os.getloadavg()],
           "device": describe_device("cpu")}
    print(f"\ntotal (one evaluation, mean over {len(names)} cases): ours {total:.3f}s, reference {ref_total:.1f}s")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
