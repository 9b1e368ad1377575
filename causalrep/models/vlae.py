"""VLAE-L: the Variational Ladder Autoencoder (Zhao et al. 2017) on the 001 backbone (001 sec 3.1, A.2.1)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.latent import LatentGraph
from ..nn.backbone import ConvBlock, Upsample2x, bottleneck_size, mlp, pool_after, upsample_before
from ..errors import SpecError
from ..nn.divergences import kl_standard_normal
from ..spec.schema import Spec, VLAESpec
from ._spec_args import conv_common, conv_decoder, independent_only
from .base import BuildContext, LatentModel, ModelOutput, reconstruction_loss, register_model


def rung_depths(rungs: int, blocks: int) -> list[int]:
    """Decoder block before which each rung's latent enters, spread evenly as the SAE's Str-Tfm layers
    (001 A.2.1): rung k at (k * blocks) // rungs, so rung 1 (the first latent group) starts the decoder."""
    return [(k * blocks) // rungs for k in range(rungs)]


class InferenceRung(nn.Module):
    """Encoder features -> (mu, logvar) of one latent group: features average-pooled to pool x pool, then a
    three-hidden-layer MLP (001 A.2.1: "the inference and generative ladder rungs each also have a three
    hidden layers"). h: (B, C, h, w) -> (B, dim) x2."""

    def __init__(self, *, channels: int, dim: int, pool: int, hidden: Sequence[int]):
        super().__init__()
        self.pool = pool
        self.net = mlp(channels * pool * pool, hidden, 2 * dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.adaptive_avg_pool2d(h, self.pool).flatten(1)
        mu, logvar = self.net(h).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)


class GenerativeRung(nn.Module):
    """One latent group -> a feature map CONCATENATED with the decoder features at the rung's depth, then
    a 1x1 conv block back to `channels` (Zhao et al. 2017: z~_l = f_l([z~_{l+1}, u_l(z_l)]); 001 sec 3.1:
    "the ladder rungs in the VLAE decoder concatenate the features"). The MLP (three hidden layers, A.2.1)
    emits a side x side map that is bilinearly resized to the decoder's features (the sizes are not in 001;
    Zhao's code maps to the full feature size, which at 64x64 would cost millions of parameters).
    The first rung has no decoder features to join: its map alone starts the decoder (z~_L = f_L(z_L))."""

    def __init__(self, *, dim: int, channels: int, rung_channels: int, side: int, hidden: Sequence[int],
                 first: bool, groups: int):
        super().__init__()
        self.rung_channels, self.side = rung_channels, side
        self.net = mlp(dim, hidden, rung_channels * side * side)
        in_ch = rung_channels if first else channels + rung_channels
        self.merge = ConvBlock(in_ch, channels, kernel=1, groups=groups)

    def forward(self, v: torch.Tensor | None, z: torch.Tensor, side: int) -> torch.Tensor:
        m = self.net(z).view(-1, self.rung_channels, self.side, self.side)
        if self.side != side:
            m = F.interpolate(m, size=(side, side), mode="bilinear", align_corners=False)
        return self.merge(m if v is None else torch.cat([v, m], dim=1))


@register_model("vlae")
class VLAE(LatentModel):
    """L rungs, the latent split evenly into L groups (group k = dims [k*D/L, (k+1)*D/L)).

    Encoder: the 001 conv backbone; inference rung k reads its features after block B-1-d_k (mirroring
    decoder depth d_k: the first group from the deepest features). Decoder: the 001 conv backbone; rung k
    joins before block d_k = k*B/L. Posterior N(mu, sigma^2) per group, prior N(0, I), loss = recon +
    beta * KL (beta = 1: the ELBO, 001 sec 3.1 "VLAEs also use the variational regularization").
    encode() = the concatenated posterior means.
    """

    supports = LatentModel.supports | {"prior"}

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "VLAE":
        m: VLAESpec = spec.model
        independent_only(spec, graph, "splits its latent over model.rungs")
        if m.latent_dim % m.rungs:
            raise SpecError("model.rungs", f"latent_dim={m.latent_dim} is not divisible by rungs={m.rungs} (the "
                                           f"latent is split evenly over the rungs, 001 A.2.1)")
        common = conv_common(spec, graph, ctx.channels)
        dec = conv_decoder(m)
        for key, hidden in (("encoder", common.pop("enc_hidden")), ("decoder", dec.pop("dec_hidden"))):
            if hidden:
                raise SpecError(f"model.{key}.hidden", f"VLAE's ladder rungs replace the {key}'s MLP: leave it "
                                                       f"empty and size the rungs with model.rung_hidden")
        return cls(rungs=m.rungs, beta=m.beta, rung_hidden=m.rung_hidden, rung_channels=m.rung_channels,
                   rung_side=m.rung_side, rung_pool=m.rung_pool, **common, **dec)

    def __init__(self, *, graph: LatentGraph, in_channels: int, resolution: int, rungs: int = 4, beta: float = 1.0,
                 enc_blocks: int = 12, enc_channels: int = 64, dec_blocks: int = 12, dec_channels: int = 64,
                 rung_hidden: Sequence[int] = (32, 32, 32), rung_channels: int = 8, rung_side: int = 4,
                 rung_pool: int = 2, groups: int = 8, recon_loss: str = "bce", hybrid_latents: int = 128):
        super().__init__(graph=graph, recon_loss=recon_loss, hybrid_latents=hybrid_latents)
        if graph.latent_dim % rungs:
            raise ValueError(f"latent_dim {graph.latent_dim} is not divisible by rungs={rungs}")
        self.rungs, self.beta, self.group = rungs, beta, graph.latent_dim // rungs
        self.depths = rung_depths(rungs, dec_blocks)
        self.taps = [enc_blocks - 1 - d for d in rung_depths(rungs, enc_blocks)]  # mirror of the depths
        # encoder: conv blocks (5x5 first), 2x2 max-pool after every third from the first (A.2.1)
        self.enc = nn.ModuleList()
        for i, pool in enumerate(pool_after(enc_blocks)):
            block = ConvBlock(in_channels if i == 0 else enc_channels, enc_channels, kernel=5 if i == 0 else 3,
                              groups=groups)
            self.enc.append(nn.Sequential(block, nn.MaxPool2d(2)) if pool else block)
        self.infer = nn.ModuleList(InferenceRung(channels=enc_channels, dim=self.group, pool=rung_pool,
                                                 hidden=rung_hidden) for _ in range(rungs))
        # decoder: bilinear 2x before every third block (A.2.1), rung k joins before block depths[k]
        self.side = bottleneck_size(resolution, dec_blocks)
        self.ups = upsample_before(dec_blocks)
        self.up = Upsample2x()
        self.dec = nn.ModuleList(ConvBlock(dec_channels, dec_channels, groups=groups) for _ in range(dec_blocks))
        self.gen = nn.ModuleList(GenerativeRung(dim=self.group, channels=dec_channels, rung_channels=rung_channels,
                                                side=rung_side, hidden=rung_hidden, first=k == 0, groups=groups)
                                 for k in range(rungs))
        self.out = nn.Conv2d(dec_channels, in_channels, 3, padding=1)

    # -- inference -------------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (B, D): rung k's group from the encoder features after block taps[k]."""
        feats = []
        h = x
        for block in self.enc:
            h = block(h)
            feats.append(h)
        stats = [rung(feats[t]) for rung, t in zip(self.infer, self.taps)]
        return torch.cat([m for m, _ in stats], 1), torch.cat([lv for _, lv in stats], 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    # -- generation ------------------------------------------------------------------------------
    def decoder_features(self, u: torch.Tensor) -> list[torch.Tensor]:
        """Output of every decoder block, [(B, C, h_j, w_j)] for j = 0..B-1; rung k enters before block
        depths[k], so blocks j < depths[k] do not see group k."""
        if u.dim() != 2 or u.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents of shape (B, {self.latent_dim}), got {tuple(u.shape)}")
        z = u.split(self.group, dim=1)
        v = self.gen[0](None, z[0], self.side)  # the first group alone starts the decoder (Zhao et al.)
        out = []
        for j, block in enumerate(self.dec):
            if self.ups[j]:
                v = self.up(v)
            for k in range(1, self.rungs):
                if self.depths[k] == j:
                    v = self.gen[k](v, z[k], v.shape[-1])
            v = block(v)
            out.append(v)
        return out

    def decode_logits(self, u: torch.Tensor) -> torch.Tensor:
        return self.out(self.decoder_features(u)[-1])

    def forward(self, x: torch.Tensor) -> ModelOutput:
        mu, logvar = self.posterior(x)
        u = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation, all rungs at once
        rec = reconstruction_loss(self.decode_logits(u), x, self.recon_loss)
        # KL(q(z|x) || N(0, I)) summed over all groups (the rungs' priors are independent, Zhao et al.)
        kl = kl_standard_normal(mu, logvar)
        return ModelOutput(loss=rec + self.beta * kl, recon=rec, kl=kl)
