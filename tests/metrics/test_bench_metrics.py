"""tools/bench_metrics.py end to end at toy size: the per-metric JSON line, and --reference-cache reused (not rerun)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_metrics", ROOT / "tools" / "bench_metrics.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

TINY = ["--n-train", "200", "--n-test", "100", "--dim", "4", "--sizes", "2,3", "--cases", "aligned,noise"]


def test_bench_json_line_and_reference_cache(tmp_path, capsys):
    cache = tmp_path / "ref.json"
    first = bench.main([*TINY, "--reference-cache", str(cache)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == first  # the JSON object is the last line
    assert set(first["per_metric"]) == set(bench.METRICS) and first["reference_from_cache"] == []
    for rec in first["per_metric"].values():
        assert {"ours_s", "reference_s", "ratio", "max_abs_diff", "within"} <= set(rec) and rec["ours_s"] > 0
    assert first["total_s"] == pytest.approx(sum(r["ours_s"] for r in first["per_metric"].values()), abs=2e-3)
    assert first["total_s_without_sap"] == pytest.approx(first["total_s"] - first["per_metric"]["sap"]["ours_s"], abs=1e-3)
    # tools/gpu_check.py reads these three
    assert first["within_tolerance"] and first["speedup_vs_reference"] == first["ratio"]
    assert first["seconds_ours"] == first["total_s"]
    # the deterministic metrics match the plain reference exactly; SAP's default solver (evaluate.sap: exact)
    # solves liblinear's problems to their optimum, so it may differ at a test point within liblinear's tolerance
    # of a boundary (tests/metrics/test_tensor.py: at most 1e-3)
    for m in ("mig", "modexp", "irs"):
        assert first["per_metric"][m]["max_abs_diff"] < 1e-9, m
    assert first["per_metric"]["sap"]["max_abs_diff"] <= 1e-3
    # the stand-in dataset's draws ("rendering + encoding") are timed apart: only the sampled scores draw codes
    assert first["standin_s"] == pytest.approx(sum(r["standin_s"] for r in first["per_metric"].values()), abs=2e-3)
    for m, rec in first["per_metric"].items():
        assert (rec["standin_s"] > 0) == (m in ("betavae", "factorvae")) and rec["standin_s"] < rec["ours_s"], m

    stored = json.loads(cache.read_text())
    second = bench.main([*TINY, "--reference-cache", str(cache), "--metrics", "mig,dci", "--repeat", "2"])
    assert second["reference_from_cache"] == ["dci", "mig"]
    for m in ("mig", "dci"):  # the recorded reference seconds, not a new timing
        assert second["per_metric"][m]["reference_s"] == pytest.approx(
            sum(c["seconds"] for c in stored["metrics"][m].values()) / 2, abs=1e-3)
    assert "reference from --reference-cache" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="recorded for"):  # another configuration is refused, not mixed in
        bench.main([*TINY[:-2], "--sizes", "3,3", "--reference-cache", str(cache)])


def test_sampled_scores_tolerance_covers_their_sampling_error():
    assert bench.tolerance("dci_disentanglement", 10000, 5000) == 0.10
    assert bench.tolerance("betavae_eval_accuracy", 10000, 5000) == 0.05  # 4 * sqrt(0.5 / 5000) = 0.040 < 0.05
    assert bench.tolerance("betavae_eval_accuracy", 10000, 100) == pytest.approx(4 * (0.5 / 100) ** 0.5)
    assert bench.tolerance("factorvae_train_accuracy", 200, 100) == pytest.approx(4 * (0.5 / 200) ** 0.5)
