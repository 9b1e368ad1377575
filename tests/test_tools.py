"""The benchmark tools run end to end and end with their JSON line (tiny settings)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_prints_its_json_line_last():
    res = subprocess.run([sys.executable, "tools/bench_train.py", "--steps", "1", "--repeats", "1", "--warmup", "1",
                          "--check-steps", "2", "--variants", "naive,channels_last", "--set", "data.resolution=16",
                          "--set", "train.batch_size=4"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"naive_steps_per_s", "best_steps_per_s", "device"} <= set(last)
    assert last["naive_steps_per_s"] > 0 and last["best_steps_per_s"] >= last["naive_steps_per_s"]
