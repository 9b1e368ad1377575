"""The only place a spec becomes objects: dataset, latent graph, model (registries live beside it)."""
from __future__ import annotations

from typing import Callable

import torch

from . import data as _data  # noqa: F401  (registers the built-in datasets)
from . import models as _models  # noqa: F401  (registers the built-in models)
from .data.base import DATASETS, FILE_LOADERS, GroundTruthDataset, Split, factor_mask
from .data.perturb import PatternPerturbation, UniformNoise, factor_s, latent_s
from .errors import SpecError
from .graph.kinds import GRAPHS, independent_graph
from .graph.latent import LatentGraph
from .models.base import MODELS, LatentModel
from .registry import Registry
from .spec.schema import (AESpec, ConvDecoderSpec, ConvEncoderSpec, ModelSpec, PatternPerturbationSpec, SAESpec,
                          Spec, StructuralDecoderSpec, UniformPerturbationSpec, VAESpec)

# model spec kind -> fn(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel
BUILDERS: Registry[Callable[..., LatentModel]] = Registry("model builder")
# model kinds whose decoder follows the latent graph (they default to a chain over latent_dim nodes)
STRUCTURAL_KINDS = {"sae"}


def build_dataset(spec: Spec) -> GroundTruthDataset:
    """The dataset named by `data.name`, at `data.resolution` (real files via `data.path`), wrapped
    in its perturbation (002) when `data.perturbation` is set."""
    d = spec.data
    if d.name not in DATASETS:
        raise SpecError("data.name", f"unknown dataset {d.name!r}; allowed: {', '.join(DATASETS.names())}")
    if d.path is None:
        dataset = DATASETS.get(d.name)(resolution=d.resolution)
    elif d.name in FILE_LOADERS:
        dataset = FILE_LOADERS.get(d.name)(path=d.path, resolution=d.resolution)
    else:
        raise SpecError("data.path", f"dataset {d.name!r} has no real-file loader; loaders: "
                                     f"{', '.join(FILE_LOADERS.names())}")
    p = d.perturbation
    if isinstance(p, PatternPerturbationSpec):
        s = factor_s(dataset, p.factor, p.scale) if p.factor is not None else latent_s(p.run, p.scale)
        dataset = PatternPerturbation(dataset, epsilon=p.epsilon, s=s, seed=p.seed)
    elif isinstance(p, UniformPerturbationSpec):
        dataset = UniformNoise(dataset, epsilon=p.epsilon, seed=p.seed)
    return dataset


def build_split(spec: Spec, dataset: GroundTruthDataset) -> Split:
    """The seeded train/val/test split, after the data.include / data.exclude factor filters."""
    keep = factor_mask(dataset, spec.data.include, spec.data.exclude, where="data")
    return Split(len(dataset), spec.data.split, spec.seed, keep)


def build_graph(spec: Spec, true_graph=None) -> LatentGraph:
    """The latent graph of `graph:`, checked against model.latent_dim; baselines default to
    independent dims and structural models to a chain over latent_dim nodes (SAE-D)."""
    latent_dim = getattr(spec.model, "latent_dim", None)
    if spec.graph is None:
        if spec.model.KIND in STRUCTURAL_KINDS:
            from .spec.schema import ChainGraphSpec

            return GRAPHS.get("chain")(ChainGraphSpec(nodes=latent_dim), latent_dim=latent_dim)
        return independent_graph(latent_dim)
    return GRAPHS.get(spec.graph.KIND)(spec.graph, latent_dim=latent_dim, true_graph=true_graph)


def validate_spec(spec: Spec) -> None:
    """Cross-section rules that the schema alone cannot express; each error names its key path."""
    if spec.data.name not in DATASETS:
        raise SpecError("data.name", f"unknown dataset {spec.data.name!r}; allowed: {', '.join(DATASETS.names())}")
    if spec.model.KIND not in BUILDERS:
        raise SpecError("model.kind", f"no builder for {spec.model.KIND!r}; allowed: {', '.join(BUILDERS.names())}")
    res = spec.data.resolution
    if res < 8:
        raise SpecError("data.resolution", f"expected at least 8 pixels, got {res}")
    from .metrics import METRICS

    for i, m in enumerate(spec.evaluate.metrics):
        if m not in METRICS:
            raise SpecError(f"evaluate.metrics[{i}]", f"unknown metric {m!r}; allowed: {', '.join(METRICS.names())}")
    for key in ("encoder", "decoder"):
        sub = getattr(spec.model, key, None)
        blocks = getattr(sub, "blocks", None)
        if blocks is not None:
            if blocks < 1:
                raise SpecError(f"model.{key}.blocks", f"expected a positive int, got {blocks}")
            pools = (blocks + 2) // 3
            if res % 2 ** pools:
                raise SpecError(f"model.{key}.blocks", f"{blocks} blocks pool/upsample {pools} times, which "
                                                      f"does not divide data.resolution={res}")
        ch, groups = getattr(sub, "channels", None), getattr(sub, "groups", None)
        if ch is not None and groups and ch % groups:
            raise SpecError(f"model.{key}.channels", f"{ch} is not divisible by groups={groups}")
    true_graph = None
    if spec.graph is not None and getattr(spec.graph, "from_dataset", False):
        true_graph = build_dataset(spec).true_graph
    build_graph(spec, true_graph)


def build_model(spec: Spec, dataset: GroundTruthDataset | None = None, graph: LatentGraph | None = None) -> LatentModel:
    """The model of `model:`, wired to the dataset's channels and resolution and the latent graph."""
    dataset = dataset if dataset is not None else build_dataset(spec)
    graph = graph if graph is not None else build_graph(spec, dataset.true_graph)
    if spec.model.KIND not in BUILDERS:
        raise SpecError("model.kind", f"no builder for {spec.model.KIND!r}; allowed: {', '.join(BUILDERS.names())}")
    torch.manual_seed(spec.seed)  # initialisation is a function of the seed
    return BUILDERS.get(spec.model.KIND)(spec, graph, dataset.channels)


def _common(spec: Spec, graph: LatentGraph, channels: int) -> dict:
    m = spec.model
    enc = m.encoder
    if not isinstance(enc, ConvEncoderSpec):
        raise SpecError("model.encoder.kind", f"model {m.KIND!r} supports encoder kinds: conv; got {enc.KIND!r}")
    return dict(graph=graph, in_channels=channels, resolution=spec.data.resolution, enc_blocks=enc.blocks,
                enc_channels=enc.channels, enc_hidden=enc.hidden, groups=enc.groups, recon_loss=spec.train.loss,
                hybrid_latents=spec.evaluate.hybrid_latents)


def _conv_decoder(m: AESpec) -> dict:
    if not isinstance(m.decoder, ConvDecoderSpec):
        raise SpecError("model.decoder.kind", f"model {m.KIND!r} needs decoder kind 'conv'; got {m.decoder.KIND!r}")
    return dict(dec_blocks=m.decoder.blocks, dec_channels=m.decoder.channels, dec_hidden=m.decoder.hidden)


@BUILDERS.register("ae")
def _build_ae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    return MODELS.get("ae")(**_common(spec, graph, channels), **_conv_decoder(spec.model))


@BUILDERS.register("vae")
@BUILDERS.register("bvae")
def _build_vae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    m: VAESpec = spec.model
    return MODELS.get("vae")(beta=m.beta, **_common(spec, graph, channels), **_conv_decoder(m))


@BUILDERS.register("sae")
def _build_sae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    m: SAESpec = spec.model
    if not isinstance(m.decoder, StructuralDecoderSpec):
        raise SpecError("model.decoder.kind", f"model 'sae' needs decoder kind 'structural'; got {m.decoder.KIND!r}")
    if graph.kind not in ("chain", "dag"):
        raise SpecError("graph.kind", f"model 'sae' compiles chain or dag graphs; got {graph.kind!r}")
    return MODELS.get("sae")(dec_blocks=m.decoder.blocks, dec_channels=m.decoder.channels,
                             mechanism_hidden=m.decoder.mechanism_hidden, **_common(spec, graph, channels))


def model_kinds() -> list[str]:
    """Every model kind a spec can name (the contract tests run over all of them)."""
    return [k for k in ModelSpec.KINDS.names() if k in BUILDERS]
