"""AdaAE-K (001 sec 3.1, "Adaptive"): the SAE with every Str-Tfm layer seeing the whole latent (Ada-IN-like)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import SpecError
from ..graph.latent import LatentGraph
from ..nn.backbone import ConvEncoder
from ..nn.structural import StructuralDecoder
from ..spec.schema import AdaAESpec, ConvDecoderSpec, Spec, StructuralDecoderSpec
from ._spec_args import conv_common, independent_only
from .base import BuildContext, LatentModel, ModelOutput, reconstruction_loss, register_model
from .sae import StructuralValues


def layer_chain(layers: int) -> LatentGraph:
    """The decoder's layout only: a chain layer1 -> ... -> layerK (one Str-Tfm layer per node, placed
    evenly between the conv blocks, 001 A.2.1). Its node dims are unused: every layer reads all of u."""
    names = [f"layer{i + 1}" for i in range(layers)]
    return LatentGraph.from_edges(names, list(zip(names[:-1], names[1:])), 1, kind="chain", where="model.layers")


@register_model("adaae")
class AdaAE(StructuralValues, LatentModel):
    """SAE encoder + structural decoder whose K Str-Tfm layers each get the WHOLE latent vector: "identical
    to the SAE models except that all latent variables are passed to each of the Str-Tfm layers, so the
    architecture is effectively the same as using Ada-IN layers" (001 sec 3.1). Unregularised.

    `graph` is the latent SCM for sampling and do(): the independent graph over latent dims ("each latent
    dimension of these less structured baselines is treated as a separate latent variable", 001 sec 3.1);
    the decoder's depth is `layers` (K), not the graph. do() on any dim changes the first layer's
    features, so the model is not `structural`.
    """

    structural = False

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "AdaAE":
        m: AdaAESpec = spec.model
        independent_only(spec, graph, "treats every latent dim as its own variable (001 sec 3.1) and sets its "
                                      "decoder depth with model.layers")
        dec = m.decoder
        if isinstance(dec, StructuralDecoderSpec):
            hidden = dec.mechanism_hidden
        elif isinstance(dec, ConvDecoderSpec):
            hidden = dec.hidden  # the conv backbone with one style MLP per layer ([]: an affine map, as StyleGAN's A)
        else:
            raise SpecError("model.decoder.kind", f"model 'adaae' supports decoder kinds: structural, conv; "
                                                  f"got {dec.KIND!r}")
        return cls(layers=m.layers, dec_blocks=dec.blocks, dec_channels=dec.channels, mechanism_hidden=hidden,
                   **conv_common(spec, graph, ctx.channels))

    def __init__(self, *, graph: LatentGraph, in_channels: int, resolution: int, layers: int | None = None,
                 enc_blocks: int = 12, enc_channels: int = 64, enc_hidden: Sequence[int] = (), dec_blocks: int = 12,
                 dec_channels: int = 64, mechanism_hidden: Sequence[int] = (64, 64, 64), groups: int = 8,
                 recon_loss: str = "bce", hybrid_latents: int = 128):
        super().__init__(graph=graph, recon_loss=recon_loss, hybrid_latents=hybrid_latents)
        self.layers = layers if layers is not None else graph.latent_dim  # AdaAE-12: K = D = 12
        self.encoder = ConvEncoder(in_channels=in_channels, resolution=resolution, blocks=enc_blocks,
                                   channels=enc_channels, out_features=graph.latent_dim, hidden=enc_hidden,
                                   groups=groups)
        # u: (B, D) -> each Str-Tfm layer: MLP(u) -> per-channel (alpha, beta) over all pixels
        self.decoder = StructuralDecoder(graph=layer_chain(self.layers), out_channels=in_channels,
                                         resolution=resolution, blocks=dec_blocks, channels=dec_channels,
                                         mechanism_hidden=mechanism_hidden, groups=groups, full_latent=True,
                                         latent_dim=graph.latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, u: torch.Tensor) -> torch.Tensor:
        return self.decoder(u)

    def layer_features(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features after each Str-Tfm layer's conv blocks: {layerK: (B, C, h, w)}."""
        return self.decoder.features(u)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        rec = reconstruction_loss(self.decode_logits(self.encode(x)), x, self.recon_loss)
        return ModelOutput(loss=rec, recon=rec)
