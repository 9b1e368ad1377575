"""Fault 2 (#21): a process killed (kill -9) or interrupted while it writes a checkpoint. The write goes to a
temporary file in the same folder, is fsynced and renamed over last.pt (atomic on POSIX), so last.pt is the
previous checkpoint, whole and loadable, and the half-written temporary is never taken for a checkpoint."""
from __future__ import annotations

import signal

import pytest
import torch

from causalrep.experiment import Experiment
from causalrep.train import load_checkpoint, load_latest, save_checkpoint

from faultkit import OVER, record_fit_starts, run_python, step_of

# a real process, SIGKILLed by itself once torch.save has written half of the step-4 checkpoint
KILLED_MID_WRITE = r"""
import io, os, signal, sys
import torch
from causalrep.experiment import Experiment
from conftest import tiny_spec

save = torch.save

def half_then_die(obj, f, *args, **kwargs):
    if obj["step"] == 4:
        buf = io.BytesIO()
        save(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)  # no except, no finally, no atexit runs
    return save(obj, f, *args, **kwargs)

torch.save = half_then_die
over = sys.argv[2:]
Experiment(tiny_spec("ae", overrides=over), out=sys.argv[1], progress=False).run()
"""


def test_sigkill_mid_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    res = run_python(KILLED_MID_WRITE, str(tmp_path), *OVER)
    assert res.returncode == -signal.SIGKILL, res.stderr
    run_dir = next(tmp_path.glob("tiny/*"))
    ckpts = run_dir / "checkpoints"
    assert step_of(ckpts / "last.pt") == 2  # the step-2 checkpoint, whole
    assert load_latest(ckpts / "last.pt")[1] == ckpts / "last.pt"  # loadable as it is: no fallback needed
    halves = list(ckpts.glob(".last.pt.*.tmp"))
    assert len(halves) == 1  # the half-written temporary: never named last.pt
    # resuming continues from step 2, and the next write clears the dead process's temporary
    starts = record_fit_starts(monkeypatch)
    Experiment.resume(run_dir, progress=False).run()
    assert starts == [(run_dir.name, 2)]
    assert step_of(ckpts / "last.pt") == 6 and not halves[0].exists()
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.prev.pt", "last.pt"]


def test_a_write_interrupted_in_process_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})
    save = torch.save

    def half_then_interrupt(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "step": 2})
    monkeypatch.setattr(torch, "save", save)
    assert load_checkpoint(path)["step"] == 1 and torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
