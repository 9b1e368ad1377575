"""Trainable: what the trainer needs of a model (loss, parameter groups, hooks, what it logs, what it supports), the
model registry, and the read-only FitContext the training hooks receive.

Both model families implement it: LatentModel (models/base.py: the autoencoders with encode/decode/do/
counterfactual) and the ICM committee (models/icm.py, which maps images to images and has no decoder). The trainer
(train/trainer.py) sees a Trainable only; report, experiment and the contract tests ask `model.can(capability)`
instead of branching on the model's class or kind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable

import numpy as np
import torch
from torch import nn

from ..graph.latent import LatentGraph
from ..registry import Registry

# model spec kind -> the class whose from_spec builds it (filled by @register_model beside each class)
MODELS: Registry[type["Trainable"]] = Registry("model")
# the latent graph a spec without `graph:` gets: independent dims (the baselines, 001 sec 3.1) or a chain over
# latent_dim nodes (the structural decoders' SAE-D ordering, 001 sec 2)
DEFAULT_GRAPHS = ("independent", "chain")

# What a model can declare in `supports`; report.py, experiment.py, metrics and the contract tests
# (tests/models/test_contract.py, one test per capability over the models that declare it) read nothing else.
CAPABILITIES: dict[str, str] = {
    "reconstruct": "decode(encode(x)) reconstructs x from a latent code: reconstructions, traversals, latent "
                   "metrics' decoders, reconstruction error and FID apply",
    "hybrid": "hybrid sampling from stored training latents (001 sec 2.3); the trainer stores them after training",
    "prior": "prior sampling is meaningful (a regularised latent space: VAEs, WAE, CausalVAE; 001 sec 3)",
    "do_noise": "do(x, {node: v}, on='noise') sets a node's exogenous noise U_i and decodes (001 sec 2.1)",
    "do_value": "do(x, {node: v}, on='value') sets a node's value and recomputes its descendants through the "
                "learned mechanisms (a graph without edges: the node's latent)",
    "do_mechanism": "do(x, {'expert': k}, on='mechanism') applies inverse mechanism k instead of the model's "
                    "choice (the ICM committee, 004)",
}


def register_model(*kinds: str, default_graph: str = "independent") -> Callable[[type], type]:
    """Class decorator: registers the class in MODELS under each model spec kind it builds (VAE builds both
    `vae` and `bvae`) and declares `default_graph`, the graph of a spec that leaves `graph` out (DEFAULT_GRAPHS).

    The class must define its own `from_spec(spec, graph, ctx)` classmethod, the one place its spec is read, and
    declare only known capabilities in `supports`.
    """
    if not kinds:
        raise ValueError("register_model needs at least one model spec kind")
    if default_graph not in DEFAULT_GRAPHS:
        raise ValueError(f"default_graph must be one of {', '.join(DEFAULT_GRAPHS)}; got {default_graph!r}")

    def deco(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Trainable)):
            raise TypeError(f"register_model: {cls!r} is not a Trainable (models/trainable.py)")
        if not isinstance(vars(cls).get("from_spec"), classmethod):
            raise TypeError(f"model {cls.__name__} ({', '.join(kinds)}) defines no from_spec classmethod of its own")
        unknown = sorted(set(cls.supports) - set(CAPABILITIES))
        if unknown:
            raise ValueError(f"model {cls.__name__}: unknown capabilities {unknown} in supports; known: "
                             f"{', '.join(CAPABILITIES)}")
        taken = [f"{k!r} (by {MODELS.get(k).__name__})" for k in kinds if k in MODELS]
        if taken or len(set(kinds)) < len(kinds):
            raise KeyError(f"model {cls.__name__}: kinds already registered: {', '.join(taken) or 'repeated'}")
        cls.kinds, cls.default_graph = tuple(kinds), default_graph
        for kind in kinds:
            MODELS.register(kind)(cls)
        return cls

    return deco


@dataclass(frozen=True)
class BuildContext:
    """What a model's from_spec may read beside the spec and the latent graph, filled by build.build_model (the
    models never import the data package): the images' channels, the dataset the model is built for (a
    GroundTruthDataset, e.g. CausalVAE's label statistics) and the train split's size (computed on demand)."""

    channels: int
    dataset: Any
    train_size: Callable[[], int]


class ModelOutput(dict):
    """`loss` (scalar tensor to minimise) plus named scalar terms; attribute access (pythae's ModelOutput)."""

    def __init__(self, loss: torch.Tensor, **terms: Any):
        super().__init__(loss=loss, **terms)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass(frozen=True)
class FitContext:
    """What a model's training hooks see of the trainer, made fresh for each call: values, and the few actions a
    hook may take (draw a batch, log a scalar on the main process, carry optimiser state over). The trainer itself
    is never handed to a model.

    step: optimiser steps taken so far (after_step: including the one just taken); steps: train.steps;
    val_every: steps between validations; device; dataset (GroundTruthDataset) and val_index (the validation
    split's dataset indices); progress: whether bars are shown; main_process: rank 0 (or the only process).
    """

    step: int
    steps: int
    val_every: int
    device: torch.device
    dataset: Any
    val_index: np.ndarray
    progress: bool
    main_process: bool
    next_batch: Callable[[], torch.Tensor]  # a training batch from the trainer's data stream (its extras too)
    autocast: Callable[[], ContextManager]  # the trainer's precision, as a context for a forward pass
    log_fn: Callable[[str, float, int, str], None]  # the tracker's log_metric(name, value, step, context)
    copy_state_fn: Callable[[Iterable[nn.Parameter], Iterable[nn.Parameter]], None]

    def log_metric(self, name: str, value: float, *, step: int | None = None, context: str = "train") -> None:
        """Log a scalar to the run's tracker (rank 0 only; elsewhere nothing), at `step` (default: this step)."""
        if self.main_process:
            self.log_fn(name, value, self.step if step is None else step, context)

    def copy_optimizer_state(self, dst: Iterable[nn.Parameter], src: Iterable[nn.Parameter]) -> None:
        """The main optimiser's per-parameter state (Adam's moments) of each src parameter, copied to its dst
        (zip order); a src without state clears its dst's (the ICM committee's expert revival)."""
        self.copy_state_fn(dst, src)


def copy_optimizer_state(optimizer: torch.optim.Optimizer, dst: Iterable[nn.Parameter],
                         src: Iterable[nn.Parameter]) -> None:
    """optimizer's per-parameter state of each src parameter (cloned) becomes its dst's (zip order); where src has
    none, dst's is cleared. What FitContext.copy_optimizer_state does with the trainer's main optimiser."""
    for p_dst, p_src in zip(dst, src):
        state = optimizer.state.get(p_src)
        if state:
            optimizer.state[p_dst] = {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
        else:
            optimizer.state.pop(p_dst, None)


class Trainable(nn.Module):
    """A model the trainer fits. forward(x, **batch) -> ModelOutput(loss=..., terms); batch holds what
    `batch_keys` asks for (Trainer.batch_extras). Every model has a latent graph (`graph`: the SCM's nodes, or the
    ICM committee's experts) and a representation of latent_dim = graph.latent_dim numbers per image (`encode`).

    Declared by each class:
    - supports: its capabilities (CAPABILITIES); `can(name)` asks;
    - validation_metric and validation_error(x): the scalar the trainer tracks on validation images and its name;
    - batch_keys: what forward takes beside the images;
    - find_unused_parameters: True where a step's loss may leave parameters out of the graph on purpose (an ICM
      expert that won no image): DistributedDataParallel then walks the graph to find them (one walk per step);
      everywhere else DDP runs without it;
    - aux_parameter_groups / aux_optimizer_options: parameter groups trained by their own optimiser on
      ModelOutput.aux[name] (FactorVAE's and the committee's discriminators);
    - the hooks (on_fit_start, before_fit, after_step, should_stop), each given a FitContext;
    - track_metrics / track_images (logged at each validation step) and report_images (a finished run's report).
    """

    supports: frozenset[str] = frozenset()
    validation_metric = "validation_error"
    batch_keys: tuple[str, ...] = ()
    find_unused_parameters = False
    # the model spec kinds the class builds and the graph a spec without `graph:` gets: set by @register_model
    kinds: tuple[str, ...] = ()
    default_graph = "independent"

    def __init__(self, *, graph: LatentGraph):
        super().__init__()
        self.graph = graph
        self.latent_dim = graph.latent_dim

    def can(self, capability: str) -> bool:
        """Whether the model supports `capability` (a key of CAPABILITIES; any other name is an error)."""
        if capability not in CAPABILITIES:
            raise KeyError(f"unknown capability {capability!r}; known: {', '.join(CAPABILITIES)}")
        return capability in self.supports

    # -- to implement -----------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: Any, graph: LatentGraph, ctx: BuildContext) -> "Trainable":
        """The model of `spec.model` over `graph` (build.build_model calls it after seeding torch with spec.seed):
        reads the spec, raises a SpecError naming the key path for what the spec cannot ask of this model, and
        calls __init__ with plain keyword arguments."""
        raise NotImplementedError(f"{cls.__name__} defines no from_spec")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The representation of images x: (B, C, H, W) -> (B, latent_dim)."""
        raise NotImplementedError

    def validation_error(self, x: torch.Tensor) -> torch.Tensor:
        """The scalar the trainer tracks on validation images x (logged as `validation_metric`, context "val")."""
        raise NotImplementedError

    def aux_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups trained by their own optimiser on ModelOutput.aux[name] (default: none)."""
        return {}

    def aux_optimizer_options(self, name: str, *, lr: float, betas: tuple[float, float]) -> dict:
        """Adam options of an aux group (default: the main lr and betas)."""
        return {"lr": lr, "betas": betas}

    # -- hooks (default: nothing) ----------------------------------------------------------------------
    def on_fit_start(self, ctx: FitContext) -> None:
        """Each time fit() starts, on a fresh run and on resume (before before_fit)."""

    def before_fit(self, ctx: FitContext) -> None:
        """Once, before step 1 of a fresh run (not on resume)."""

    def after_step(self, ctx: FitContext) -> None:
        """After each optimiser step (ctx.step already counts it)."""

    def should_stop(self, ctx: FitContext) -> str | None:
        """After each validation step (after track_metrics), on the main process: a reason (str) stops training
        there, with a checkpoint; None trains on (default: all train.steps)."""
        return None

    def track_metrics(self) -> dict[str, float]:
        """Model-specific scalars logged (context "val") at each validation step, before track_images()."""
        return {}

    def track_images(self) -> dict[str, torch.Tensor]:
        """Model-specific images ((C, H, W) in [0, 1]) logged at each validation step."""
        return {}

    def report_images(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model-specific images for the report of a finished run, given validation images x; each becomes
        <name>.png."""
        return {}

