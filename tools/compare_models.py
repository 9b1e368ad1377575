"""Train several specs for the same number of steps and tabulate their metrics (docs/results.md)."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from causalrep.experiment import Experiment  # noqa: E402
from causalrep.spec import load_spec  # noqa: E402

COLUMNS = ["val_recon_error", "val_recon_error_mean_image", "mig", "dci_disentanglement", "dci_completeness",
           "dci_informativeness_test", "sap", "irs"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("specs", nargs="+", help="spec files")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override applied to every spec")
    p.add_argument("--out", default="runs/compare")
    p.add_argument("--markdown", help="write the table here (e.g. docs/results.md)")
    args = p.parse_args(argv)
    rows = []
    for path in args.specs:
        spec = load_spec(path, args.overrides)
        t0 = time.perf_counter()
        exp = Experiment(spec, out=args.out, progress=False)
        metrics = exp.run()
        rows.append((spec.name, metrics, time.perf_counter() - t0))
        print(f"{spec.name}: {json.dumps({k: metrics.get(k) for k in COLUMNS})} ({rows[-1][2]:.0f} s)", flush=True)
    header = "| model | " + " | ".join(COLUMNS) + " | train + eval s |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, m, secs in rows:
        vals = [f"{m[k]:.3f}" if isinstance(m.get(k), float) else str(m.get(k, "")) for k in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(vals) + f" | {secs:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        cmd = "python tools/compare_models.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        Path(args.markdown).write_text(
            "# Results\n\nA CPU-sized comparison: every model trained for the same number of steps on procedural "
            "3D-Shapes, evaluated with the metrics of 001 sec 4 on freshly sampled factors (seed 0). These are "
            "short runs on 2 CPU cores, not the paper's 100k steps: they show the pipeline and the early "
            f"trend, whatever the numbers say.\n\nMade by:\n\n```bash\n{cmd}\n```\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
