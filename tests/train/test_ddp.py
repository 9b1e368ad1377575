"""Distributed training: torchrun with 2 CPU processes (gloo) gives the single-process weights of the same
global batch, writes one run folder from rank 0 only, and resumes on every rank."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from causalrep.experiment import Experiment
from causalrep.spec import load_spec
from causalrep.track.base import read_jsonl
from causalrep.train import load_checkpoint

from conftest import tiny_data

ROOT = Path(__file__).resolve().parents[2]
# Per-parameter float32 difference allowed after 6 Adam steps. The two runs differ only in the order of
# float sums (each rank's half-batch mean, then DDP's average of the two, vs one mean over 8 images);
# measured on this CPU: 1.5e-8. Adam divides by sqrt(v) ~ |g|, so a 1e-7 relative change of a gradient
# moves a weight by ~1e-7 * lr per step: 1e-6 leaves room without hiding a wrong shard or scale.
ATOL = 1e-6


def torchrun(*args: str, nproc: int = 2, timeout: float = 240) -> subprocess.CompletedProcess:
    # --standalone: a private rendezvous on a free port, so parallel test sessions cannot collide
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc-per-node={nproc}", "-m", "causalrep.run", *args, "--no-progress"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    # the hybrid-latent bank is filled after training from encodings; compare the trained weights
    return {k: v for k, v in load_checkpoint(path)["model"].items() if not k.startswith("latent_bank")}


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def test_two_process_gloo_equals_single_process_and_resumes(tmp_path):
    over = {"steps": 3, "batch_size": 8, "log_every": 1, "val_every": 3, "checkpoint_every": 3, "threads": 1}
    data = tiny_data("sae", 4, {"kind": "chain", "nodes": 4})
    data["train"] = {**data["train"], **over}
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data))

    # single process, global batch 8: 3 steps, then resumed to 6 (exact on the CPU, tests/train/test_trainer.py)
    torch.set_num_threads(1)
    single = Experiment(load_spec(spec_file), out=tmp_path / "single", progress=False)
    single.run()
    single_3 = model_weights(single.run_dir / "checkpoints" / "last.pt")
    Experiment.resume(single.run_dir, ["train.steps=6"], progress=False).run()
    single_6 = model_weights(single.run_dir / "checkpoints" / "last.pt")

    # two processes, 4 images each: a fresh run in a run folder picked by rank 0 ...
    out = tmp_path / "ddp"
    res = torchrun(str(spec_file), "--out", str(out))
    (run_dir,) = list((out / "tiny").iterdir())  # the ranks agreed on one folder
    assert "(2 processes)" in res.stdout and res.stdout.count("run folder:") == 1  # rank 0 alone prints
    diff_3 = max_difference(model_weights(run_dir / "checkpoints" / "last.pt"), single_3)
    # ... then resumed on both ranks from rank 0's checkpoint
    torchrun("--resume", str(run_dir), "--set", "train.steps=6")
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["step"] == 6
    diff_6 = max_difference(model_weights(run_dir / "checkpoints" / "last.pt"), single_6)
    print(f"max |w_ddp - w_single|: {diff_3:.3g} after 3 steps, {diff_6:.3g} after 6 (resumed)")
    assert diff_3 < ATOL and diff_6 < ATOL

    # rank 0 alone logs: one record per (metric, step), and the logged loss is the global batch's
    ddp_log = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["name"] == "loss"]
    single_log = [r for r in read_jsonl(single.run_dir / "metrics.jsonl") if r["name"] == "loss"]
    assert [r["step"] for r in ddp_log] == [r["step"] for r in single_log] == [1, 2, 3, 4, 5, 6]
    assert [r["value"] for r in ddp_log] == pytest.approx([r["value"] for r in single_log], rel=1e-5)
    assert (run_dir / "metrics.json").is_file() and (run_dir / "report.md").is_file()


def test_batch_size_must_divide_over_the_processes(monkeypatch, tmp_path):
    """batch_size is the global batch: 5 images cannot be split over 2 processes. The spec reader (Experiment) names
    the key (a SpecError, exit code 2); the trainer, given plain values, refuses them with a ValueError."""
    from causalrep.build import build_dataset, build_model, build_split
    from causalrep.errors import SpecError
    from causalrep.experiment import Experiment
    from causalrep.train import Trainer, distributed

    from conftest import tiny_spec

    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "init", lambda device: None)
    spec = tiny_spec("ae", overrides=["train.batch_size=5"])
    with pytest.raises(SpecError, match=r"^train.batch_size: 5 is the global batch .* 2 processes") as info:
        Experiment(spec, out=tmp_path, progress=False)
    assert info.value.exit_code == 2 and not any(tmp_path.iterdir())  # refused before a run folder is made
    ds = build_dataset(spec)
    with pytest.raises(ValueError, match=r"^batch_size 5 is the global batch .* 2 processes"):
        Trainer(model=build_model(spec, ds), dataset=ds, split=build_split(spec, ds), run_dir=tmp_path,
                tracker=distributed.NullTracker(), steps=1, batch_size=5, progress=False)
