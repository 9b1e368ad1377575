"""Start from another run's weights (train.init_from) and train part of a model (train.trainable).

001 sec 3.2 / Table 3 (extrapolation): a model trained without one shape is updated on the full data
with "the encoder only, the decoder only, or both"; 000 sec 3 (transfer): a model is trained on three
stages in series, each starting from the previous stage's weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .checkpoint import CHECKPOINT, has_checkpoint, load_latest

TRAINABLE = ("all", "encoder", "decoder")


class UnusableStart(CheckpointError):
    """train.init_from names no checkpoint, or one whose weights do not fit the model: a problem of the spec, which
    its readers (Experiment, check_spec) report under the key. A checkpoint that cannot be read (refused, corrupt)
    stays a CheckpointError naming the file."""


class NothingToTrain(ValueError):
    """train.trainable selects no parameter of the model (raised by trainable_parameters, named by the reader)."""


def checkpoint_path(init_from: str | Path) -> Path:
    """A run folder (its checkpoints/last.pt) or a checkpoint file; a CheckpointError if absent (present: the file,
    or the previous checkpoint save_checkpoint kept beside it). The spec readers name the key (train.init_from)."""
    path = Path(init_from).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT
    if not has_checkpoint(path):
        raise UnusableStart(path, f"no checkpoint at {path} (give a run folder holding checkpoints/last.pt, or a "
                                    "checkpoint file)")
    return path


def load_initial_weights(model: nn.Module, init_from: str | Path) -> Path:
    """Copy the model weights (and buffers) of `init_from` into `model`; the optimiser starts afresh.

    The architectures must match key for key and shape for shape; otherwise a CheckpointError lists the
    first differences (e.g. a different data.resolution or model size than the source run's).
    """
    path = checkpoint_path(init_from)
    ckpt, path = load_latest(path, map_location="cpu")  # a damaged file: its previous checkpoint, with a warning
    state = ckpt["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = [f"{what}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                 for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if items]
        raise UnusableStart(path, f"the weights in {path} do not fit this model ({'; '.join(parts)}); the source run "
                                    "must have the same model and data.resolution")
    model.load_state_dict(state)
    return path


def _reached(output: torch.Tensor, params: list[nn.Parameter]) -> list[nn.Parameter]:
    """The parameters `output` depends on (autograd reaches them), in model order."""
    grads = torch.autograd.grad(output.float().sum(), params, allow_unused=True)
    return [p for p, g in zip(params, grads) if g is not None]


def trainable_parameters(model: nn.Module, which: str, probe: torch.Tensor,
                         params: list[nn.Parameter] | None = None) -> list[nn.Parameter]:
    """The parameters to train for train.trainable = all | encoder | decoder (001 Table 3).

    Defined by what the model computes, not by module names, so every model kind answers alike:
    encoder = the parameters encode(x) depends on; decoder = those decode_logits(u) depends on,
    for u = encode(x) of the probe images x (B, C, H, W). `params` restricts the candidates
    (the trainer passes the main group; aux groups such as FactorVAE's discriminator always train).
    """
    if which not in TRAINABLE:
        raise ValueError(f"trainable: unknown value {which!r}; allowed: {', '.join(TRAINABLE)}")
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    if which == "all":
        return params
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            u = model.encode(probe)
            out = u if which == "encoder" else model.decode_logits(u.detach())
            chosen = _reached(out, params) if out.requires_grad else []
    finally:
        model.train(was_training)
    if not chosen:
        raise NothingToTrain(f"no parameter of {type(model).__name__} is reached by "
                             f"{'encode' if which == 'encoder' else 'decode_logits'}()")
    return chosen
