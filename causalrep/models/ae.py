"""Hourglass baselines: AE, VAE and beta-VAE on the 001 conv backbone."""
from __future__ import annotations

from typing import Sequence

import torch

from ..graph.latent import LatentGraph
from ..nn.backbone import ConvDecoder, ConvEncoder
from ..nn.divergences import kl_standard_normal
from ..spec.schema import AESpec, Spec, VAESpec
from ._spec_args import conv_common, conv_decoder
from .base import BuildContext, LatentModel, ModelOutput, reconstruction_loss, register_model


@register_model("ae")
class AE(LatentModel):
    """Unregularised autoencoder ("AE", 001 sec 3.1): loss = reconstruction only."""

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "AE":
        m: AESpec = spec.model
        return cls(**conv_common(spec, graph, ctx.channels), **conv_decoder(m))

    def __init__(self, *, graph: LatentGraph, in_channels: int, resolution: int, enc_blocks: int = 12,
                 enc_channels: int = 64, enc_hidden: Sequence[int] = (), dec_blocks: int = 12,
                 dec_channels: int = 64, dec_hidden: Sequence[int] = (), groups: int = 8, recon_loss: str = "bce",
                 hybrid_latents: int = 128):
        super().__init__(graph=graph, recon_loss=recon_loss, hybrid_latents=hybrid_latents)
        self.encoder = ConvEncoder(in_channels=in_channels, resolution=resolution, blocks=enc_blocks,
                                   channels=enc_channels, out_features=self.encoder_outputs(), hidden=enc_hidden,
                                   groups=groups)
        self.decoder = ConvDecoder(latent_dim=graph.latent_dim, out_channels=in_channels, resolution=resolution,
                                   blocks=dec_blocks, channels=dec_channels, hidden=dec_hidden, groups=groups)

    def encoder_outputs(self) -> int:
        return self.latent_dim

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, u: torch.Tensor) -> torch.Tensor:
        return self.decoder(u)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        rec = reconstruction_loss(self.decode_logits(self.encode(x)), x, self.recon_loss)
        return ModelOutput(loss=rec, recon=rec)


@register_model("vae", "bvae")
class VAE(AE):
    """VAE / beta-VAE: q(u|x) = N(mu, diag(sigma^2)), prior N(0, I), loss = recon + beta * KL.

    beta = 1 is the VAE (Kingma & Welling 2013); beta > 1 the beta-VAE objective of 003
    (Higgins et al. 2017), with beta = 2 the best setting on 3D-Shapes and MPI3D (001 A.2.2).
    encode() returns the posterior mean, the representation the metrics read.
    """

    supports = LatentModel.supports | {"prior"}

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "VAE":
        m: VAESpec = spec.model  # or a BetaVAESpec: the same fields, beta = 2 by default
        return cls(beta=m.beta, **conv_common(spec, graph, ctx.channels), **conv_decoder(m))

    def __init__(self, *, beta: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = beta

    def encoder_outputs(self) -> int:
        return 2 * self.latent_dim  # (mu, log sigma^2)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def forward(self, x: torch.Tensor) -> ModelOutput:
        mu, logvar = self.posterior(x)
        u = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        rec = reconstruction_loss(self.decode_logits(u), x, self.recon_loss)
        # KL(N(mu, sigma^2) || N(0, 1)) = 0.5 * (mu^2 + sigma^2 - log sigma^2 - 1), summed over dims
        kl = kl_standard_normal(mu, logvar)
        return ModelOutput(loss=rec + self.beta * kl, recon=rec, kl=kl)
