"""One contract over every registered model kind (timm-style): shapes, backward, finite loss,
save/load round trip, sampling, interventions. No per-model edits: new kinds are picked up."""
from __future__ import annotations

import io

import pytest
import torch

from causalrep.build import build_dataset, build_model, model_kinds
from causalrep.spec import load_spec

from conftest import TINY, sample_batch, tiny_spec

# kinds that are not autoencoders (model.reconstructs False) have no latent_dim / encoder / decoder keys:
# their own tiny spec, on the data they need
TINY_OTHER = {
    "icm": {"data": {"name": "icm_digits", "resolution": 16}, "graph": {"kind": "experts", "experts": 3},
            "model": {"kind": "icm", "expert_layers": 1, "expert_channels": 4, "discriminator_channels": [[4], [8]],
                      "discriminator_hidden": 16, "init_iters": 2},
            "evaluate": {**TINY["evaluate"], "metrics": ["icm"]}},
}


def contract_spec(kind: str):
    """tiny_spec(kind), or the kind's own tiny spec in TINY_OTHER."""
    return load_spec(data={**TINY, **TINY_OTHER[kind]}) if kind in TINY_OTHER else tiny_spec(kind)


@pytest.fixture(params=model_kinds())
def built(request):
    spec = contract_spec(request.param)
    return spec, build_model(spec)


def batch(spec, n=4):
    r = spec.data.resolution
    return torch.rand(n, 1, r, r)


def test_forward_backward_finite(built):
    spec, model = built
    x = batch(spec)
    u = model.encode(x)
    assert u.shape == (4, model.latent_dim)
    if model.reconstructs:
        assert model.decode(u).shape == x.shape
    x, extras = sample_batch(model, build_dataset(spec), 4)
    out = model(x, **extras)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert "recon" in out or not model.reconstructs
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    if model.reconstructs:  # the ICM committee leaves its losing experts' grads None on purpose (test_icm.py)
        assert all(g is not None for g in grads)
    grads = [g for g in grads if g is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_save_load_round_trip(built):
    spec, model = built
    model.eval()
    model.store_latents(torch.randn(spec.evaluate.hybrid_latents, model.latent_dim))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    other = build_model(contract_spec(spec.model.KIND))
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    other.eval()
    x = batch(spec)
    assert torch.equal(model.encode(x), other.encode(x))
    if model.reconstructs:
        assert torch.equal(model.reconstruct(x), other.reconstruct(x))
    assert torch.equal(model.latent_bank, other.latent_bank)


def test_hybrid_sampling_draws_each_node_from_the_bank(built):
    spec, model = built
    if not model.reconstructs:
        pytest.skip(f"{type(model).__name__} has no decoder to sample through")
    bank = torch.randn(spec.evaluate.hybrid_latents, spec.model.latent_dim)
    model.store_latents(bank)
    u = model.sample_latents(32, "hybrid", torch.Generator().manual_seed(0))
    for node in model.graph.nodes:  # 001 sec 2.3: every node's value is one of the stored values
        sl = model.graph.slice(node)
        assert all(any(torch.equal(row, b) for b in bank[:, sl]) for row in u[:, sl])
    assert model.sample(5).shape == (5, 1, spec.data.resolution, spec.data.resolution)


def test_do_sets_the_node_and_only_the_node(built):
    spec, model = built
    if not model.reconstructs:
        pytest.skip(f"{type(model).__name__}'s do() is mechanism-level (tests/models/test_icm.py)")
    u = torch.randn(4, model.latent_dim)
    node = model.graph.nodes[1]
    v = model.intervene(u, {node: 0.5})
    sl = model.graph.slice(node)
    assert torch.all(v[:, sl] == 0.5)
    mask = torch.ones(model.latent_dim, dtype=torch.bool)
    mask[sl] = False
    assert torch.equal(v[:, mask], u[:, mask])
    model.eval()  # encode() is the posterior mean, so abduction is deterministic
    x = batch(spec)
    with torch.no_grad():
        u_x = model.encode(x)
        # abduction, action, prediction (001 sec 2.3): decode(encode(x) with the node's slice := 0.5)
        assert torch.equal(model.counterfactual(x, {node: 0.5}), model.decode(model.intervene(u_x, {node: 0.5})))
        # do(node := the value x already has) changes nothing: the counterfactual is x's reconstruction
        assert torch.allclose(model.counterfactual(x, {node: u_x[:, sl]}), model.reconstruct(x), atol=1e-6)
        # before any latents are stored node_range is the N(0, 1) prior's bulk (-2, 2), so 3 traversal
        # steps set the node to -2, 0, 2 (linspace): column k is the counterfactual do(node := that value)
        t = model.traverse(x[:2], node, 3)
        assert not bool(model.latent_bank_filled) and t.shape == (2, 3, *x.shape[1:])
        for k, value in enumerate([-2.0, 0.0, 2.0]):
            assert torch.allclose(t[:, k], model.counterfactual(x[:2], {node: value}), atol=1e-6)


def test_do_errors_name_node_and_shapes(built):
    spec, model = built
    u = torch.randn(4, model.latent_dim)
    with pytest.raises(KeyError, match="unknown node 'nope'"):
        model.intervene(u, {"nope": 0.0})
    node = model.graph.nodes[0]
    dim = model.graph.dims[node]
    with pytest.raises(ValueError, match=rf"node '{node}' has shape \(3, 7\); expected a number, \({dim},\)"):
        model.intervene(u, {node: torch.zeros(3, 7)})
