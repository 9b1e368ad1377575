"""Fault 6 (#21): no space left on the device while a checkpoint is written. A clear error naming the file,
the last checkpoint intact (and no temporary left behind), the tracked metrics kept, CLI exit 2."""
from __future__ import annotations

import errno
import os

import pytest
import torch

from causalrep.errors import CheckpointError
from causalrep.run import main
from causalrep.track.base import read_jsonl
from causalrep.train import load_checkpoint, save_checkpoint

from faultkit import spec_file, step_of


def disk_full_from_step(monkeypatch, step: int):
    """torch.save writes a few bytes, then the disk is full (OSError ENOSPC), for payloads of `step` on."""
    save = torch.save

    def full(obj, f, *args, **kwargs):
        if obj.get("step", 0) >= step:
            f.write(b"PK\x03\x04")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)


def test_cli_exits_2_naming_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    spec = spec_file(tmp_path, "ae", {"train.steps": 6, "train.checkpoint_every": 2, "train.log_every": 2})
    disk_full_from_step(monkeypatch, 4)
    capsys.readouterr()
    assert main([str(spec), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    run_dir = next((tmp_path / "runs" / "tiny").iterdir())
    last = run_dir / "checkpoints" / "last.pt"
    assert err.strip() == (f"error: checkpoint {last}: cannot write it: No space left on device [ENOSPC]; the "
                           "checkpoint already in that file is kept unchanged; training stopped at step 4"), err
    assert step_of(last) == 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt"]  # no temporary, no half file
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["name"] == "loss"] == [2, 4]


def test_the_first_checkpoint_failing_says_there_is_none(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.pt"
    disk_full_from_step(monkeypatch, 0)
    with pytest.raises(CheckpointError, match=r"No space left on device \[ENOSPC\]; no earlier checkpoint is there"):
        save_checkpoint(path, {"model": {}, "step": 1})
    assert list(path.parent.iterdir()) == []


def test_a_full_disk_while_keeping_the_previous_checkpoint_loses_neither(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "step": 1})
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "step": 2})

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", full)
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(CheckpointError, match=r"last\.pt: cannot write it: No space left on device"):
        save_checkpoint(path, {"model": {"w": torch.zeros(2)}, "step": 3})
    assert load_checkpoint(path)["step"] == 2 and load_checkpoint(tmp_path / "last.prev.pt")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]
