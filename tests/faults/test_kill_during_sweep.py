"""Fault 3 (#21): a sweep killed (kill -9) part way. Running it again skips the finished runs (their files
untouched) and continues the interrupted one from its checkpoint's step; a run killed while its report was
being written is not taken for finished (metrics.json, the mark of a finished run, is written last)."""
from __future__ import annotations

import signal

import yaml

import causalrep.report as report
import causalrep.sweep as sw
from causalrep.track.base import read_jsonl

from conftest import tiny_data
from faultkit import record_fit_starts, run_python, step_of

TINY = {"train.steps": 4, "train.checkpoint_every": 2, "train.log_every": 2, "train.val_every": 4}

# a real sweep process, SIGKILLed by itself right after run s1 wrote its step-2 checkpoint
KILLED_SWEEP = r"""
import os, signal, sys
import causalrep.sweep as sw
from causalrep.train import Trainer

checkpoint = Trainer.checkpoint

def then_die(self):
    checkpoint(self)
    if self.run_dir.name == "s1" and self.step == 2:
        os.kill(os.getpid(), signal.SIGKILL)

Trainer.checkpoint = then_die
sys.exit(sw.main(sys.argv[1:]))
"""


def make_sweep(tmp_path):
    spec = tmp_path / "specs" / "ae.yaml"
    spec.parent.mkdir(parents=True)
    spec.write_text(yaml.safe_dump({**tiny_data("ae"), "name": "ae"}))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "faults", "specs": ["specs/ae.yaml"], "seeds": [0, 1],
                                     "overrides": TINY}))
    out = tmp_path / "out"
    return [str(sweep), "--out", str(out), "--no-progress"], out / "ae"


def stamps(run_dir):
    return {p.name: p.stat().st_mtime_ns for p in [*run_dir.iterdir(), *(run_dir / "checkpoints").iterdir()]
            if p.is_file()}


def statuses(args):
    return {r.label: sw.status(r) for r in sw.load_sweep(args[0], out=args[2]).runs}


def test_sigkilled_sweep_reruns_only_the_unfinished_run_from_its_checkpoint(tmp_path, monkeypatch):
    args, runs = make_sweep(tmp_path)
    res = run_python(KILLED_SWEEP, *args)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert statuses(args) == {"ae/s0": "done", "ae/s1": "resume"}
    assert step_of(runs / "s1" / "checkpoints" / "last.pt") == 2 and not (runs / "s1" / "metrics.json").exists()
    done = stamps(runs / "s0")
    logged = read_jsonl(runs / "s1" / "metrics.jsonl")
    starts = record_fit_starts(monkeypatch)
    assert sw.main(args) == 0
    assert starts == [("s1", 2)]  # s0 is not trained again, s1 continues from its step-2 checkpoint
    assert stamps(runs / "s0") == done  # not a file of the finished run was rewritten
    assert step_of(runs / "s1" / "checkpoints" / "last.pt") == 4 and (runs / "s1" / "report.md").is_file()
    assert read_jsonl(runs / "s1" / "metrics.jsonl")[: len(logged)] == logged  # its tracked metrics are kept
    assert statuses(args) == {"ae/s0": "done", "ae/s1": "done"}


def test_a_run_stopped_while_writing_its_report_is_not_taken_for_finished(tmp_path, monkeypatch):
    args, runs = make_sweep(tmp_path)
    save_image = report.save_image

    def crash_in_s1(grid, path, *a, **k):
        if path.parent.name == "s1":
            raise KeyboardInterrupt  # stands for a kill: nothing after this point is written
        return save_image(grid, path, *a, **k)

    monkeypatch.setattr(report, "save_image", crash_in_s1)
    assert sw.main(args) == 130
    assert not (runs / "s1" / "metrics.json").exists()  # no mark of a finished run
    assert statuses(args) == {"ae/s0": "done", "ae/s1": "resume"}
    monkeypatch.setattr(report, "save_image", save_image)
    done = stamps(runs / "s0")
    starts = record_fit_starts(monkeypatch)
    assert sw.main(args) == 0
    assert starts == [("s1", 4)]  # trained to the end already: evaluated and reported again, not retrained
    assert stamps(runs / "s0") == done
    assert (runs / "s1" / "metrics.json").is_file() and (runs / "s1" / "report.md").is_file()
