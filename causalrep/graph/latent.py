"""LatentGraph: the latent SCM over an nx.DiGraph (node names, dims, order, parents, levels)."""
from __future__ import annotations

from typing import Iterable

import networkx as nx

from ..errors import SpecError


class LatentGraph:
    """A DAG of latent nodes; node `i`'s noise U_i occupies `slice(i)` of the latent vector.

    The latent vector lays the nodes out in declaration order; `order` is a topological order
    that keeps declaration order among unrelated nodes (so a chain's order is u1, u2, ...).
    """

    def __init__(self, graph: nx.DiGraph, *, kind: str, where: str = "graph"):
        if not nx.is_directed_acyclic_graph(graph):
            cycle = nx.find_cycle(graph)
            text = " -> ".join([str(u) for u, _ in cycle] + [str(cycle[0][0])])
            raise SpecError(f"{where}.edges", f"the graph has a cycle: {text}")
        for n, d in graph.nodes(data="dim"):
            if not isinstance(d, int) or d < 1:
                raise SpecError(f"{where}.nodes", f"node {n!r} needs a positive int dim, got {d!r}")
        self.nx = graph
        self.kind = kind
        self.nodes: list[str] = list(graph.nodes)
        position = {n: i for i, n in enumerate(self.nodes)}
        self.order: list[str] = list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
        self.dims: dict[str, int] = {n: graph.nodes[n]["dim"] for n in self.nodes}
        self._slices: dict[str, slice] = {}
        start = 0
        for n in self.nodes:
            self._slices[n] = slice(start, start + self.dims[n])
            start += self.dims[n]
        self.latent_dim = start
        # level = longest path from a root: the depth at which the node enters a structural decoder
        self.levels: dict[str, int] = {}
        for n in self.order:
            self.levels[n] = max((self.levels[p] + 1 for p in graph.predecessors(n)), default=0)
        self.num_levels = max(self.levels.values(), default=-1) + 1

    # -- queries -----------------------------------------------------------------------------
    def slice(self, node: str) -> slice:
        self._check(node)
        return self._slices[node]

    def parents(self, node: str) -> list[str]:
        self._check(node)
        return [p for p in self.order if self.nx.has_edge(p, node)]

    def children(self, node: str) -> list[str]:
        self._check(node)
        return [c for c in self.order if self.nx.has_edge(node, c)]

    def descendants(self, node: str) -> set[str]:
        self._check(node)
        return set(nx.descendants(self.nx, node))

    def ancestors(self, node: str) -> set[str]:
        self._check(node)
        return set(nx.ancestors(self.nx, node))

    def sinks(self) -> list[str]:
        return [n for n in self.order if self.nx.out_degree(n) == 0]

    def edges(self) -> list[tuple[str, str]]:
        return sorted(self.nx.edges, key=lambda e: (self.nodes.index(e[0]), self.nodes.index(e[1])))

    def _check(self, node: str) -> None:
        if node not in self.dims:
            raise KeyError(f"unknown latent node {node!r}; nodes: {', '.join(self.nodes)}")

    def __repr__(self) -> str:
        return (f"LatentGraph(kind={self.kind!r}, nodes={self.nodes}, dims={list(self.dims.values())}, "
                f"edges={self.edges()})")

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_edges(cls, nodes: Iterable[str], edges: Iterable[tuple[str, str]], dims: dict[str, int] | int,
                   *, kind: str, where: str = "graph") -> "LatentGraph":
        g = nx.DiGraph()
        nodes = list(nodes)
        for n in nodes:
            g.add_node(n, dim=dims if isinstance(dims, int) else dims[n])
        for i, e in enumerate(edges):
            if len(e) != 2:
                raise SpecError(f"{where}.edges[{i}]", f"expected [parent, child], got {list(e)}")
            for end in e:
                if end not in g:
                    raise SpecError(f"{where}.edges[{i}]", f"unknown node {end!r}; nodes: {', '.join(nodes)}")
            g.add_edge(*e)
        return cls(g, kind=kind, where=where)
