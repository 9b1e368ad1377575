"""Fault 4 (#21): an Aim repository that is locked or read-only, at the start of a run or part way. Training
goes on, every metric still goes to metrics.jsonl, and there is one warning (one line from the CLI)."""
from __future__ import annotations

import errno

import pytest

from causalrep.errors import CausalrepWarning
from causalrep.experiment import Experiment
from causalrep.run import main
from causalrep.track.base import read_jsonl

from conftest import tiny_spec
from faultkit import spec_file

aim = pytest.importorskip("aim")
from aim.sdk.errors import RunLockingError  # noqa: E402

STEPS = {"train.steps": 4, "train.log_every": 1, "train.val_every": 2, "train.checkpoint_every": 2}


def logged_steps(run_dir, name="loss"):
    return [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["name"] == name]


def test_locked_aim_repo_warns_one_line_and_the_run_finishes_on_metrics_jsonl(tmp_path, monkeypatch, capsys):
    def locked(*args, **kwargs):  # what aim raises when another process holds the run's lock
        raise RunLockingError("Cannot acquire lock for run: the repository is locked by another process")

    monkeypatch.setattr(aim, "Run", locked)
    spec = spec_file(tmp_path, "ae", {**STEPS, "track.kind": "aim", "track.repo": str(tmp_path / "aim")})
    capsys.readouterr()
    assert main([str(spec), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "Aim" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: Aim tracking is off for this run"), err
    assert "RunLockingError: Cannot acquire lock" in warnings[0] and "metrics.jsonl" in warnings[0]
    run_dir = next((tmp_path / "runs" / "tiny").iterdir())
    assert logged_steps(run_dir) == [1, 2, 3, 4] and logged_steps(run_dir, "recon_error") == [2, 4]
    assert logged_steps(run_dir, "val_recon_error") == [4] and (run_dir / "metrics.json").is_file()


def test_aim_turning_read_only_mid_run_is_dropped_with_one_warning_and_its_run_closed(tmp_path, monkeypatch):
    track, close = aim.Run.track, aim.Run.close
    calls = {"track": 0, "close": 0}

    def read_only_from_the_third(self, *args, **kwargs):
        calls["track"] += 1
        if calls["track"] >= 3:
            raise OSError(errno.EROFS, "Read-only file system")
        return track(self, *args, **kwargs)

    def counted_close(self, *args, **kwargs):
        calls["close"] += 1
        return close(self, *args, **kwargs)

    monkeypatch.setattr(aim.Run, "track", read_only_from_the_third)
    monkeypatch.setattr(aim.Run, "close", counted_close)
    spec = tiny_spec("ae", overrides=[f"{k}={v}" for k, v in STEPS.items()]
                     + ["track.kind=aim", f"track.repo={tmp_path / 'aim'}"])
    exp = Experiment(spec, out=tmp_path / "runs", progress=False)
    with pytest.warns(CausalrepWarning) as record:
        metrics = exp.run()
    msgs = [str(w.message) for w in record if issubclass(w.category, CausalrepWarning)]
    assert len(msgs) == 1 and msgs[0].startswith("tracker AimTracker failed in log_metric (OSError: "), msgs
    assert "Read-only file system" in msgs[0] and "metrics still go to metrics.jsonl" in msgs[0]
    assert metrics["val_recon_error"] > 0
    assert logged_steps(exp.run_dir) == [1, 2, 3, 4] and logged_steps(exp.run_dir, "recon_error") == [2, 4]
    assert calls["close"] == 1  # the dropped Aim run was released (its lock, its threads), once
