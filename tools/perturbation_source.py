"""Pick 002's source of s among beta-VAE restarts (sec 4.1): the restart with the lowest MIG, its least-noisy
latent j = argmin_k <sigma_k^2> (eq. 6), and the scale that gives s a chosen spread in pattern rows.

    python tools/perturbation_source.py runs/perturbation_cpu16/bvae/s0 runs/perturbation_cpu16/bvae/s1 ...

prints a table of the restarts (MIG, chosen latent, std of s over training images) and, last, one JSON line:
{"run": ..., "mig": ..., "latent": j, "s_std": ..., "scale": rows / s_std}. `scale` is what
data.perturbation.scale should be so that one standard deviation of s shifts the c_j = 1 columns of the pattern
(002 eq. 8) by `--rows` rows; 002 does not state its scale, so the sweep records the value it used.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causalrep.build import least_noisy_latent, load_run  # noqa: E402


def s_spread(run_dir: str, probe: int) -> tuple[int, float]:
    """(j, std of s = enc(x)_j over the first `probe` training images) of a trained VAE-like run."""
    run = load_run(run_dir)
    j, mu = least_noisy_latent(run, probe, where=run_dir)
    return j, float(mu[:, j].std())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="finished beta-VAE run folders (metrics.json with mig, checkpoints)")
    p.add_argument("--rows", type=float, default=4.0, help="pattern rows one std of s should shift (default 4)")
    p.add_argument("--probe", type=int, default=1024, help="training images to measure s on")
    args = p.parse_args(argv)
    rows = []
    for r in args.runs:
        metrics = json.loads((Path(r) / "metrics.json").read_text())
        if "mig" not in metrics:
            print(f"error: {r}/metrics.json has no mig (evaluate.metrics must include mig)", file=sys.stderr)
            return 2
        j, std = s_spread(r, args.probe)
        rows.append({"run": r, "mig": float(metrics["mig"]), "latent": j, "s_std": std})
    print(f"{'run':<48} {'MIG':>7} {'latent':>6} {'std(s)':>8}")
    for row in rows:
        print(f"{row['run']:<48} {row['mig']:7.4f} {row['latent']:6d} {row['s_std']:8.4f}")
    best = min(rows, key=lambda row: row["mig"])  # 002 sec 4.1: the restart with the lowest MIG
    best["scale"] = args.rows / best["s_std"]
    print(json.dumps(best))
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
