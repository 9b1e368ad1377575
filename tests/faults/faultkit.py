"""Helpers of the fault-injection tests (#21): tiny runs stopped at a chosen step, files damaged on purpose."""
from __future__ import annotations

import copy
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from causalrep.experiment import Experiment
from causalrep.train import Trainer

from conftest import tiny_data, tiny_spec

ROOT = Path(__file__).resolve().parents[2]
# 6 steps, a checkpoint every 2: stopped during step 5, last.pt holds step 4 and last.prev.pt step 2
OVER = ["train.steps=6", "train.checkpoint_every=2", "train.log_every=2", "train.val_every=6"]


def interrupted_run(out: Path, kind: str = "ae", at: int = 5, overrides=OVER) -> Path:
    """A run stopped by a KeyboardInterrupt (as Ctrl-C) during step `at`; returns its folder."""
    exp = Experiment(tiny_spec(kind, overrides=overrides), out=out, progress=False)

    def crash(trainer):
        if trainer.step == at:
            raise KeyboardInterrupt

    exp.model.after_step = crash
    with pytest.raises(KeyboardInterrupt):
        exp.run()
    return exp.run_dir


def step_of(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["step"])


def spec_file(tmp_path: Path, kind: str = "ae", overrides: dict | None = None) -> Path:
    """A tiny spec as a YAML file (for the CLI), with dotted overrides such as {"train.steps": 6}."""
    data = copy.deepcopy(tiny_data(kind))  # tiny_data shares conftest.TINY's nested dicts
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def record_fit_starts(monkeypatch) -> list[tuple[str, int]]:
    """(run folder name, step) each time Trainer.fit starts: the step a resumed run continues from."""
    starts: list[tuple[str, int]] = []
    fit = Trainer.fit

    def spy(self):
        starts.append((self.run_dir.name, self.step))
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", spy)
    return starts


# ------------------------------------------------------------------------------------------ damage
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def flip_tensor_bytes(path: Path) -> None:
    """Invert 16 bytes inside the largest tensor record: the archive stays readable and torch.load alone would
    load the damaged weights without a word; the record's CRC-32 no longer matches."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the local header is 30 bytes + name + extra
    data[start: start + 16] = bytes(b ^ 0xFF for b in data[start: start + 16])
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": truncate, "empty": empty, "flipped_tensor_bytes": flip_tensor_bytes}


def run_python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter on this checkout (what a real process killed with SIGKILL needs)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)
