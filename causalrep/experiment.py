"""Experiment (spec -> run folder: train, evaluate, report); load_run (run folder -> model) is build.load_run."""
from __future__ import annotations

import datetime as _dt
import inspect
from pathlib import Path
from typing import Any

import attrs
import torch

from .build import Run, build_dataset, build_graph, build_model, build_split, load_run  # noqa: F401  (Run, load_run: re-exported)
from .data.base import GroundTruthDataset
from .graph.latent import LatentGraph
from .errors import SpecError
from .metrics import METRICS
from .metrics.curves import LEAST_SAMPLES, CurveEvaluator, EarlyStopping
from .models.trainable import Trainable
from .report import read_baseline, write_report
from .spec import dump_spec, load_spec, to_dict
from .spec.schema import Spec
from .track import make_tracker
from .train import CHECKPOINT, Trainer, distributed, has_checkpoint
from .train.transfer import NothingToTrain, UnusableStart, load_initial_weights


def new_run_dir(out: str | Path, name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    base = Path(out) / name
    path, i = base / stamp, 1
    while path.exists():
        i += 1
        path = base / f"{stamp}-{i}"
    path.mkdir(parents=True)
    return path


class Experiment:
    """One run of a spec: builds the objects, trains, evaluates and writes the report into run_dir.

    run_dir holds spec.yaml (resolved), checkpoints/last.pt (and last.prev.pt, the one before), metrics.jsonl,
    metrics.json (written last: a run is finished once it exists) and PNGs.
    Under torchrun every process builds the same objects and trains its shard of each batch; rank 0
    creates the run folder (the others are told its path) and alone writes into it.
    """

    def __init__(self, spec: Spec, *, out: str | Path = "runs", run_dir: str | Path | None = None,
                 device: str | None = None, progress: bool = True):
        if device is not None:
            spec = attrs.evolve(spec, train=attrs.evolve(spec.train, device=device))
        self.spec = spec
        self.baseline = read_baseline(spec.evaluate.baseline)  # checked before anything is made or trained
        self.out = Path(out)
        distributed.init(spec.train.device)  # joins torchrun's process group; nothing in a plain run
        world = distributed.world_size()
        if spec.train.batch_size % world:
            raise SpecError("train.batch_size", f"{spec.train.batch_size} is the global batch and must divide evenly "
                                                f"over the {world} processes")
        self.resuming = run_dir is not None and has_checkpoint(Path(run_dir) / CHECKPOINT)  # or last.prev.pt
        if run_dir is None:  # rank 0 picks the timestamped folder; every rank must use the same one
            run_dir = distributed.broadcast_object(str(new_run_dir(out, spec.name)) if distributed.is_main() else None)
        self.run_dir = Path(run_dir)
        if distributed.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.dataset: GroundTruthDataset = build_dataset(spec)
        self.graph: LatentGraph = build_graph(spec, self.dataset.true_graph)
        self.split = build_split(spec, self.dataset)
        self.model: Trainable = build_model(spec, self.dataset, self.graph)
        if spec.train.init_from and not self.resuming:  # a resumed run continues from its own checkpoint
            try:
                load_initial_weights(self.model, spec.train.init_from)
            except UnusableStart as exc:
                raise SpecError("train.init_from", exc.message) from None

    @classmethod
    def resume(cls, run_dir: str | Path, overrides=(), *, device: str | None = None, progress: bool = True):
        """Continue a run from its last checkpoint (overrides may e.g. raise train.steps)."""
        run_dir = Path(run_dir)
        spec = load_spec(run_dir / "spec.yaml", overrides)
        out = run_dir.parent.parent
        return cls(spec, out=out, run_dir=run_dir, device=device, progress=progress)

    def run(self) -> dict[str, Any]:
        spec = self.spec
        if spec.train.threads:
            torch.set_num_threads(spec.train.threads)
        main = distributed.is_main()  # distributed: one spec.yaml, one metrics.jsonl, one Aim run, from rank 0
        if main:
            (self.run_dir / "spec.yaml").write_text(dump_spec(spec))
        repo = Path(spec.track.repo) if spec.track.repo else self.out
        tracker = make_tracker(spec.track.kind, run_dir=self.run_dir, repo=repo,
                               experiment=spec.track.experiment or spec.name,
                               run_name=f"{self.run_dir.parent.name}/{self.run_dir.name}") \
            if main else distributed.NullTracker()  # run name e.g. sae6/s0 in a sweep, sae6/<time stamp> alone
        try:
            tracker.log_params(to_dict(spec))
            t = spec.train
            try:
                trainer = Trainer(model=self.model, dataset=self.dataset, split=self.split, run_dir=self.run_dir,
                                  tracker=tracker, steps=t.steps, batch_size=t.batch_size, lr=t.lr, betas=t.betas,
                                  precision=t.precision, device=t.device, checkpoint_every=t.checkpoint_every,
                                  log_every=t.log_every, val_every=t.val_every,
                                  val_samples=t.val_samples, seed=spec.seed,
                                  progress=self.progress, channels_last=t.channels_last, compile=t.compile,
                                  resident=spec.data.resident, trainable=t.trainable, lr_schedule=t.lr_schedule,
                                  lr_warmup_steps=t.lr_warmup_steps, **self.curve_options(main))
            except NothingToTrain as exc:  # the trainer takes plain values; the spec reader names the key
                raise SpecError("train.trainable", str(exc)) from None
            if self.resuming:
                trainer.resume()  # on every rank
            trainer.fit()
            if not main:
                return {}  # rank 0 stores the latents, evaluates and writes the report
            if self.model.can("hybrid"):  # stored latents to sample from (not the ICM committee's scores)
                trainer.store_hybrid_latents(spec.seed)
            trainer.checkpoint()  # the final checkpoint carries the stored hybrid latents
            metrics = self.evaluate(trainer.device, step=trainer.step)
            if trainer.stopped:
                metrics["stopped"] = trainer.stopped
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and k != "step":
                    tracker.log_metric(k, v, step=trainer.step, context="eval")
            write_report(model=self.model, dataset=self.dataset, split=self.split, run_dir=self.run_dir,
                         metrics=metrics, tracker=tracker, step=trainer.step,
                         traversal_steps=spec.evaluate.traversal_steps, sampling=spec.evaluate.sampling,
                         seed=spec.seed, baseline=self.baseline)
            return metrics
        finally:
            tracker.close()

    def curve_options(self, main: bool) -> dict[str, Any]:
        """The trainer's curve evaluator and early stopping (evaluate.every, stop_on), built on rank 0 only."""
        ev = self.spec.evaluate
        if not ev.every or not main:
            return {}
        index = self.split.val[:ev.every_samples]
        if len(index) < LEAST_SAMPLES:
            raise SpecError("evaluate.every_samples", f"the curves need at least {LEAST_SAMPLES} validation images; "
                                                      f"the val split has {len(self.split.val)}")
        stop = EarlyStopping(ev.stop_on, patience=ev.stop_patience, mode=ev.stop_mode,
                             min_delta=ev.stop_min_delta) if ev.stop_on else None
        curves = CurveEvaluator(self.dataset, index, ev.every_metrics, dci=ev.every_dci, sap=ev.sap)
        return {"curves": curves, "curve_every": ev.every, "early_stopping": stop}

    def evaluate(self, device: torch.device, step: int | None = None) -> dict[str, Any]:
        metrics: dict[str, Any] = {"step": self.spec.train.steps if step is None else step}
        for name in self.spec.evaluate.metrics:
            fn = METRICS.get(name)
            metrics.update(fn(model=self.model, dataset=self.dataset, split=self.split,
                              n=self.spec.evaluate.val_samples, loss=self.spec.train.loss, device=device,
                              **metric_options(fn, self.spec.evaluate)))
        return metrics


def metric_options(fn, evaluate) -> dict[str, Any]:
    """The evaluate.* settings a metric declares as keyword parameters (dci's evaluate.dci estimator)."""
    params = inspect.signature(fn).parameters
    return {f.name: getattr(evaluate, f.name) for f in attrs.fields(type(evaluate))
            if f.name in params and f.name not in ("n", "loss", "device")}
