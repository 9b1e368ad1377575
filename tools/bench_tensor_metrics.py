"""Time the torch metrics (causalrep/metrics/tensor.py) against the numpy path (discretize.py, disentanglement.py)
on the same data, same run: median of repeats, ratio numpy / torch (> 1: torch is faster).

    python tools/bench_tensor_metrics.py                        # 10k train / 5k test, D=10, K=5 (sizes 10), CPU
    python tools/bench_tensor_metrics.py --device cuda          # the torch path on the GPU (default: cuda if any)
    python tools/bench_tensor_metrics.py --threads 1            # torch intra-op threads (default: torch's own)

Codes: one dim per factor (its value plus uniform jitter, scaled) and the other dims Gaussian noise. The numpy
path runs as the metrics did before `evaluate.sap: exact` made the torch SAP the default (sap's LinearSVC fits on
joblib threads, backend="sklearn"); "modularity" times only the MI-matrix part of modularity_explicitness (its
explicitness fits logistic regressions, which tensor.py does not replace).
Each row also shows |numpy - torch| of the value. Prints a table, then one JSON line:
{"per_metric": {name: {"numpy_s", "torch_s", "ratio"}}, "device", "numpy_s", "torch_s", "ratio"} where the totals
are the four metrics of `suite` (mig, sap, irs, modularity) computed separately by numpy and by one torch suite().
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from causalrep.metrics import discretize as nd  # noqa: E402
from causalrep.metrics import disentanglement as ndis  # noqa: E402
from causalrep.metrics import tensor as tm  # noqa: E402


def make_data(n: int, d: int, sizes: list[int], seed: int):
    rng = np.random.default_rng(seed)
    f = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    z = rng.normal(size=(n, d))
    k = min(d, len(sizes))
    z[:, :k] = (f[:, :k] + rng.random((n, k))) / np.asarray(sizes[:k])
    return z, f


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t, out


def as_number(v) -> float:
    return float(np.abs(np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float64)).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=10_000)
    ap.add_argument("--test", type=int, default=5_000)
    ap.add_argument("--latents", type=int, default=10)
    ap.add_argument("--sizes", default="10,10,10,10,10", help="factor sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the torch path")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    z, f = make_data(args.train, args.latents, sizes, 0)
    zt, ft = make_data(args.test, args.latents, sizes, 1)
    Z, F, ZT, FT = (torch.from_numpy(a).to(dev) for a in (z, f, zt, ft))
    lab = nd.histogram_discretize(z)
    LAB = torch.from_numpy(lab).to(dev)

    cases = {  # name -> (numpy callable, torch callable)
        "histogram_discretize": (lambda: nd.histogram_discretize(z), lambda: tm.histogram_discretize(Z)),
        "discrete_mutual_info": (lambda: nd.discrete_mutual_info(lab, f), lambda: tm.discrete_mutual_info(LAB, F)),
        "mig": (lambda: ndis.mig(z, f), lambda: tm.mig(Z, F)),
        "modularity": (lambda: ndis.modularity_from_mi(nd.discrete_mutual_info(nd.histogram_discretize(z), f)),
                       lambda: tm.modularity(Z, F)),
        "irs": (lambda: ndis.irs(z, f), lambda: tm.irs(Z, F)),
        # the numpy path's SAP is sap_score.py's LinearSVC (backend="sklearn"; the default is now tm.sap itself)
        "sap": (lambda: ndis.sap(z, f, zt, ft, backend="sklearn"), lambda: tm.sap(Z, F, ZT, FT)),
        "suite": (lambda: {"mig": ndis.mig(z, f), "sap": ndis.sap(z, f, zt, ft, backend="sklearn"),
                           "irs": ndis.irs(z, f),
                           "modexp_modularity": ndis.modularity_from_mi(
                               nd.discrete_mutual_info(nd.histogram_discretize(z), f))},
                  lambda: tm.suite(Z, F, ZT, FT)),
    }
    for _, t_fn in cases.values():  # warm-up: allocator, kernels, lazy CUDA init
        t_fn()
    per, rows = {}, []
    for name, (n_fn, t_fn) in cases.items():
        tn, tt = [], []
        for _ in range(args.repeats):  # interleaved, so both paths see the same machine load
            s, vn = timed(n_fn, torch.device("cpu"))
            tn.append(s)
            s, vt = timed(t_fn, dev)
            tt.append(s)
        if name == "suite":
            diff = max(abs(vn[k] - vt[k]) for k in vn)
        else:
            diff = abs(as_number(vn) - as_number(vt))
        mn, mt = statistics.median(tn), statistics.median(tt)
        per[name] = {"numpy_s": round(mn, 5), "torch_s": round(mt, 5), "ratio": round(mn / mt, 2)}
        rows.append((name, mn, mt, mn / mt, diff))
    print(f"torch path on {dev} ({torch.get_num_threads()} intra-op threads), {args.train} train / {args.test} test, "
          f"D={args.latents}, factor sizes {sizes}, median of {args.repeats}")
    print(f"{'metric':22s} {'numpy s':>9s} {'torch s':>9s} {'ratio':>7s} {'|value diff|':>13s}")
    for name, mn, mt, r, diff in rows:
        print(f"{name:22s} {mn:9.4f} {mt:9.4f} {r:7.2f} {diff:13.2e}")
    s = per["suite"]
    print(json.dumps({"per_metric": per, "device": str(dev), "numpy_s": s["numpy_s"], "torch_s": s["torch_s"],
                      "ratio": s["ratio"]}))


if __name__ == "__main__":
    main()
