"""Latent graphs: LatentGraph, the registered kinds and the DAG penalty."""
from .kinds import GRAPHS, independent_graph
from .latent import LatentGraph
from .penalty import LearnedAdjacency, dag_penalty
