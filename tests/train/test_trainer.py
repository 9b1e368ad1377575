"""Trainer: exact resume, atomic checkpoints, non-finite loss handling, device-agnostic loop."""
from __future__ import annotations

import json

import pytest
import torch

from causalrep.errors import TrainingError
from causalrep.experiment import Experiment
from causalrep.track.base import read_jsonl
from causalrep.train import load_checkpoint

from conftest import tiny_spec


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["sae", "vae"])  # vae: the reparameterisation noise must resume too
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, kind):
    over = ["train.steps=6", "train.checkpoint_every=3", "train.log_every=1", "train.val_every=3"]
    full = Experiment(tiny_spec(kind, overrides=over), out=tmp_path / "a", progress=False)
    full.run()
    # "interrupt" after step 3: a run whose spec stops at 3, then resume it to 6
    half = Experiment(tiny_spec(kind, overrides=[*over[:-3], "train.steps=3", *over[1:]]), out=tmp_path / "b",
                      progress=False)
    half.run()
    assert load_checkpoint(half.run_dir / "checkpoints" / "last.pt")["step"] == 3
    resumed = Experiment.resume(half.run_dir, ["train.steps=6"], progress=False)
    assert resumed.resuming
    resumed.run()
    a, b = weights(full.model), weights(resumed.model)
    for k in a:
        if k.startswith("latent_bank"):
            continue
        assert torch.equal(a[k], b[k]), k
    assert load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["step"] == 6


def test_checkpoint_is_weights_only_loadable_and_complete(tmp_path):
    exp = Experiment(tiny_spec("sae"), out=tmp_path, progress=False)
    exp.run()
    ckpt = torch.load(exp.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "aux_optimizers", "step", "rng"}
    assert set(ckpt["rng"]) >= {"torch", "data"}
    assert not list((exp.run_dir / "checkpoints").glob("*.tmp"))  # atomic: no temporary left behind


def test_non_finite_loss_stops_naming_step_and_keeps_checkpoint(tmp_path, monkeypatch):
    spec = tiny_spec("vae", overrides=["train.steps=8", "train.checkpoint_every=2", "train.log_every=2"])
    exp = Experiment(spec, out=tmp_path, progress=False)
    model = exp.model
    calls = {"n": 0}
    original = type(model).forward

    def forward(self, x):
        calls["n"] += 1
        out = original(self, x)
        if calls["n"] >= 5:  # step 5 produces a NaN KL term
            out["kl"] = out["kl"] * float("nan")
            out["loss"] = out["recon"] + out["kl"]
        return out

    monkeypatch.setattr(type(model), "forward", forward)
    with pytest.raises(TrainingError) as info:
        exp.run()
    msg = str(info.value)
    assert msg.startswith("step 5: loss term 'kl' is nan;") and "checkpoint (step 4)" in msg
    ckpt = load_checkpoint(exp.run_dir / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4  # the last good checkpoint survives
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    logged = read_jsonl(exp.run_dir / "metrics.jsonl")
    assert [r["step"] for r in logged if r["name"] == "loss"] == [2, 4]  # tracked metrics survive


def test_run_folder_contents_and_metrics(tmp_path):
    exp = Experiment(tiny_spec("sae"), out=tmp_path, progress=False)
    metrics = exp.run()
    d = exp.run_dir
    for f in ["spec.yaml", "metrics.json", "metrics.jsonl", "report.md", "reconstructions.png", "samples_hybrid.png",
              *[f"traversal_{n}.png" for n in exp.graph.nodes]]:
        assert (d / f).is_file(), f
    saved = json.loads((d / "metrics.json").read_text())
    assert saved == metrics
    assert {"val_recon_error", "val_recon_error_mean_image"} <= set(saved)
    assert saved["val_recon_error"] > 0 and saved["val_recon_error_mean_image"] > 0
    report = (d / "report.md").read_text()
    assert f"| val_recon_error | {saved['val_recon_error']:.6g} |" in report and "![reconstructions]" in report


def test_aux_groups_get_only_their_own_loss_gradients(tmp_path):
    """A model with an extra parameter group (e.g. a discriminator): the main loss never moves it,
    its own loss moves nothing else (checked on .grad) — without the trainer knowing the model type."""
    from causalrep.build import build_dataset, build_model, build_split
    from causalrep.models.base import ModelOutput
    from causalrep.track.base import JsonlTracker
    from causalrep.train import Trainer

    spec = tiny_spec("ae")
    dataset = build_dataset(spec)
    model = build_model(spec)
    critic = torch.nn.Linear(4, 1)
    model.critic = critic
    model.aux_parameter_groups = lambda: {"critic": list(critic.parameters())}
    base_forward = type(model).forward

    def forward(x):
        out = base_forward(model, x)
        z = model.encode(x)
        # main loss depends on the critic (like FactorVAE's TC term); the aux loss on the encoder's output
        main = out.loss + critic(z).mean()
        return ModelOutput(loss=main, recon=out.recon, aux={"critic": -critic(z).mean() + (z ** 2).mean()})

    model.forward = forward
    trainer = Trainer(model=model, dataset=dataset, split=build_split(spec, dataset), run_dir=tmp_path,
                      tracker=JsonlTracker(tmp_path), steps=1, batch_size=4, progress=False)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = trainer.next_batch()
    out = model(x)
    # expected gradients, computed separately
    g_main = torch.autograd.grad(out.loss, trainer.main_params, retain_graph=True, allow_unused=True)
    g_aux = torch.autograd.grad(out.aux["critic"], list(critic.parameters()))
    trainer.train_step(x)  # the AE forward is deterministic: same graph, same gradients
    for p, g in zip(critic.parameters(), g_aux):
        assert torch.allclose(p.grad, g)  # the critic's grad is its own loss's, not the main loss's
    enc = model.encoder.head[-1].weight
    i = [k for k, p in enumerate(trainer.main_params) if p is enc][0]
    assert torch.allclose(enc.grad, g_main[i])  # the encoder's grad is the main loss's alone
    assert "critic" in trainer.aux_optimizers and all(not torch.equal(before[n], p) for n, p in model.named_parameters()
                                                      if n.startswith("critic"))


def test_fit_start_hooks_fire_on_fresh_and_resumed_runs(tmp_path, monkeypatch):
    # on_fit_start runs every time fit() starts (e.g. the ICM win-matrix probe); before_fit only on a fresh run
    # (e.g. the ICM identity initialisation, which must not redo itself over trained experts)
    calls = []
    spec = tiny_spec("sae", overrides=["train.steps=2", "train.checkpoint_every=2"])
    exp = Experiment(spec, out=tmp_path, progress=False)
    cls = type(exp.model)
    monkeypatch.setattr(cls, "on_fit_start", lambda self, trainer: calls.append(("start", trainer.step)),
                        raising=True)
    monkeypatch.setattr(cls, "before_fit", lambda self, trainer: calls.append(("before", trainer.step)),
                        raising=True)
    exp.run()
    resumed = Experiment.resume(exp.run_dir, ["train.steps=3"], progress=False)
    resumed.run()
    assert calls == [("start", 0), ("before", 0), ("start", 2)]


def test_model_track_metrics_are_logged_at_each_validation_step(tmp_path, monkeypatch):
    # e.g. the ICM committee's win statistics over training: scalars in context "val" at the validation steps
    spec = tiny_spec("ae", overrides=["train.steps=4", "train.val_every=2", "train.checkpoint_every=4"])
    exp = Experiment(spec, out=tmp_path, progress=False)
    seen = []

    def track_metrics(self):
        seen.append(len(seen))
        return {"probe_score": 0.25 * len(seen)}

    monkeypatch.setattr(type(exp.model), "track_metrics", track_metrics, raising=True)
    exp.run()
    rows = [(r["step"], r["value"]) for r in read_jsonl(exp.run_dir / "metrics.jsonl")
            if r["name"] == "probe_score" and r["context"] == "val"]
    assert rows == [(2, 0.25), (4, 0.5)]


def test_a_model_can_stop_training_at_a_validation_step_with_a_checkpoint(tmp_path, monkeypatch):
    # e.g. the ICM committee's convergence criterion (004 sec 3 item 2b): asked after each validation step only
    spec = tiny_spec("ae", overrides=["train.steps=10", "train.val_every=2", "train.checkpoint_every=100"])
    exp = Experiment(spec, out=tmp_path, progress=False)
    asked = []

    def should_stop(self, trainer):
        asked.append(trainer.step)
        return "enough" if trainer.step == 6 else None

    monkeypatch.setattr(type(exp.model), "should_stop", should_stop, raising=True)
    metrics = exp.run()
    assert asked == [2, 4, 6]
    assert metrics["step"] == 6 and metrics["stopped"] == "enough"
    assert load_checkpoint(exp.run_dir / "checkpoints" / "last.pt")["step"] == 6
    rows = [(r["step"], r["value"]) for r in read_jsonl(exp.run_dir / "metrics.jsonl") if r["name"] == "stopped_at"]
    assert rows == [(6, 6.0)]


def test_scheduled_lr_hand_values():
    from causalrep.train.trainer import scheduled_lr

    kw = dict(lr=1e-3, steps=110)
    assert scheduled_lr(1, **kw) == scheduled_lr(110, **kw) == 1e-3  # constant: 001 A.2.2
    # warm-up of 10: step/10 of lr; then the half cosine over the remaining 100 steps
    assert scheduled_lr(1, **kw, schedule="cosine", warmup=10) == pytest.approx(1e-4)
    assert scheduled_lr(10, **kw, schedule="cosine", warmup=10) == pytest.approx(1e-3)
    assert scheduled_lr(60, **kw, schedule="cosine", warmup=10) == pytest.approx(5e-4)  # half way: cos(pi/2) = 0
    assert scheduled_lr(35, **kw, schedule="cosine", warmup=10) == pytest.approx(1e-3 * (1 + 2 ** -0.5) / 2)
    assert scheduled_lr(110, **kw, schedule="cosine", warmup=10) == pytest.approx(0.0, abs=1e-12)
    assert scheduled_lr(5, **kw, schedule="constant", warmup=10) == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        scheduled_lr(20, **kw, schedule="step")


def test_trainer_steps_with_the_scheduled_rate_and_resumes_it(tmp_path):
    from causalrep.train.trainer import scheduled_lr

    over = ["train.steps=4", "train.checkpoint_every=2", "train.val_every=4", "train.lr_schedule=cosine",
            "train.lr_warmup_steps=1"]
    exp = Experiment(tiny_spec("ae", overrides=over), out=tmp_path / "a", progress=False)
    exp.run()
    # the rate of the last step taken (step 4 of 4) is the schedule's end: 0
    ckpt = load_checkpoint(exp.run_dir / "checkpoints" / "last.pt")
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(scheduled_lr(4, lr=5e-4, steps=4,
                                                                                    schedule="cosine", warmup=1))
    # a run killed after its step-2 checkpoint and resumed ends with the weights of the uninterrupted one
    half = Experiment(tiny_spec("ae", overrides=over), out=tmp_path / "b", progress=False)

    def crash(trainer):
        if trainer.step == 3:
            raise KeyboardInterrupt
    half.model.after_step = crash
    with pytest.raises(KeyboardInterrupt):
        half.run()
    assert load_checkpoint(half.run_dir / "checkpoints" / "last.pt")["step"] == 2
    resumed = Experiment.resume(half.run_dir, progress=False)
    resumed.run()
    a, b = weights(exp.model), weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("latent_bank"))
