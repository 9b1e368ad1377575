"""Latent graphs: kinds, levels, parents/descendants, dims; the DAG penalty h(A) and its gradient."""
from __future__ import annotations

import networkx as nx
import pytest
import torch

from causalrep.errors import SpecError
from causalrep.graph import GRAPHS, LearnedAdjacency, dag_penalty
from causalrep.spec.schema import ChainGraphSpec, DagGraphSpec, ExpertsGraphSpec, LearnedGraphSpec

PENDULUM = DagGraphSpec(nodes=("angle", "light", "shadow_pos", "shadow_len"),
                        edges=(("angle", "shadow_pos"), ("light", "shadow_pos"), ("angle", "shadow_len"),
                               ("light", "shadow_len")))


def test_chain_orders_nodes_by_depth():
    g = GRAPHS.get("chain")(ChainGraphSpec(nodes=4), latent_dim=12)
    assert g.nodes == g.order == ["u1", "u2", "u3", "u4"]
    assert [g.levels[n] for n in g.nodes] == [0, 1, 2, 3]  # node i enters the decoder at depth i
    assert g.dims == {n: 3 for n in g.nodes} and g.slice("u2") == slice(3, 6)
    assert g.descendants("u2") == {"u3", "u4"} and g.parents("u3") == ["u2"] and g.sinks() == ["u4"]


def test_dag_structure():
    g = GRAPHS.get("dag")(PENDULUM, latent_dim=4)
    assert g.levels == {"angle": 0, "light": 0, "shadow_pos": 1, "shadow_len": 1}
    assert g.num_levels == 2
    assert g.parents("shadow_len") == ["angle", "light"]
    assert g.descendants("light") == {"shadow_pos", "shadow_len"} and g.descendants("shadow_pos") == set()
    assert set(g.sinks()) == {"shadow_pos", "shadow_len"}


def test_dag_per_node_dims():
    spec = DagGraphSpec(nodes=("a", "b"), edges=(("a", "b"),), node_dims={"a": 3}, node_dim=1)
    g = GRAPHS.get("dag")(spec, latent_dim=4)
    assert g.dims == {"a": 3, "b": 1} and g.slice("b") == slice(3, 4)
    with pytest.raises(SpecError, match="graph.node_dims: node dims sum to 4 != model.latent_dim 5"):
        GRAPHS.get("dag")(spec, latent_dim=5)


def test_dag_from_dataset_true_graph():
    true = nx.DiGraph([("x", "y")])
    g = GRAPHS.get("dag")(DagGraphSpec(from_dataset=True), latent_dim=2, true_graph=true)
    assert g.edges() == [("x", "y")]
    with pytest.raises(SpecError, match="graph.from_dataset: the dataset exposes no true graph"):
        GRAPHS.get("dag")(DagGraphSpec(from_dataset=True), latent_dim=2, true_graph=None)


def test_longest_path_level():
    spec = DagGraphSpec(nodes=("a", "b", "c"), edges=(("a", "b"), ("b", "c"), ("a", "c")))
    g = GRAPHS.get("dag")(spec, latent_dim=3)
    assert g.levels == {"a": 0, "b": 1, "c": 2}


def test_experts_and_learned_kinds():
    g = GRAPHS.get("experts")(ExpertsGraphSpec(experts=10), latent_dim=None)
    assert len(g.nodes) == 10 and g.edges() == []
    spec = LearnedGraphSpec(nodes=("a", "b", "c"), prior_edges=(("a", "b"),), forbidden_edges=(("c", "a"),))
    g = GRAPHS.get("learned")(spec, latent_dim=6)
    assert g.dims == {"a": 2, "b": 2, "c": 2} and g.edges() == [("a", "b")]
    with pytest.raises(SpecError, match=r"graph.prior_edges\[0\]"):
        GRAPHS.get("learned")(LearnedGraphSpec(nodes=2, prior_edges=(("z1", "q"),)), latent_dim=2)


def test_dag_penalty_is_zero_on_a_dag():
    # upper-triangular weights = a DAG: every power of A∘A is nilpotent, tr(...) = n exactly
    a = torch.triu(torch.randn(5, 5, dtype=torch.float64), diagonal=1)
    assert dag_penalty(a).item() == 0.0


def test_dag_penalty_two_cycle_closed_form():
    # A = [[0, a], [b, 0]], n = 2: M = I + A∘A/2 -> tr(M^2) = 2 + a^2 b^2 / 2, so h = a^2 b^2 / 2
    a, b = 0.7, -1.3
    A = torch.tensor([[0.0, a], [b, 0.0]], dtype=torch.float64)
    assert dag_penalty(A).item() == pytest.approx(a * a * b * b / 2, rel=1e-12)


def test_dag_penalty_positive_on_cycles_and_gradcheck():
    A = torch.zeros(4, 4, dtype=torch.float64)
    A[0, 1] = A[1, 2] = A[2, 0] = 0.5  # a 3-cycle
    assert dag_penalty(A).item() > 0
    W = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dag_penalty, (W,))


def test_learned_adjacency_masks():
    adj = LearnedAdjacency(nodes=["a", "b", "c"], prior_edges=[("a", "b")], forbidden_edges=[("b", "c")],
                           threshold=0.3)
    with torch.no_grad():
        adj.weight.fill_(1.0)
    m = adj.matrix
    assert torch.all(m.diagonal() == 0) and m[1, 2] == 0  # self-loops and forbidden edges held at 0
    edges = set(adj.edges())
    assert ("a", "b") in edges and ("b", "c") not in edges and ("c", "a") in edges
    adj.penalty().backward()
    assert adj.weight.grad[1, 2] == 0 and adj.weight.grad[0, 0] == 0
    with torch.no_grad():
        adj.weight.zero_()
    assert adj.edges() == [("a", "b")]  # a required edge is present whatever its weight
