"""Spec readers several models' from_spec share: conv encoder/decoder keyword arguments and graph-kind checks."""
from __future__ import annotations

from ..errors import SpecError
from ..graph.latent import LatentGraph
from ..spec.schema import AESpec, ConvDecoderSpec, ConvEncoderSpec, Spec


def conv_common(spec: Spec, graph: LatentGraph, channels: int) -> dict:
    """Keyword arguments of the conv-encoder models: the graph, the data's shape, `model.encoder` (kind conv),
    train.loss and evaluate.hybrid_latents."""
    m = spec.model
    enc = m.encoder
    if not isinstance(enc, ConvEncoderSpec):
        raise SpecError("model.encoder.kind", f"model {m.KIND!r} supports encoder kinds: conv; got {enc.KIND!r}")
    return dict(graph=graph, in_channels=channels, resolution=spec.data.resolution, enc_blocks=enc.blocks,
                enc_channels=enc.channels, enc_hidden=enc.hidden, groups=enc.groups, recon_loss=spec.train.loss,
                hybrid_latents=spec.evaluate.hybrid_latents)


def conv_decoder(m: AESpec) -> dict:
    """Keyword arguments of `model.decoder`, which must be kind conv (the hourglass decoder, 001 A.2.1)."""
    if not isinstance(m.decoder, ConvDecoderSpec):
        raise SpecError("model.decoder.kind", f"model {m.KIND!r} needs decoder kind 'conv'; got {m.decoder.KIND!r}")
    return dict(dec_blocks=m.decoder.blocks, dec_channels=m.decoder.channels, dec_hidden=m.decoder.hidden)


def chain_or_dag(spec: Spec, graph: LatentGraph) -> None:
    """A structural decoder compiles chain and dag graphs only (001 sec 2)."""
    if graph.kind not in ("chain", "dag"):
        raise SpecError("graph.kind", f"model {spec.model.KIND!r} compiles chain or dag graphs; got {graph.kind!r}")


def independent_only(spec: Spec, graph: LatentGraph, why: str) -> None:
    """A model that lays its latent out itself takes the independent graph (a spec without `graph`)."""
    if graph.kind != "independent":
        raise SpecError("graph", f"model {spec.model.KIND!r} {why}; leave `graph` out (got kind {graph.kind!r})")


def graph_of_kind(spec: Spec, cls: type, need: str):
    """spec.graph if it is a `cls` graph spec; otherwise a SpecError at graph.kind saying what the model needs."""
    g = spec.graph
    if not isinstance(g, cls):
        raise SpecError("graph.kind", f"model {spec.model.KIND!r} {need}; got "
                                 f"{'no graph' if g is None else 'kind ' + repr(getattr(g, 'KIND', None))}")
    return g
