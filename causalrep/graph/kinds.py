"""The registered graph kinds: chain, dag, learned, experts (each spec section -> LatentGraph)."""
from __future__ import annotations

from typing import Callable

import networkx as nx

from ..errors import SpecError
from ..registry import Registry
from ..spec.schema import ChainGraphSpec, DagGraphSpec, ExpertsGraphSpec, LearnedGraphSpec
from .latent import LatentGraph

# kind -> fn(spec, *, latent_dim, true_graph) -> LatentGraph
GRAPHS: Registry[Callable[..., LatentGraph]] = Registry("graph kind")


def _split_dims(n: int, node_dim: int | None, latent_dim: int | None, where: str) -> int:
    if n < 1:
        raise SpecError(f"{where}.nodes", f"expected at least one node, got {n}")
    if node_dim is not None:
        if latent_dim is not None and node_dim * n != latent_dim:
            raise SpecError(f"{where}.node_dim", f"{n} nodes x node_dim {node_dim} = {n * node_dim} != "
                                                 f"model.latent_dim {latent_dim}")
        return node_dim
    if latent_dim is None:
        return 1
    if latent_dim % n:
        raise SpecError(f"{where}.nodes", f"{n} nodes do not split model.latent_dim={latent_dim} evenly")
    return latent_dim // n


@GRAPHS.register("chain")
def chain_graph(spec: ChainGraphSpec, *, latent_dim: int | None, true_graph=None, where="graph") -> LatentGraph:
    """u1 -> u2 -> ... -> uK: the SAE's causal ordering (001 sec 2.1)."""
    dim = _split_dims(spec.nodes, spec.node_dim, latent_dim, where)
    names = [f"{spec.prefix}{i + 1}" for i in range(spec.nodes)]
    return LatentGraph.from_edges(names, zip(names[:-1], names[1:]), dim, kind="chain", where=where)


@GRAPHS.register("dag")
def dag_graph(spec: DagGraphSpec, *, latent_dim: int | None, true_graph: nx.DiGraph | None = None,
              where="graph") -> LatentGraph:
    """Named nodes and explicit edges, or the dataset's true graph (`from_dataset: true`)."""
    if spec.from_dataset:
        if true_graph is None:
            raise SpecError(f"{where}.from_dataset", "the dataset exposes no true graph")
        if spec.nodes or spec.edges:
            raise SpecError(f"{where}.from_dataset", "give either from_dataset or nodes/edges, not both")
        nodes, edges = list(true_graph.nodes), list(true_graph.edges)
    else:
        nodes, edges = list(spec.nodes), list(spec.edges)
    if len(set(nodes)) != len(nodes):
        raise SpecError(f"{where}.nodes", f"duplicate node names in {nodes}")
    for name in spec.node_dims:
        if name not in nodes:
            raise SpecError(f"{where}.node_dims.{name}", f"unknown node; nodes: {', '.join(nodes)}")
    if spec.node_dims:
        base = spec.node_dim if spec.node_dim is not None else 1
        dims = {n: spec.node_dims.get(n, base) for n in nodes}
        if latent_dim is not None and sum(dims.values()) != latent_dim:
            raise SpecError(f"{where}.node_dims", f"node dims sum to {sum(dims.values())} != model.latent_dim "
                                                  f"{latent_dim}")
    else:
        dims = _split_dims(len(nodes), spec.node_dim, latent_dim, where)
    return LatentGraph.from_edges(nodes, edges, dims, kind="dag", where=where)


@GRAPHS.register("learned")
def learned_graph(spec: LearnedGraphSpec, *, latent_dim: int | None, true_graph=None, where="graph") -> LatentGraph:
    """The candidate nodes of a learned adjacency; edges live in a LearnedAdjacency module."""
    names = [f"z{i + 1}" for i in range(spec.nodes)] if isinstance(spec.nodes, int) else list(spec.nodes)
    dim = _split_dims(len(names), spec.node_dim, latent_dim, where)
    for key in ("prior_edges", "forbidden_edges"):
        for i, e in enumerate(getattr(spec, key)):
            if len(e) != 2 or any(v not in names for v in e):
                raise SpecError(f"{where}.{key}[{i}]", f"expected [parent, child] among {names}, got {list(e)}")
    # the required edges alone must already be acyclic
    return LatentGraph.from_edges(names, spec.prior_edges, dim, kind="learned", where=where)


@GRAPHS.register("experts")
def experts_graph(spec: ExpertsGraphSpec, *, latent_dim: int | None, true_graph=None, where="graph") -> LatentGraph:
    """N' independent mechanisms (ICM, 004): one node per expert, no edges between them."""
    if spec.experts < 1:
        raise SpecError(f"{where}.experts", f"expected at least one expert, got {spec.experts}")
    names = [f"expert{i + 1}" for i in range(spec.experts)]
    return LatentGraph.from_edges(names, [], 1, kind="experts", where=where)


def independent_graph(latent_dim: int, prefix: str = "u") -> LatentGraph:
    """Each latent dim its own node, no edges: how baselines' latents are treated (001 sec 3.1)."""
    names = [f"{prefix}{i + 1}" for i in range(latent_dim)]
    return LatentGraph.from_edges(names, [], 1, kind="independent")
