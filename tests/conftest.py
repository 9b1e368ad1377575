"""Shared fixtures: tiny specs that build and train in a fraction of a second on the CPU."""
from __future__ import annotations

import contextlib

import pytest
import torch

from causalrep.models.trainable import FitContext, copy_optimizer_state
from causalrep.spec import load_spec

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"name": "dsprites", "resolution": 16},
    "train": {"steps": 4, "batch_size": 4, "log_every": 2, "val_every": 4, "checkpoint_every": 2},
    "evaluate": {"metrics": ["reconstruction"], "val_samples": 16, "traversal_steps": 3, "hybrid_latents": 8},
    "track": {"kind": "jsonl"},
}
TINY_NET = {"encoder": {"kind": "conv", "blocks": 3, "channels": 8, "groups": 4}}


def tiny_data(kind: str = "sae", latent_dim: int = 4, graph: dict | None = None, **model) -> dict:
    """Plain spec data for a tiny model of `kind` (every registered kind builds from this)."""
    dec = {"kind": "structural", "blocks": 3, "channels": 8, "groups": 4, "mechanism_hidden": [8]} \
        if kind == "sae" else {"kind": "conv", "blocks": 3, "channels": 8, "groups": 4}
    data = {**TINY, "model": {"kind": kind, "latent_dim": latent_dim, **TINY_NET, "decoder": dec, **model}}
    if graph is None and kind == "causalvae":  # CausalVAE learns a graph over labelled concepts (003)
        graph = {"kind": "learned", "nodes": ["scale", "orientation"]}
    if graph is not None:
        data["graph"] = graph
    return data


def fit_context(*, step: int = 0, optimizer=None, logged: list | None = None, **fields):
    """A FitContext as the trainer makes one for a model's hooks, for hook tests without a trainer: at `step`,
    copy_optimizer_state acting on `optimizer`, log_metric appending (name, value, step, context) to `logged`."""
    def no_state(dst, src):
        raise AssertionError("copy_optimizer_state called, but the test gave no optimizer")

    defaults = dict(steps=10 ** 6, val_every=50, device=torch.device("cpu"), dataset=None, val_index=[],
                    progress=False, main_process=True, next_batch=lambda: None, autocast=contextlib.nullcontext,
                    log_fn=lambda *a: (logged.append(a) if logged is not None else None),
                    copy_state_fn=(lambda dst, src: copy_optimizer_state(optimizer, dst, src)) if optimizer is not None
                    else no_state)
    return FitContext(step=step, **{**defaults, **fields})


def sample_batch(model, dataset, n: int, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """n images drawn through the dataset's factors and what model.forward takes beside them (batch_keys),
    as the Trainer supplies them: factor indices, dataset labels, or dataset.batch_extra companions."""
    import numpy as np

    factors = dataset.sample_factors(n, np.random.default_rng(seed))
    extras = {}
    for key in model.batch_keys:
        if key == "factors":
            extras[key] = torch.as_tensor(factors, dtype=torch.int64)
        elif key == "labels":
            extras[key] = torch.as_tensor(dataset.labels(factors), dtype=torch.float32)
        else:
            extras[key] = dataset.batch_extra(key, n, torch.Generator().manual_seed(seed))
    return dataset.images(factors), extras


def tiny_spec(kind: str = "sae", latent_dim: int = 4, graph: dict | None = None, overrides=(), **model):
    return load_spec(data=tiny_data(kind, latent_dim, graph, **model), overrides=overrides)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(False)
    yield
