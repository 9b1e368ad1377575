"""Fault 7 (#21): a checkpoint that carries a pickled payload (an object whose unpickling runs code). Refused,
nothing in it run (torch.load weights_only=True), with a clear error naming the file: when resuming (no quiet
fall back to the previous checkpoint: such a file is no accident), in load_run and for train.init_from."""
from __future__ import annotations

import pytest
import torch

from causalrep.errors import CheckpointError
from causalrep.experiment import Experiment, load_run
from causalrep.run import main
from causalrep.train import load_checkpoint, load_latest

from conftest import tiny_spec
from faultkit import interrupted_run


class Payload:
    """Unpickling it would create the file `marker` (a stand-in for os.system or any other call)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path, marker):
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["extra"] = Payload(marker)
    torch.save(ckpt, path)


def test_load_refuses_it_naming_the_file_and_runs_nothing(tmp_path):
    run_dir = interrupted_run(tmp_path / "runs")
    last, marker = run_dir / "checkpoints" / "last.pt", tmp_path / "pwned"
    plant(last, marker)
    for load in (load_checkpoint, load_latest, load_run):
        with pytest.raises(CheckpointError) as info:
            load(run_dir if load is load_run else last)
        msg = str(info.value)
        assert msg.startswith(f"checkpoint {last}: refused: it carries a pickled object") and "weights_only" in msg
        assert "GLOBAL io.open" in msg and not info.value.corrupt  # names what it refused
    assert not marker.exists()


def test_resume_refuses_it_with_exit_2_and_no_traceback(tmp_path, capsys):
    run_dir = interrupted_run(tmp_path / "runs")
    last, marker = run_dir / "checkpoints" / "last.pt", tmp_path / "pwned"
    plant(last, marker)
    capsys.readouterr()
    assert main(["--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint {last}: refused:") and len(err.strip().splitlines()) == 1, err
    assert not marker.exists() and "Traceback" not in err
    # init_from a run folder holding it: the same refusal (the error names the file)
    with pytest.raises(CheckpointError, match="refused"):
        Experiment(tiny_spec("ae", overrides=[f"train.init_from={run_dir}"]), out=tmp_path / "b", progress=False)
    assert not marker.exists()
