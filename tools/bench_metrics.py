"""Benchmark the array metrics (MIG, DCI, SAP, ModExp, IRS) against a plain reference implementation, same run.

The reference below is written the straightforward way disentanglement_lib computes each metric
(google-research/disentanglement_lib, evaluation/metrics/{utils,mig,dci,sap_score,
modularity_explicitness,irs}.py): (D, N) arrays, a loop of sklearn mutual_info_score calls per
(code, factor) pair, one GradientBoostingClassifier() per factor fitted one after another, one
LinearSVC per pair, boolean masks per factor value. It runs single-threaded (threadpool_limits(1)),
its best case here: on these shared 2-core machines nested BLAS/OpenMP threads only slow it down.

Cases (codes (N, D), factors (N, K)): aligned (one code dim per factor, value + jitter, the other
dims noise), permuted+rescaled (dims shuffled, scaled by +-[0.5, 3], shifted), rotated (a random
orthogonal D x D mix), partly mixed (the factor block times I + 0.4 * Gaussian), pure noise.

    python tools/bench_metrics.py                     # 10k train / 5k test, D=10, K=5
    python tools/bench_metrics.py --sizes 10,10,10,10,10 --gbt hist

Prints a table (case x value: ours, reference, |diff|, seconds each) and, last, one JSON line.
The default factor sizes keep the reference's sequential GradientBoostingClassifier fits (one tree
per class per stage, 100 stages, ~30-90 s per 10-class factor on a busy 2-core machine) near 5
minutes; --sizes 10,10,10,10,10 is the full-size run (~30 min here).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import mutual_info_score, roc_auc_score  # noqa: E402
from sklearn.preprocessing import MultiLabelBinarizer  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from causalrep.metrics.disentanglement import dci, irs, mig, modularity_explicitness, sap  # noqa: E402
from causalrep.train.trainer import describe_device  # noqa: E402

# Tolerances of the brief: every value within 0.05 of the reference, DCI d/c within 0.10.
TOL = {"dci_disentanglement": 0.10, "dci_completeness": 0.10}
TOL_DEFAULT = 0.05


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


# -- ours ----------------------------------------------------------------------------------------------
def ours(gbt: str):
    def modexp(a, b, c, d):
        s = modularity_explicitness(a, b, c, d)
        return {"modexp_modularity": s["modularity"], "modexp_explicitness_train": s["explicitness_score_train"],
                "modexp_explicitness_test": s["explicitness_score_test"]}
    return {
        "mig": lambda a, b, c, d: {"mig": mig(a, b)},
        "dci": lambda a, b, c, d: {f"dci_{k}": v for k, v in dci(a, b, c, d, gbt=gbt).items()},
        "sap": lambda a, b, c, d: {"sap": sap(a, b, c, d)},
        "modexp": modexp,
        "irs": lambda a, b, c, d: {"irs": irs(a, b)},
    }


REFERENCE = {
    "mig": lambda a, b, c, d: ref_mig(a.T, b.T),
    "dci": lambda a, b, c, d: ref_dci(a.T, b.T, c.T, d.T),
    "sap": lambda a, b, c, d: ref_sap(a.T, b.T, c.T, d.T),
    "modexp": lambda a, b, c, d: ref_modexp(a.T, b.T, c.T, d.T),
    "irs": lambda a, b, c, d: ref_irs(a.T, b.T),
}


# -- cases ---------------------------------------------------------------------------------------------
def make_cases(n_train: int, n_test: int, dim: int, sizes: list[int], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    K = len(sizes)

    def draw(n):
        f = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
        u = (f + rng.random(f.shape)) / np.asarray(sizes)  # factor value spread over its cell of [0, 1)
        z = np.concatenate([u + 0.02 * rng.standard_normal(u.shape), 0.3 * rng.standard_normal((n, dim - K))], 1)
        return z, f

    ztr, ftr = draw(n_train)
    zte, fte = draw(n_test)
    perm = rng.permutation(dim)
    scale = rng.uniform(0.5, 3.0, dim) * rng.choice([-1.0, 1.0], dim)
    shift = rng.normal(0.0, 2.0, dim)
    rot, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    mix = np.eye(dim)
    mix[:K, :K] += 0.4 * rng.standard_normal((K, K))
    return {
        "aligned": (ztr, ftr, zte, fte),
        "permuted_rescaled": (ztr[:, perm] * scale + shift, ftr, zte[:, perm] * scale + shift, fte),
        "rotated": (ztr @ rot, ftr, zte @ rot, fte),
        "partly_mixed": (ztr @ mix, ftr, zte @ mix, fte),
        "noise": (rng.standard_normal(ztr.shape), ftr, rng.standard_normal(zte.shape), fte),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=10)
    ap.add_argument("--sizes", default="2,3,3,4,5", help="factor sizes, comma-separated (K = their count)")
    ap.add_argument("--gbt", default="hist", choices=["hist", "gbt"], help="our DCI estimator")
    ap.add_argument("--metrics", default="mig,dci,sap,modexp,irs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    metrics = args.metrics.split(",")
    cases = make_cases(args.n_train, args.n_test, args.dim, sizes, args.seed)
    ours_fns = ours(args.gbt)

    rows, t_ours, t_ref = [], 0.0, 0.0
    print(f"# n_train={args.n_train} n_test={args.n_test} D={args.dim} sizes={sizes} ours.dci={args.gbt}", flush=True)
    for case, data in cases.items():
        for metric in metrics:
            t0 = time.perf_counter()
            mine = ours_fns[metric](*data)
            t1 = time.perf_counter()
            with threadpool_limits(1):
                ref = REFERENCE[metric](*data)
            t2 = time.perf_counter()
            t_ours += t1 - t0
            t_ref += t2 - t1
            for key in ref:
                rows.append((case, key, mine[key], ref[key], abs(mine[key] - ref[key]), t1 - t0, t2 - t1))
            print(f"  {case:18s} {metric:7s} ours {t1 - t0:7.2f}s  ref {t2 - t1:7.2f}s", file=sys.stderr, flush=True)

    print(f"{'case':18s} {'value':28s} {'ours':>8s} {'ref':>8s} {'|diff|':>7s} {'tol':>5s} {'t_ours':>8s} {'t_ref':>8s}")
    last = None
    for case, key, a, b, d, ta, tb in rows:
        metric_change = (case, key.split("_")[0]) != last
        last = (case, key.split("_")[0])
        times = f"{ta:7.2f}s {tb:7.2f}s" if metric_change else ""
        tol = TOL.get(key, TOL_DEFAULT)
        flag = "" if d <= tol else "  OVER"
        print(f"{case:18s} {key:28s} {a:8.4f} {b:8.4f} {d:7.4f} {tol:5.2f} {times}{flag}")
    per_metric = {}
    for case, key, a, b, d, ta, tb in rows:
        per_metric[key] = max(per_metric.get(key, 0.0), d)
    within = all(r[4] <= TOL.get(r[1], TOL_DEFAULT) for r in rows)
    print(f"total: ours {t_ours:.1f}s, reference {t_ref:.1f}s")
    print(json.dumps({"speedup_vs_reference": round(t_ref / t_ours, 2), "max_abs_diff": round(max(r[4] for r in rows), 4),
                      "max_abs_diff_by_value": {k: round(v, 4) for k, v in per_metric.items()},
                      "within_tolerance": within, "seconds_ours": round(t_ours, 1), "seconds_reference": round(t_ref, 1),
                      "n_train": args.n_train, "n_test": args.n_test, "dim": args.dim, "sizes": sizes,
                      "dci_estimator": args.gbt, "device": describe_device("cpu")}))


if __name__ == "__main__":
    main()
