"""One contract over every registered model kind (timm-style), through what each declares it supports.

Every kind: one forward/backward with a finite loss, its validation scalar under its own name, a state-dict round
trip. Each capability of models/trainable.py CAPABILITIES has one test here, run over exactly the kinds whose class
declares it in `supports`: no skip lists, and a new kind is picked up with no edit (its tiny spec: conftest's
tiny_spec, or TINY_OTHER below for a kind that is not an autoencoder)."""
from __future__ import annotations

import functools
import io

import pytest
import torch

from causalrep.build import build_dataset, build_model, model_kinds
from causalrep.models import CAPABILITIES, MODELS, reconstruction_loss
from causalrep.spec import load_spec

from conftest import TINY, sample_batch, tiny_spec

# kinds that are not autoencoders have no latent_dim / encoder / decoder keys: their own tiny spec, on their data
TINY_OTHER = {
    "icm": {"data": {"name": "icm_digits", "resolution": 16}, "graph": {"kind": "experts", "experts": 3},
            "model": {"kind": "icm", "expert_layers": 1, "expert_channels": 4, "discriminator_channels": [[4], [8]],
                      "discriminator_hidden": 16, "init_iters": 2},
            "evaluate": {**TINY["evaluate"], "metrics": ["icm"]}},
}


def contract_spec(kind: str):
    """tiny_spec(kind), or the kind's own tiny spec in TINY_OTHER."""
    return load_spec(data={**TINY, **TINY_OTHER[kind]}) if kind in TINY_OTHER else tiny_spec(kind)


@functools.lru_cache(maxsize=None)
def supports(kind: str) -> frozenset[str]:
    """What the kind's tiny contract model supports (a class declares its capabilities; an instance may lack one
    that its configuration rules out, e.g. value-level do() with ASAE's conv decoder)."""
    return frozenset(build(kind)[1].supports)


def kinds_with(capability: str) -> list[str]:
    """The registered kinds whose tiny contract model supports `capability`."""
    assert capability in CAPABILITIES
    return [k for k in model_kinds() if capability in supports(k)]


def build(kind: str):
    spec = contract_spec(kind)
    return spec, build_model(spec)


def batch(spec, n=4):
    r = spec.data.resolution
    return torch.rand(n, 1, r, r)


@pytest.fixture(params=model_kinds())
def built(request):
    return build(request.param)


def test_every_capability_has_its_contract_test_and_every_kind_declares_known_ones():
    tests = {name for name in globals() if name.startswith("test_capability_")}
    assert tests == {f"test_capability_{c}" for c in CAPABILITIES}
    for kind in model_kinds():
        assert supports(kind) <= MODELS.get(kind).supports <= set(CAPABILITIES), kind
    # the two families: every autoencoder reconstructs, and the one image-to-image model declares do_mechanism only
    assert set(kinds_with("do_mechanism")) == {"icm"} and MODELS.get("icm").supports == {"do_mechanism"}
    assert set(kinds_with("reconstruct")) == set(model_kinds()) - {"icm"}


def test_can_rejects_an_unknown_capability(built):
    _, model = built
    with pytest.raises(KeyError, match="unknown capability 'decode'; known: reconstruct, hybrid"):
        model.can("decode")


def test_forward_backward_finite_and_its_own_validation_scalar(built):
    spec, model = built
    x = batch(spec)
    assert model.encode(x).shape == (4, model.latent_dim)
    x, extras = sample_batch(model, build_dataset(spec), 4)
    out = model(x, **extras)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    if not model.find_unused_parameters:  # DDP runs without find_unused_parameters: every parameter gets a grad
        assert all(g is not None for g in grads)
    grads = [g for g in grads if g is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    with torch.no_grad():
        v = model.validation_error(x)
    assert v.dim() == 0 and torch.isfinite(v)
    # the trainer logs validation_error under the model's own name: recon_error only for a reconstruction error
    assert (model.validation_metric == "recon_error") == model.can("reconstruct")


def test_save_load_round_trip(built):
    spec, model = built
    model.eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    other = build_model(contract_spec(spec.model.KIND))
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    other.eval()
    x = batch(spec)
    assert torch.equal(model.encode(x), other.encode(x))


@pytest.mark.parametrize("kind", kinds_with("reconstruct"))
def test_capability_reconstruct(kind):
    spec, model = build(kind)
    model.eval()
    x = batch(spec)
    with torch.no_grad():
        u = model.encode(x)
        assert model.decode(u).shape == x.shape
        assert torch.equal(model.reconstruct(x), model.decode(u))
        # validation_error is the per-image reconstruction loss of train.loss
        want = reconstruction_loss(model.decode_logits(u), x, spec.train.loss)
        assert float(model.validation_error(x)) == pytest.approx(float(want), rel=1e-6)
    x, extras = sample_batch(model, build_dataset(spec), 4)
    assert "recon" in model(x, **extras)


@pytest.mark.parametrize("kind", kinds_with("hybrid"))
def test_capability_hybrid(kind):
    spec, model = build(kind)
    model.eval()
    bank = torch.randn(spec.evaluate.hybrid_latents, spec.model.latent_dim)
    model.store_latents(bank)
    u = model.sample_latents(32, "hybrid", torch.Generator().manual_seed(0))
    for node in model.graph.nodes:  # 001 sec 2.3: every node's value is one of the stored values
        sl = model.graph.slice(node)
        assert all(any(torch.equal(row, b) for b in bank[:, sl]) for row in u[:, sl])
    assert model.sample(5).shape == (5, 1, spec.data.resolution, spec.data.resolution)
    # the stored latents travel with the state dict (the final checkpoint carries them)
    other = build_model(contract_spec(kind))
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.latent_bank, bank) and bool(other.latent_bank_filled)


@pytest.mark.parametrize("kind", kinds_with("prior"))
def test_capability_prior(kind):
    spec, model = build(kind)
    model.eval()
    a = model.sample_latents(64, "prior", torch.Generator().manual_seed(1))
    b = model.sample_latents(64, "prior", torch.Generator().manual_seed(1))
    c = model.sample_latents(64, "prior", torch.Generator().manual_seed(2))
    assert a.shape == (64, model.latent_dim) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)  # a function of the generator alone
    images = model.sample(6, "prior", torch.Generator().manual_seed(1))
    assert images.shape == (6, 1, spec.data.resolution, spec.data.resolution)
    assert float(images.min()) >= 0 and float(images.max()) <= 1


@pytest.mark.parametrize("kind", kinds_with("do_noise"))
def test_capability_do_noise(kind):
    spec, model = build(kind)
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
        assert torch.equal(model.do(x, {node: 0.5}, on="noise"), model.counterfactual(x, {node: 0.5}))
        # do(node := the value x already has) changes nothing: the counterfactual is x's reconstruction
        assert torch.allclose(model.counterfactual(x, {node: u_x[:, sl]}), model.reconstruct(x), atol=1e-6)
        # before any latents are stored node_range is the N(0, 1) prior's bulk (-2, 2), so 3 traversal
        # steps set the node to -2, 0, 2 (linspace): column k is the counterfactual do(node := that value)
        t = model.traverse(x[:2], node, 3)
        assert not bool(model.latent_bank_filled) and t.shape == (2, 3, *x.shape[1:])
        for k, value in enumerate([-2.0, 0.0, 2.0]):
            assert torch.allclose(t[:, k], model.counterfactual(x[:2], {node: value}), atol=1e-6)
    # errors name the node and the shapes
    with pytest.raises(KeyError, match="unknown node 'nope'"):
        model.intervene(u, {"nope": 0.0})
    node = model.graph.nodes[0]
    dim = model.graph.dims[node]
    with pytest.raises(ValueError, match=rf"node '{node}' has shape \(3, 7\); expected a number, \({dim},\)"):
        model.intervene(u, {node: torch.zeros(3, 7)})


@pytest.mark.parametrize("kind", kinds_with("do_value"))
def test_capability_do_value(kind):
    spec, model = build(kind)
    model.eval()
    x = batch(spec, 3)
    with torch.no_grad():
        # do(V := V(x)) for every node at once is no intervention: the decoder gives back reconstruct(x)
        assert torch.allclose(model.do(x, model.node_values(x)), model.reconstruct(x), atol=1e-6)
    node = model.graph.nodes[0]
    with pytest.raises(ValueError, match="on='latent'.*valid: value, noise"):
        model.do(x, {node: 0.0}, on="latent")


@pytest.mark.parametrize("kind", kinds_with("do_mechanism"))
def test_capability_do_mechanism(kind):
    spec, model = build(kind)
    model.eval()
    x = batch(spec, 5)
    n = len(model.graph.nodes)
    with torch.no_grad():
        each = [model.do(x, {"expert": k}, on="mechanism") for k in range(n)]
        # per-image choices pick, image by image, the output of that mechanism; a node name means its index
        pick = torch.arange(5) % n
        mixed = model.do(x, {"expert": pick}, on="mechanism")
        assert torch.equal(model.do(x, {"expert": model.graph.nodes[1]}, on="mechanism"), each[1])
        assert torch.equal(model.counterfactual(x, {"expert": 1}), each[1])
    assert all(e.shape == x.shape for e in each)
    for b in range(5):
        assert torch.equal(mixed[b], each[int(pick[b])][b])
    for on in ("value", "noise"):  # no latent SCM: the other targets are errors saying what is allowed
        with pytest.raises(ValueError, match=rf"on='{on}'.*on='mechanism'"):
            model.do(x, {"expert": 0}, on=on)
