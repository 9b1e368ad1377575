"""tools/gpu_check.py --cpu-smoke runs every stage at toy size and writes the summary a GPU run fills the same way."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # five subprocess stages (pytest, three benchmarks, a training run): a minute idle, the suite's largest
def test_cpu_smoke_runs_every_stage_and_summarises_them(tmp_path):
    # < 60 s on an idle 2-core machine; the generous timeout covers one shared with other jobs
    res = subprocess.run([sys.executable, "tools/gpu_check.py", str(tmp_path), "--cpu-smoke"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert json.loads(res.stdout.strip().splitlines()[-1]) == summary  # the summary is the last stdout line
    assert summary["mode"] == "cpu-smoke" and summary["device"].startswith("cpu") and summary["ok"]
    stages = summary["stages"]
    assert set(stages) == {"pytest", "bench_train", "bench_metrics", "bench_tensor", "train"}
    for name, rec in stages.items():
        assert rec["ok"] and rec["rc"] == 0 and rec["wall_s"] > 0, name
        assert Path(rec["log"]).is_file(), name

    # on the CPU every cuda test is collected and skipped, none fails
    tests = stages["pytest"]
    assert tests["failed"] == tests["errors"] == tests["passed"] == 0 and tests["skipped"] == tests["tests"] > 0

    bench = stages["bench_train"]["result"]
    for key in ("naive_steps_per_s", "best_steps_per_s", "ratio"):
        assert isinstance(bench[key], float) and bench[key] > 0, key
    assert bench["best_steps_per_s"] >= bench["naive_steps_per_s"]
    metrics_bench = stages["bench_metrics"]["result"]
    assert metrics_bench["within_tolerance"] and metrics_bench["speedup_vs_reference"] > 0
    tensor_bench = stages["bench_tensor"]["result"]
    assert tensor_bench["device"] == "cpu"
    assert set(tensor_bench["per_metric"]) == {"histogram_discretize", "discrete_mutual_info", "mig", "modularity",
                                               "irs", "sap", "suite"}
    assert all(m["numpy_s"] > 0 and m["torch_s"] > 0 for m in tensor_bench["per_metric"].values())

    train = stages["train"]
    assert train["steps_per_s"] > 0 and train["plan"]["steps"] >= 1
    on_disk = json.loads((Path(train["run_dir"]) / "metrics.json").read_text())
    assert on_disk == train["metrics"] and on_disk["step"] == train["plan"]["steps"]
    assert 0.0 <= on_disk["dci_disentanglement"] <= 1.0
    assert {"mig", "sap", "irs", "modexp_modularity", "val_recon_error"} <= set(on_disk)
