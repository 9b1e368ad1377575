"""Fault 1 (#21): a truncated or corrupted last checkpoint. A resume says so in one warning line naming the file
and continues from the previous checkpoint kept beside it; with no good checkpoint, a clear error naming the
file and CLI exit 2."""
from __future__ import annotations

import pytest

from causalrep.errors import CheckpointError
from causalrep.experiment import Experiment, load_run
from causalrep.run import main
from causalrep.track.base import read_jsonl
from causalrep.train import load_checkpoint, load_latest

from faultkit import DAMAGE, interrupted_run, record_fit_starts, step_of


def test_every_checkpoint_write_keeps_the_previous_one(tmp_path):
    ckpts = interrupted_run(tmp_path) / "checkpoints"
    assert step_of(ckpts / "last.pt") == 4 and step_of(ckpts / "last.prev.pt") == 2
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.prev.pt", "last.pt"]  # no temporary left


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_warns_once_naming_the_damaged_file_and_uses_the_previous(tmp_path, damage, capsys, monkeypatch):
    run_dir = interrupted_run(tmp_path)
    last, prev = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.prev.pt"
    DAMAGE[damage](last)
    logged = read_jsonl(run_dir / "metrics.jsonl")
    starts = record_fit_starts(monkeypatch)
    capsys.readouterr()
    assert main(["--resume", str(run_dir), "--no-progress"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "Traceback" not in err, err
    assert warnings[0].startswith(f"warning: checkpoint {last}: ")
    assert ("corrupted" if damage == "flipped_tensor_bytes" else "truncated or corrupted") in warnings[0]
    assert f"using the previous checkpoint {prev} (step 2) instead" in warnings[0]
    assert starts == [(run_dir.name, 2)]  # continued from the previous checkpoint's step
    assert step_of(last) == 6 and step_of(prev) == 6  # the damaged file was replaced, not kept as previous
    assert read_jsonl(run_dir / "metrics.jsonl")[: len(logged)] == logged  # the tracked metrics are all kept


def test_load_run_falls_back_too_and_the_damage_is_named(tmp_path):
    run_dir = interrupted_run(tmp_path)
    DAMAGE["truncated"](run_dir / "checkpoints" / "last.pt")
    with pytest.warns(UserWarning, match=r"checkpoint .*last\.pt: truncated or corrupted .*using the previous"):
        run = load_run(run_dir)
    assert run.step == 2


def test_no_good_checkpoint_is_a_clear_error_naming_the_file_and_cli_exit_2(tmp_path, capsys):
    run_dir = interrupted_run(tmp_path)
    last, prev = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.prev.pt"
    DAMAGE["truncated"](last)
    DAMAGE["flipped_tensor_bytes"](prev)
    with pytest.raises(CheckpointError) as info:
        load_latest(last)
    assert str(info.value).startswith(f"checkpoint {last}: truncated or corrupted")
    assert f"the previous checkpoint {prev} is damaged too" in str(info.value)
    capsys.readouterr()
    assert main(["--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: {info.value}" and "Traceback" not in err
    prev.unlink()
    with pytest.raises(CheckpointError, match=r"no previous checkpoint \(last\.prev\.pt\) to fall back to"):
        load_latest(last)


def test_a_flipped_tensor_byte_is_caught_by_the_crc_check(tmp_path):
    # torch.load itself does not check the archive's CRC-32s: without the check these weights load silently
    run_dir = interrupted_run(tmp_path)
    last = run_dir / "checkpoints" / "last.pt"
    DAMAGE["flipped_tensor_bytes"](last)
    with pytest.raises(CheckpointError, match=r"corrupted: record '.*/data/\d+' fails its CRC-32 check") as info:
        load_checkpoint(last)
    assert info.value.corrupt and str(last) in str(info.value)


def test_after_falling_back_the_damaged_file_is_never_kept_as_the_previous_one(tmp_path):
    # resumed from last.prev.pt (step 2) past a damaged last.pt, then stopped again after the step-4 checkpoint:
    # last.prev.pt must still be the good step-2 checkpoint, not the damaged file moved aside
    run_dir = interrupted_run(tmp_path)
    DAMAGE["truncated"](run_dir / "checkpoints" / "last.pt")
    exp = Experiment.resume(run_dir, progress=False)

    def crash(trainer):
        if trainer.step == 5:
            raise KeyboardInterrupt

    exp.model.after_step = crash
    with pytest.warns(UserWarning, match="using the previous checkpoint"), pytest.raises(KeyboardInterrupt):
        exp.run()
    assert step_of(run_dir / "checkpoints" / "last.pt") == 4 and step_of(run_dir / "checkpoints" / "last.prev.pt") == 2
