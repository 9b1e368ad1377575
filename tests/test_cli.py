"""CLI: bad specs exit 2 with one line naming the key path; a run end to end; load_run and the Python API."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import causalrep
from causalrep.run import main

from conftest import tiny_data

ROOT = Path(__file__).resolve().parents[1]


def write_spec(tmp_path, data) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def run_cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "causalrep.run", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_bad_spec_exits_2_with_one_line_and_no_traceback(tmp_path):
    spec = write_spec(tmp_path, tiny_data("sae"))
    res = run_cli(str(spec), "--set", "model.decoder.blocks=twelve", "--out", str(tmp_path / "runs"))
    assert res.returncode == 2
    assert res.stderr.strip() == "error: model.decoder.blocks: expected int, got 'twelve'"
    assert "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "runs").exists()  # nothing was started


@pytest.mark.parametrize("args, words", [
    (["nowhere.yaml"], "spec file not found"),
    (["{spec}", "--set", "graph.kind=chain", "--set", "graph.nodes=3"], "graph.nodes: 3 nodes do not split"),
    (["{spec}", "--set", "oops"], "--set: expected KEY.PATH=VALUE"),
])
def test_more_bad_input_exits_2(tmp_path, capsys, args, words):
    # in process: main's return value is the exit status (the subprocess test above checks it reaches the shell)
    spec = write_spec(tmp_path, tiny_data("sae"))
    assert main([*[a.format(spec=spec) for a in args], "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_argparse_usage_error_exits_2():
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_end_to_end_run_then_python_api(tmp_path):
    spec = write_spec(tmp_path, tiny_data("sae", 4, {"kind": "chain", "nodes": 4}))
    out = tmp_path / "runs"
    assert main([str(spec), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    (run_dir,) = list((out / "tiny").iterdir())
    run = causalrep.load_run(run_dir)
    assert run.step == 4 and run.graph.nodes == ["u1", "u2", "u3", "u4"]
    assert set(run.metrics) >= {"val_recon_error", "val_recon_error_mean_image"}
    x = run.dataset.images_at(run.split.test[:3])
    u = run.model.encode(x)
    x_hat = run.model.decode(u)
    assert u.shape == (3, 4) and x_hat.shape == x.shape
    x_cf = run.model.counterfactual(x, do={"u3": 0.0})
    # abduction-action-prediction by hand gives the same images
    u_cf = u.clone()
    u_cf[:, 2] = 0.0
    assert torch.allclose(x_cf, run.model.decode(u_cf))
    assert bool(run.model.latent_bank_filled)  # hybrid latents travel with the checkpoint
    # resume through the CLI to more steps
    assert main(["--resume", str(run_dir), "--set", "train.steps=6", "--no-progress"]) == 0
    assert causalrep.load_run(run_dir).step == 6


def test_check_validates_without_training_or_writing(tmp_path, capsys, monkeypatch):
    spec = write_spec(tmp_path, tiny_data("sae", 4, {"kind": "chain", "nodes": 4}))
    monkeypatch.chdir(tmp_path)
    assert main(["--check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {spec} (sae, ") and " params; dsprites, 737,280 images)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no run folder, nothing written
    assert main(["--check", str(spec), "--set", "train.batch_size=0"]) == 2
    assert capsys.readouterr().err == "error: train.batch_size: expected an int in [1, 1e6], got 0\n"
    assert main(["--check", str(spec), "--set", "data.resolution=128"]) == 2  # in the schema's range, not dSprites'
    err = capsys.readouterr().err
    assert err.startswith("error: data: dsprites: resolution 128 is not supported") and err.count("\n") == 1


def test_check_runs_the_builders_cross_section_rules(tmp_path, capsys):
    spec = write_spec(tmp_path, tiny_data("vlae", 4, rungs=3))
    assert main(["--check", str(spec)]) == 2
    assert capsys.readouterr().err.startswith("error: model.rungs: latent_dim=4 is not divisible by rungs=3")


def test_check_takes_a_spec_not_resume(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["--check", "--resume", str(tmp_path)])
    assert info.value.code == 2
