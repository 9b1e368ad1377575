"""Model-agnostic trainer: Adam, device/precision choice, logging, checkpoints, exact resume."""
from __future__ import annotations

import contextlib
import inspect
import math
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.base import GroundTruthDataset, Split
from ..errors import CheckpointError, TrainingError, one_line
from ..metrics.curves import CurveEvaluator, EarlyStopping
from ..metrics.reconstruction import batched_images
from ..models.trainable import FitContext, Trainable, copy_optimizer_state
from ..track.base import Tracker
from . import distributed
from .checkpoint import CHECKPOINT, load_checkpoint, load_latest, rng_state, save_checkpoint, set_rng_state
from .transfer import trainable_parameters


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


def describe_device(device: torch.device | str) -> str:
    """A device in words for benchmark records: the GPU's name, or the CPU model and torch's thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {name}, {torch.get_num_threads()} threads"


def scheduled_lr(step: int, *, lr: float, steps: int, schedule: str = "constant", warmup: int = 0) -> float:
    """The main optimiser's learning rate at optimiser step `step` (1-based): a linear warm-up over `warmup`
    steps (step/warmup of lr), then constant or a half cosine from lr to 0 at `steps` (Loshchilov & Hutter
    2017, SGDR's schedule without restarts). A function of the step alone, so a resumed run continues it
    exactly; the aux optimisers (FactorVAE's discriminator) keep their constant rate."""
    if warmup and step <= warmup:
        return lr * step / warmup
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        span = max(steps - warmup, 1)
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))
    raise ValueError(f"train.lr_schedule: unknown schedule {schedule!r}; valid: constant, cosine")


class Trainer:
    """Fits any Trainable (models/trainable.py): the model's forward returns ModelOutput(loss=..., terms); the
    trainer never looks at the model's type, and its hooks see a read-only FitContext, not the trainer. Batches are drawn uniformly from the training split with a
    dedicated torch.Generator whose state is checkpointed (the "data position").

    Under torchrun (causalrep.train.distributed) every process runs this loop on its shard of each
    batch; batch_size is the global batch. Rank 0 alone logs, validates and writes checkpoints.
    """

    def __init__(self, *, model: Trainable, dataset: GroundTruthDataset, split: Split, run_dir: str | Path,
                 tracker: Tracker, steps: int, batch_size: int, lr: float = 5e-4,
                 betas: tuple[float, float] = (0.9, 0.999), precision: str = "auto", device: str = "auto",
                 checkpoint_every: int = 1000, log_every: int = 50, val_every: int = 1000, val_samples: int = 512,
                 seed: int = 0, progress: bool = True, channels_last: bool = False, compile: bool = False,
                 resident: str = "auto", resident_max_bytes: int = 8 << 30, trainable: str = "all",
                 lr_schedule: str = "constant", lr_warmup_steps: int = 0, curves: CurveEvaluator | None = None,
                 curve_every: int = 0, early_stopping: EarlyStopping | None = None):
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if batch_size % self.world:  # Experiment names train.batch_size before it gets here
            raise ValueError(f"batch_size {batch_size} is the global batch and must divide evenly over the "
                             f"{self.world} processes")
        self.device = resolve_device(device)
        if self.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", distributed.local_rank())  # one GPU per process
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        # the compiled module shares parameters with self.model; only the training forward goes through it
        self.forward = torch.compile(self.model) if compile else self.model
        self.compile, self.ddp = compile, None  # DistributedDataParallel wraps the model when fit() starts
        self.dataset, self.split = dataset, split
        self.run_dir = Path(run_dir)
        self.ckpt_path = self.run_dir / CHECKPOINT
        self._last_ckpt: tuple[int, Path] | None = None  # (step, file) of the last good checkpoint, for errors
        self._keep_previous = True  # False once after resuming past a damaged last.pt: it is not kept as previous
        self.tracker = tracker
        self.steps, self.batch_size = steps, batch_size
        self.checkpoint_every, self.log_every, self.val_every = checkpoint_every, log_every, val_every
        self.val_index = split.val[:val_samples]
        self.progress = progress
        fused = self.device.type == "cuda"  # fused Adam kernels exist for CUDA tensors
        # a model may train extra parameter groups on their own losses (FactorVAE's discriminator):
        # model.aux_parameter_groups() -> {name: params}, and its ModelOutput carries aux={name: loss}
        self.aux_groups = {k: list(v) for k, v in model.aux_parameter_groups().items()}
        aux_ids = {id(p) for ps in self.aux_groups.values() for p in ps}
        self.main_params = [p for p in self.model.parameters() if id(p) not in aux_ids]
        self.trainable = trainable
        if trainable != "all":  # 001 Table 3: update the encoder only or the decoder only; freeze the rest
            probe = dataset.images_at(split.train[:2]).to(self.device).contiguous(memory_format=self.memory_format)
            keep = {id(p) for p in trainable_parameters(self.model, trainable, probe, self.main_params)}
            for p in self.main_params:
                p.requires_grad_(id(p) in keep)  # frozen: no gradient is computed, .grad stays None
            self.main_params = [p for p in self.main_params if id(p) in keep]
        self.optimizer = torch.optim.Adam(self.main_params, lr=lr, betas=tuple(betas), fused=fused)
        self.lr, self.lr_schedule, self.lr_warmup_steps = lr, lr_schedule, lr_warmup_steps
        self.aux_optimizers = {k: torch.optim.Adam(ps, **model.aux_optimizer_options(k, lr=lr, betas=tuple(betas)),
                                                   fused=fused) for k, ps in self.aux_groups.items()}
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.precision = precision
        self.data_gen = torch.Generator().manual_seed(seed)
        self.train_index = torch.as_tensor(split.train)
        self.step = 0
        self.extras: dict[str, torch.Tensor] = {}
        self.resident = self._make_resident(resident, resident_max_bytes)
        # disentanglement curves (evaluate.every): the evaluator's metrics every curve_every steps, on rank 0
        if early_stopping is not None and (curves is None or not curve_every):
            raise ValueError("early stopping follows a curve: it needs a curve evaluator and curve_every > 0")
        self.curves, self.curve_every, self.early_stopping = curves, curve_every, early_stopping

    # -- pieces --------------------------------------------------------------------------------
    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _make_resident(self, mode: str, max_bytes: int) -> torch.Tensor | None:
        """The training split as uint8 (N, C, H, W) on the training device, or None to render per batch.

        auto: on CUDA when the split fits in max_bytes (3D-Shapes' 336k training images at 64x64 are
        4.1 GB); then a batch is one gather on the device, no host work per step (DESIGN sec 6).
        """
        if mode == "never" or (mode == "auto" and self.device.type != "cuda"):
            return None
        d = self.dataset
        if mode == "auto" and len(self.train_index) * d.channels * d.resolution ** 2 > max_bytes:
            return None
        out = torch.empty((len(self.train_index), d.channels, d.resolution, d.resolution), dtype=torch.uint8,
                          device=self.device)
        chunk = 4096
        for start in tqdm(range(0, len(out), chunk), desc="data to device", disable=not self.progress,
                          mininterval=2.0):
            x = d.images_at(self.train_index[start:start + chunk].numpy()).to(self.device)
            out[start:start + chunk] = (x * 255).round_().to(torch.uint8)
        return out

    def next_batch(self) -> torch.Tensor:
        """Images of a batch drawn uniformly from the training split; extras (if the model asks) in self.extras.

        Distributed: every rank draws the same global batch from the same generator and keeps its shard
        pick[rank::world]. The model's loss is a batch mean over equal shards, so the gradient
        DistributedDataParallel averages over the ranks is the single-process gradient of the global
        batch (tests/train/test_ddp.py checks the weights against a single-process run).
        """
        pick = torch.randint(0, len(self.train_index), (self.batch_size,), generator=self.data_gen)
        self.extras = self.batch_extras(pick)
        pick = pick[self.rank::self.world]
        if self.resident is not None:
            x = self.resident[pick.to(self.device, non_blocking=True)].float().div_(255)
        else:
            x = self.dataset.images_at(self.train_index[pick].numpy()).to(self.device, non_blocking=True)
        return x.contiguous(memory_format=self.memory_format)

    def batch_extras(self, pick: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the model's forward takes beside the images, by name (model.batch_keys):

        - "factors": (B, K) int64 factor indices of the batch's images;
        - "labels": (B, L) float32 dataset.labels(factors), the variables' values (CausalVAE's u, 003);
        - any other key: dataset.batch_extra(key, B, generator) (e.g. the ICM committee's canonical
          images, drawn independently of the batch, 004 sec 3).
        Drawn from the trainer's own generator, so a resumed run continues the same stream. `pick` is the
        global batch; each rank keeps the shard [rank::world] of every companion, as of the images.
        """
        extras: dict[str, torch.Tensor] = {}
        for key in self.model.batch_keys:
            if key in ("factors", "labels"):
                f = self.dataset.index_to_factors(self.train_index[pick[self.rank::self.world]].numpy())
                if key == "labels":  # (B, L) float ground-truth values of the graph's variables (CausalVAE's u)
                    extras[key] = torch.as_tensor(self.dataset.labels(f), dtype=torch.float32).to(self.device)
                else:
                    extras[key] = torch.as_tensor(f, dtype=torch.int64).to(self.device, non_blocking=True)
            else:  # drawn for the global batch on every rank, so the generators stay in step
                extra = self.dataset.batch_extra(key, len(pick), self.data_gen)
                extras[key] = extra[self.rank::self.world].to(self.device)
        return extras

    def checkpoint(self) -> None:
        """Rank 0 writes checkpoints/last.pt (the unwrapped model: loadable with or without DDP), keeping the one
        before it as checkpoints/last.prev.pt; a failed write (no space left) stops training, both files intact."""
        if self.rank == 0:
            payload = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                       "aux_optimizers": {k: o.state_dict() for k, o in self.aux_optimizers.items()},
                       "step": self.step, "rng": rng_state(self.data_gen)}
            try:
                save_checkpoint(self.ckpt_path, payload, keep_previous=self._keep_previous)
            except CheckpointError as exc:
                raise CheckpointError(exc.path, f"{exc.message}; training stopped at step {self.step}") from exc
            self._keep_previous = True
        self._last_ckpt = (self.step, self.ckpt_path)

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from `path`, or from checkpoints/last.pt, falling back (with a warning naming the file) to
        last.prev.pt when last.pt is truncated or corrupted."""
        if path is None:
            ckpt, path = load_latest(self.ckpt_path, map_location=self.device, warn=self.rank == 0)
            self._keep_previous = path == self.ckpt_path  # a damaged last.pt is overwritten, never kept as previous
        else:
            ckpt = load_checkpoint(path, map_location=self.device)
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            for k, o in self.aux_optimizers.items():
                o.load_state_dict(ckpt["aux_optimizers"][k])
            set_rng_state(ckpt["rng"], self.data_gen)
            self.step = int(ckpt["step"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:  # another model's, or an incomplete one
            what = f"no {exc.args[0]!r} entry" if isinstance(exc, KeyError) else \
                f"{type(exc).__name__}: {' '.join(str(exc).split())}"  # load_state_dict's report, on one line
            raise CheckpointError(path, f"cannot resume this run from it ({one_line(what, 300)})") from None
        self._last_ckpt = (self.step, Path(path))
        if self.world > 1:  # every rank loaded rank 0's model-noise state; give each its own stream again
            self._split_torch_rng()

    def _split_torch_rng(self) -> None:
        """Distributed: one shared draw, offset by the rank, seeds each process's torch generator, so
        stochastic models (a VAE's reparameterisation noise) draw independent noise per shard."""
        base = int(torch.randint(0, 2 ** 62, (), dtype=torch.int64))  # the same on every rank
        torch.manual_seed(base + self.rank)

    def _wrap_distributed(self) -> None:
        """DistributedDataParallel around the model for the training forward only (validation, evaluation
        and checkpoints use self.model). Wrapped after before_fit and resume: DDP's constructor copies
        rank 0's parameters and buffers to every rank."""
        if self.world == 1 or self.ddp is not None:
            return
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # find_unused_parameters only where the model declares that a step's loss may leave parameters out (an ICM
        # expert that won no image): it costs one autograd-graph walk per step
        # buffers are synced once here, not before every forward: no training step changes a buffer
        # differently on different ranks (the latent bank is filled after training)
        sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(
            DistributedDataParallel).parameters else {"broadcast_buffers": False}  # the name before torch 2.12
        self.ddp = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=self.model.find_unused_parameters, **sync)
        self.forward = torch.compile(self.ddp) if self.compile else self.ddp
        if self.step == 0:
            self._split_torch_rng()

    @torch.no_grad()
    def validate(self) -> float:
        self.model.eval()
        total = 0.0
        for x in batched_images(self.dataset, self.val_index, 256, self.device):
            with self.autocast():
                total += float(self.model.validation_error(x)) * len(x)
        self.model.train()
        return total / max(len(self.val_index), 1)

    def _fail(self, keys: list[str], values: torch.Tensor, local_bad: torch.Tensor, bad_step: torch.Tensor) -> None:
        """TrainingError naming the first step whose loss was not finite and the terms that were not, e.g.
        "step 7: loss term 'kl' is nan". values: (T,) the terms `keys` at this process's first bad step
        local_bad; distributed, the ranks pool what they saw at the global first bad step bad_step."""
        inf = float("inf")
        codes = torch.where(values.isnan(), 1, torch.where(values == inf, 2, torch.where(values == -inf, 3, 0)))
        codes = torch.where(local_bad == bad_step, codes, 0)  # (T,) 0 finite (or unknown), 1 nan, 2 inf, 3 -inf
        if self.world > 1:  # every rank is here at the same check (bad_step is global)
            codes = distributed.all_reduce_(codes, "max")
        words = {1: "nan", 2: "inf", 3: "-inf"}
        bad = [(k, words[c]) for k, c in zip(keys, codes.tolist()) if c]
        bad = [(k, w) for k, w in bad if k != "loss"] or bad  # the total is named only when no term explains it
        what = ", ".join(f"the loss is {w}" if k == "loss" else f"loss term {k!r} is {w}" for k, w in bad) \
            or "the loss is not finite"
        kept = f"the last good checkpoint (step {self._last_ckpt[0]}) is kept in {self._last_ckpt[1]}" \
            if self._last_ckpt is not None else "no checkpoint had been written yet"
        raise TrainingError(f"step {int(bad_step)}: {what}; training stopped (non-finite loss), {kept}")

    def train_step(self, x: torch.Tensor):
        """One optimiser step on batch x; returns the model's ModelOutput (no host sync)."""
        with self.autocast():
            out = self.forward(x, **self.extras)
        aux = out.get("aux", {})
        for opt in (self.optimizer, *self.aux_optimizers.values()):
            opt.zero_grad(set_to_none=True)
        if self.aux_groups:
            # each loss updates only its own group: backward(inputs=...) accumulates into those tensors alone
            out.loss.backward(inputs=self.main_params, retain_graph=bool(aux))
            for name, loss in aux.items():
                loss.backward(inputs=self.aux_groups[name])
        else:
            out.loss.backward()
        for group in self.optimizer.param_groups:  # the step being taken is self.step + 1
            group["lr"] = scheduled_lr(self.step + 1, lr=self.lr, steps=self.steps, schedule=self.lr_schedule,
                                       warmup=self.lr_warmup_steps)
        self.optimizer.step()
        for opt in self.aux_optimizers.values():
            opt.step()
        return out

    def context(self) -> FitContext:
        """The read-only view of this trainer that the model's hooks receive (models/trainable.py FitContext)."""
        return FitContext(step=self.step, steps=self.steps, val_every=self.val_every, device=self.device,
                          dataset=self.dataset, val_index=self.split.val, progress=self.progress,
                          main_process=self.rank == 0, next_batch=self.next_batch, autocast=self.autocast,
                          log_fn=self._log_metric, copy_state_fn=self._copy_optimizer_state)

    def _log_metric(self, name: str, value: float, step: int, context: str) -> None:
        self.tracker.log_metric(name, value, step=step, context=context)

    def _copy_optimizer_state(self, dst, src) -> None:
        copy_optimizer_state(self.optimizer, dst, src)

    # -- loop ------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Run from self.step to self.steps; returns the last logged training terms."""
        model = self.model
        model.train()
        self.stopped: str | None = None  # the model's reason when it stopped training early (should_stop)
        model.on_fit_start(self.context())  # fresh or resumed, e.g. the ICM win-matrix probe
        if self.step == 0:
            model.before_fit(self.context())  # e.g. the ICM experts' approximate-identity initialisation (004 sec 3)
        self._wrap_distributed()
        main = self.rank == 0  # distributed: rank 0 alone logs, validates and checkpoints
        sums: dict[str, torch.Tensor] = {}
        count = 0
        first_bad = torch.tensor(-1, device=self.device)  # device-side: no host sync per step
        bad_keys: list[str] | None = None  # the terms' names, and their values at the first bad step
        bad_values = torch.zeros(0, device=self.device)
        last: dict[str, float] = {}
        bar = tqdm(total=self.steps, initial=self.step, desc="train", disable=not (self.progress and main),
                   dynamic_ncols=True, mininterval=2.0)
        while self.step < self.steps:
            out = self.train_step(self.next_batch())
            terms = {k: v.detach().float() for k, v in out.items() if torch.is_tensor(v) and v.dim() == 0}
            terms.update({f"aux_{k}": v.detach().float() for k, v in out.get("aux", {}).items()})
            self.step += 1
            model.after_step(self.context())  # e.g. the ICM committee reviving inactive experts
            finite = torch.isfinite(out.loss.detach())
            for v in out.get("aux", {}).values():  # an aux loss (a discriminator's) trains parameters too
                finite = finite & torch.isfinite(v.detach())
            newly_bad = (first_bad < 0) & ~finite
            first_bad = torch.where(newly_bad, self.step, first_bad)  # scalar: no per-step copy
            if list(terms) != bad_keys:  # the first step (a model whose terms change loses what was kept)
                bad_keys, bad_values = list(terms), torch.zeros(len(terms), device=self.device)
            if terms:  # the terms of the first bad step are kept on the device, to be named if training stops
                bad_values = torch.where(newly_bad, torch.stack(list(terms.values())), bad_values)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            due_log = self.step % self.log_every == 0 or self.step == self.steps
            due_ckpt = self.step % self.checkpoint_every == 0 or self.step == self.steps
            due_val = self.step % self.val_every == 0 or self.step == self.steps
            if due_log or due_ckpt or due_val:
                local_bad = first_bad
                if self.world > 1:  # every rank stops if any rank saw a non-finite loss (no rank left waiting)
                    first_bad = distributed.all_reduce_(torch.where(first_bad < 0, self.steps + 1, first_bad), "min")
                    first_bad = torch.where(first_bad > self.steps, -1, first_bad)
                if int(first_bad) >= 0:  # checked before anything is logged or saved
                    self._fail(bad_keys or [], bad_values, local_bad, first_bad)
                last = {k: float(v) / count for k, v in self._global_mean(sums).items()}
                if main:
                    for k, v in last.items():
                        self.tracker.log_metric(k, v, step=self.step, context="train")
                bar.set_postfix(loss=f"{last['loss']:.4g}")
                sums, count = {}, 0
            if due_val and main:
                self.tracker.log_metric(self.model.validation_metric, self.validate(), step=self.step,
                                        context="val")
                for name, value in self.model.track_metrics().items():
                    self.tracker.log_metric(name, value, step=self.step, context="val")
                for name, image in self.model.track_images().items():
                    self.tracker.log_image(name, image, step=self.step, context="train")
            stop = model.should_stop(self.context()) if due_val and main else None
            due_curve = bool(self.curve_every) and (self.step % self.curve_every == 0 or self.step == self.steps)
            if due_curve and main:
                stop = self.curve_point() or stop
            if (due_val or due_curve) and self.world > 1:  # rank 0 decides (and keeps its reason); every rank stops with it
                flag = distributed.all_reduce_(torch.tensor(float(stop is not None), device=self.device), "max")
                stop = stop or ("stopped by rank 0" if int(flag) else None)
            if due_ckpt or stop:
                self.checkpoint()
            bar.update(1)
            if stop:
                self.stopped = stop
                if main:
                    self.tracker.log_metric("stopped_at", self.step, step=self.step, context="train")
                    tqdm.write(f"step {self.step}: {stop}; training stops here")
                break
        bar.close()
        return last

    def curve_point(self) -> str | None:
        """One point of the disentanglement curves: the evaluator's values logged in context "curve" (Aim and
        metrics.jsonl), a progress line, and early stopping's verdict (a reason to stop, or None)."""
        seconds = self.curves.seconds
        values = self.curves(self.model, self.device)
        seconds = self.curves.seconds - seconds
        for name, value in values.items():
            self.tracker.log_metric(name, value, step=self.step, context="curve")
        self.tracker.log_metric("curve_seconds", seconds, step=self.step, context="curve")
        shown = ", ".join(f"{k.replace('dci_disentanglement', 'dci_d')} {v:.3f}" for k, v in values.items()
                          if k in ("dci_disentanglement", "mig", "sap", "irs", "modexp_modularity"))
        if self.progress:
            tqdm.write(f"step {self.step}: {shown} ({seconds:.1f} s)")
        if self.early_stopping is None:
            return None
        return self.early_stopping.update(self.step, values[self.early_stopping.key])

    def _global_mean(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Distributed: the ranks' term sums averaged, i.e. the terms of the global batch (equal shards)."""
        if self.world == 1:
            return sums
        keys = sorted(sums)  # every rank runs the same model, so the same terms
        packed = distributed.all_reduce_(torch.stack([torch.as_tensor(sums[k], device=self.device) for k in keys]))
        return dict(zip(keys, packed / self.world))

    @torch.no_grad()
    def store_hybrid_latents(self, seed: int) -> None:
        """Encode N training images chosen uniformly at random and keep them (001 sec 2.3)."""
        n = self.model.latent_bank.shape[0]
        idx = np.random.default_rng(seed).choice(self.split.train, size=n, replace=False)
        self.model.eval()
        self.model.store_latents(self.model.encode(self.dataset.images_at(idx).to(self.device)).float())
        self.model.train()
