"""Structural decoder: Str-Tfm placement, DAG compilation, invariance of non-descendants under do()."""
from __future__ import annotations

import pytest
import torch

from causalrep.build import build_model
from causalrep.graph import GRAPHS
from causalrep.nn import StrTfm, StructuralDecoder
from causalrep.nn.backbone import pool_after, upsample_before
from causalrep.spec import load_spec
from causalrep.spec.schema import ChainGraphSpec, DagGraphSpec

from conftest import tiny_spec

PENDULUM = {"kind": "dag", "nodes": ["angle", "light", "shadow_pos", "shadow_len"],
            "edges": [["angle", "shadow_pos"], ["light", "shadow_pos"], ["angle", "shadow_len"],
                      ["light", "shadow_len"]]}


def test_backbone_schedule_matches_appendix_a2():
    # A.2.1: max-pool after every third conv starting with the first; decoder mirrors it
    assert [i for i, p in enumerate(pool_after(12)) if p] == [0, 3, 6, 9]
    assert [j for j, u in enumerate(upsample_before(12)) if u] == [2, 5, 8, 11]


def test_strtfm_is_a_per_channel_affine_map_of_the_features():
    layer = StrTfm(in_dim=2, channels=3, hidden=(4,))
    v = torch.randn(5, 3, 6, 6)
    u = torch.randn(5, 2)
    out = layer(v, u)
    alpha, beta = layer.net(u).chunk(2, dim=1)
    # every pixel of channel c goes through the same scale and bias, computed from U_i alone
    assert torch.allclose(out, v * (1 + alpha[:, :, None, None]) + beta[:, :, None, None])


@pytest.mark.parametrize("k, expected", [(12, [[i] for i in range(12)]), (2, [list(range(6)), list(range(6, 12))]),
                                         (3, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])])
def test_chain_spreads_blocks_evenly(k, expected):
    # SAE-K: the K Str-Tfm layers sit evenly between the 12 conv blocks (001 A.2.1)
    g = GRAPHS.get("chain")(ChainGraphSpec(nodes=k), latent_dim=12)
    dec = StructuralDecoder(graph=g, out_channels=3, resolution=64, blocks=12, channels=16, groups=4)
    convs = {n: sum(isinstance(m, torch.nn.Conv2d) for m in dec.mechanism[n].modules()) for n in g.nodes}
    assert [convs[n] for n in g.nodes] == [len(e) for e in expected]
    assert dec(torch.randn(2, 12)).shape == (2, 3, 64, 64)


def test_do_on_a_dag_node_leaves_non_descendant_features_bit_equal():
    spec = tiny_spec("sae", 4, PENDULUM)
    model = build_model(spec).eval()
    x = torch.rand(6, 1, 16, 16)
    with torch.no_grad():
        u = model.encode(x)
        before = model.node_features(u)
        for node in model.graph.nodes:
            after = model.node_features(model.intervene(u, {node: 3.0}))
            changed = model.graph.descendants(node) | {node}
            for other in model.graph.nodes:
                if other in changed:
                    assert not torch.equal(before[other], after[other]), (node, other)
                else:
                    assert torch.equal(before[other], after[other]), (node, other)


def test_chain_do_changes_features_from_the_node_down():
    model = build_model(tiny_spec("sae", 4, {"kind": "chain", "nodes": 4})).eval()
    with torch.no_grad():
        u = torch.randn(3, 4)
        before = model.node_features(u)
        after = model.node_features(model.intervene(u, {"u3": 2.0}))
    assert [torch.equal(before[n], after[n]) for n in ["u1", "u2", "u3", "u4"]] == [True, True, False, False]


@pytest.mark.parametrize("name", ["sae12", "ae", "bvae"])
def test_paper_models_have_about_a_million_parameters(name):
    # 001 A.2.1: "each of the 3D-Shapes and MPI3D models have approximately 1-1.2M trainable parameters"
    spec = load_spec(f"specs/{name}.yaml", check=False)

    class RGB:  # the paper's models see 3-channel 64x64 images
        channels, true_graph = 3, None

    model = build_model(spec, dataset=RGB())
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0.9e6 <= n <= 1.3e6, n
