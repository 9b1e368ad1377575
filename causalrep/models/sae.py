"""Structural autoencoder SAE-K (001 sec 2): conv encoder + structural decoder, no regulariser."""
from __future__ import annotations

from typing import Sequence

import torch

from ..graph.latent import LatentGraph
from ..nn.backbone import ConvEncoder
from ..errors import SpecError
from ..nn.structural import StructuralDecoder
from ..spec.schema import SAESpec, Spec, StructuralDecoderSpec
from ._spec_args import chain_or_dag, conv_common
from .base import BuildContext, LatentModel, ModelOutput, reconstruction_loss, register_model


class StructuralValues:
    """Value-level do() for models decoding through a StructuralDecoder (self.decoder): a node's value is
    its feature map S_i; setting it cuts the node's mechanism and its descendants read the new features."""

    def _structural_decoder(self) -> StructuralDecoder:
        dec = getattr(self, "decoder", None)
        if not isinstance(dec, StructuralDecoder):
            raise NotImplementedError(f"{type(self).__name__} with a {type(dec).__name__} has no node mechanisms; "
                                      f"value-level do() needs the structural decoder (use on='noise')")
        return dec

    def node_features(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoder features S_i of every node (what do() on a node must leave unchanged upstream)."""
        return self._structural_decoder().features(u)

    def decode_values_logits(self, u: torch.Tensor, values) -> torch.Tensor:
        return self._structural_decoder()(u, values)

    @torch.no_grad()
    def node_values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.node_features(self.encode(x))


@register_model("sae", default_graph="chain")
class SAE(StructuralValues, LatentModel):
    """SAE over a chain (SAE-K) or a DAG; trained on reconstruction alone (001 sec 2.3: the
    architecture, not a regulariser, encourages independent, ordered latents)."""

    structural = True

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "SAE":
        m: SAESpec = spec.model
        if not isinstance(m.decoder, StructuralDecoderSpec):
            raise SpecError("model.decoder.kind", f"model 'sae' needs decoder kind 'structural'; got {m.decoder.KIND!r}")
        chain_or_dag(spec, graph)
        return cls(dec_blocks=m.decoder.blocks, dec_channels=m.decoder.channels,
                   mechanism_hidden=m.decoder.mechanism_hidden, **conv_common(spec, graph, ctx.channels))

    def __init__(self, *, graph: LatentGraph, in_channels: int, resolution: int, enc_blocks: int = 12,
                 enc_channels: int = 64, enc_hidden: Sequence[int] = (), dec_blocks: int = 12,
                 dec_channels: int = 64, mechanism_hidden: Sequence[int] = (64, 64, 64), groups: int = 8,
                 recon_loss: str = "bce", hybrid_latents: int = 128):
        super().__init__(graph=graph, recon_loss=recon_loss, hybrid_latents=hybrid_latents)
        self.encoder = ConvEncoder(in_channels=in_channels, resolution=resolution, blocks=enc_blocks,
                                   channels=enc_channels, out_features=graph.latent_dim, hidden=enc_hidden,
                                   groups=groups)
        self.decoder = StructuralDecoder(graph=graph, out_channels=in_channels, resolution=resolution,
                                         blocks=dec_blocks, channels=dec_channels,
                                         mechanism_hidden=mechanism_hidden, groups=groups)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, u: torch.Tensor) -> torch.Tensor:
        return self.decoder(u)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        rec = reconstruction_loss(self.decode_logits(self.encode(x)), x, self.recon_loss)
        return ModelOutput(loss=rec, recon=rec)
