"""Shared fixtures: tiny specs that build and train in a fraction of a second on the CPU."""
from __future__ import annotations

import pytest
import torch

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
    if graph is not None:
        data["graph"] = graph
    return data


def tiny_spec(kind: str = "sae", latent_dim: int = 4, graph: dict | None = None, overrides=(), **model):
    return load_spec(data=tiny_data(kind, latent_dim, graph, **model), overrides=overrides)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(False)
    yield
