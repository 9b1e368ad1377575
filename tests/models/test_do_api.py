"""The one intervention API: model.do(x, {node: value}, on="value" | "noise") and counterfactual()."""
from __future__ import annotations

import pytest
import torch

from causalrep.build import build_model

from conftest import tiny_spec
from test_contract import contract_spec, kinds_with
from test_structural import PENDULUM


@pytest.fixture(params=kinds_with("do_noise"))
def model(request):
    return build_model(contract_spec(request.param)).eval()


def test_noise_do_equals_counterfactual_and_sets_the_latent(model):
    x = torch.rand(3, 1, 16, 16)
    node = model.graph.nodes[0]
    cf = model.counterfactual(x, {node: 0.5})
    assert torch.equal(model.do(x, {node: 0.5}, on="noise"), cf)
    u = model.intervene(model.encode(x), {node: 0.5})
    assert torch.equal(cf, model.decode(u))


def test_errors_name_the_node_and_the_shapes(model):
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(KeyError, match="unknown node 'nope'"):
        model.do(x, {"nope": 0.0}, on="noise")
    node = model.graph.nodes[0]
    with pytest.raises(ValueError, match=rf"node '{node}' has shape \(5, 7\)"):
        model.do(x, {node: torch.zeros(5, 7)}, on="noise")
    with pytest.raises(ValueError, match="on='latent'.*valid: value, noise"):
        model.do(x, {node: 0.0}, on="latent")


def test_value_do_on_a_dag_keeps_non_descendants_bit_equal_and_cuts_the_mechanism():
    model = build_model(tiny_spec("sae", 4, PENDULUM)).eval()
    x, other = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    dec = model.decoder
    with torch.no_grad():
        u = model.encode(x)
        before = dec.features(u)
        s_light = model.node_values(other)["light"]  # another image's light features
        after = dec.features(u, {"light": s_light})
    assert torch.equal(after["light"], s_light)  # the node holds the set value, whatever its noise says
    assert torch.equal(after["angle"], before["angle"])  # non-descendant: bit-equal
    for child in ("shadow_pos", "shadow_len"):  # descendants recomputed from the new value
        assert not torch.equal(after[child], before[child])
    # one (C, h, w) value broadcasts over the batch; a wrong shape names the node and the expected shape
    c, h, w = s_light.shape[1:]
    assert dec.features(u, {"light": s_light[0]})["light"].shape == s_light.shape
    with pytest.raises(ValueError, match=rf"node 'light' has shape \(3,\); its features S_light have shape \({c}, {h}, {w}\)"):
        model.do(x, {"light": torch.zeros(3)})


def test_baseline_value_do_is_the_noise_do():
    # an AE's graph has no edges: a node's value is its latent, so both targets agree
    model = build_model(tiny_spec("ae")).eval()
    x = torch.rand(3, 1, 16, 16)
    assert torch.equal(model.do(x, {"u2": 1.5}), model.do(x, {"u2": 1.5}, on="noise"))
