"""Fault 5 (#21): NaN or inf in the loss. Training stops; the message names the first bad step and the loss
term ("step 5: loss term 'kl' is inf"), even when that step comes before the next check; the last good
checkpoint and the tracked metrics are kept; the CLI exits 2 with that one line and no traceback."""
from __future__ import annotations

import pytest
import torch

from causalrep.build import build_dataset, build_model
from causalrep.errors import TrainingError
from causalrep.experiment import Experiment
from causalrep.run import main
from causalrep.track.base import read_jsonl
from causalrep.train import load_checkpoint

from conftest import tiny_spec
from faultkit import spec_file

# checked every 4 steps: step 5 is bad, the check that sees it is step 8's
STEPS = {"train.steps": 12, "train.checkpoint_every": 4, "train.log_every": 4, "train.val_every": 12}


def poison(monkeypatch, model_class, term: str, value: float, at: int = 5):
    """The model's training forward returns `term` * value at its `at`-th call (the loss follows)."""
    forward, calls = model_class.forward, {"n": 0}

    def bad_forward(self, x, **kw):
        out = forward(self, x, **kw)
        if self.training:
            calls["n"] += 1
            if calls["n"] == at:
                out[term] = out[term] * value
                out["loss"] = out["recon"] + out["kl"]
        return out

    monkeypatch.setattr(model_class, "forward", bad_forward)


def test_cli_exits_2_with_one_line_naming_step_and_term(tmp_path, monkeypatch, capsys):
    spec = spec_file(tmp_path, "vae", STEPS)
    poison(monkeypatch, type(build_model(tiny_spec("vae"), build_dataset(tiny_spec("vae")))), "kl", float("inf"))
    capsys.readouterr()
    assert main([str(spec), "--out", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    run_dir = next((tmp_path / "runs" / "tiny").iterdir())
    last = run_dir / "checkpoints" / "last.pt"
    assert err.strip() == (f"error: step 5: loss term 'kl' is inf; training stopped (non-finite loss), the last "
                           f"good checkpoint (step 4) is kept in {last}"), err
    ckpt = load_checkpoint(last)
    assert ckpt["step"] == 4 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["name"] == "kl"] == [4]  # kept
    assert not (run_dir / "metrics.json").exists()  # not a finished run


@pytest.mark.parametrize("value, word", [(float("nan"), "nan"), (-float("inf"), "-inf")])
def test_the_term_is_named_as_it_was_at_the_bad_step(tmp_path, monkeypatch, value, word):
    exp = Experiment(tiny_spec("vae", overrides=[f"{k}={v}" for k, v in STEPS.items()]), out=tmp_path,
                     progress=False)
    poison(monkeypatch, type(exp.model), "recon", value)  # by step 8 every term is nan: step 5's is named
    with pytest.raises(TrainingError, match=rf"^step 5: loss term 'recon' is {word}; training stopped") as info:
        exp.run()
    assert info.value.exit_code == 2 and "'kl'" not in str(info.value)
    assert load_checkpoint(exp.run_dir / "checkpoints" / "last.pt")["step"] == 4
