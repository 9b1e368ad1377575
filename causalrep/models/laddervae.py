"""Ladder VAE (Sønderby et al. 2016; slides 003): top-down inference by precision-weighted merging, KL warm-up."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.latent import LatentGraph
from ..nn.backbone import ConvDecoder, ConvEncoder, mlp
from ..errors import SpecError
from ..nn.divergences import kl_gaussians, precision_weighted
from ..spec.schema import LadderVAESpec, Spec
from ._spec_args import conv_common, conv_decoder
from .base import BuildContext, LatentModel, ModelOutput, reconstruction_loss, register_model

VAR_FLOOR = 1e-6  # keeps softplus variances away from 0 (their inverses are precisions)


def default_layer_dims(latent_dim: int, layers: int = 3) -> tuple[int, ...]:
    """latent_dim split over min(layers, latent_dim) stochastic layers, the bottom ones largest: 12 -> (4, 4, 4)."""
    n = min(layers, latent_dim)
    return tuple(latent_dim // n + (1 if i < latent_dim % n else 0) for i in range(n))


def warmup_beta(step: torch.Tensor | int, warmup_steps: int) -> torch.Tensor:
    """KL weight after `step` training steps: linear from 0 to 1 over warmup_steps, then 1 (003, "warm-up")."""
    step = torch.as_tensor(step, dtype=torch.float32)
    if warmup_steps <= 0:
        return torch.ones_like(step)
    return (step / warmup_steps).clamp(max=1.0)


def _gaussian(head: nn.Linear, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mu = Linear(h), sigma^2 = Softplus(Linear(h)) (003 eqs. 20-21), in fp32."""
    mu, pre = head(h).float().chunk(2, dim=1)
    return mu, F.softplus(pre) + VAR_FLOOR


class _Rung(nn.Sequential):
    """One deterministic ladder step: MLP with Mish on its output too, (B, in) -> (B, width)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], width: int):
        super().__init__(mlp(in_dim, hidden, width), nn.Mish())


@register_model("laddervae")
class LadderVAE(LatentModel):
    """Ladder VAE with L stochastic layers z_1 (bottom, next to x) ... z_L (top); u = [z_1, ..., z_L].

    Bottom-up (deterministic): d_0 = conv encoder(x), d_i = rung_i(d_{i-1}); each d_i gives the Gaussian
    "likelihood" (mu_hat_i, sigma_hat_i^2) (003 eqs. 19-21). Top-down: z_L's posterior is (mu_hat_L,
    sigma_hat_L^2) with prior N(0, I); for i < L the top-down features h_{i+1} give the prior
    p(z_i | z_>i) = N(mu_p,i, sigma_p,i^2), and the posterior is the precision-weighted merge of the two
    (003 eqs. 22-25). KL(q(z_i|.) || p(z_i|.)) per layer, weighted by beta warmed up linearly from 0 to 1
    over `warmup_steps` training forwards (003, "warm-up from deterministic to VAE"). The model counts its own
    training-mode forwards in the buffer `kl_step`, so a resumed checkpoint continues the schedule exactly.

    Deviation, for interventions: Sønderby et al. generate x from z_1 alone; here the top-down path also carries
    deterministic features, h_L = rung(z_L), h_i = rung([h_{i+1}, z_i]), and the conv decoder reads h_1, so
    every layer's latents reach the image and do()/traversals on upper layers change it. The prior is still
    the ladder's hierarchy (p(z_i | z_>i) from h_{i+1}), and sample(method="prior") draws it ancestrally.
    encode() is the concatenated posterior means, computed with each layer's mean fed down.
    """

    supports = LatentModel.supports | {"prior"}

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "LadderVAE":
        m: LadderVAESpec = spec.model
        if m.layer_dims is not None and (sum(m.layer_dims) != m.latent_dim or min(m.layer_dims) < 1):
            raise SpecError("model.layer_dims", f"{list(m.layer_dims)} must be positive and sum to "
                                                f"model.latent_dim={m.latent_dim}")
        return cls(layer_dims=m.layer_dims, warmup_steps=m.warmup_steps, rung_width=m.rung_width,
                   rung_hidden=m.rung_hidden, **conv_common(spec, graph, ctx.channels), **conv_decoder(m))

    def __init__(self, *, graph: LatentGraph, in_channels: int, resolution: int, layer_dims: Sequence[int] | None = None,
                 warmup_steps: int = 10_000, rung_width: int = 128, rung_hidden: Sequence[int] = (),
                 enc_blocks: int = 12, enc_channels: int = 64, enc_hidden: Sequence[int] = (), dec_blocks: int = 12,
                 dec_channels: int = 64, dec_hidden: Sequence[int] = (), groups: int = 8, recon_loss: str = "bce",
                 hybrid_latents: int = 128):
        super().__init__(graph=graph, recon_loss=recon_loss, hybrid_latents=hybrid_latents)
        dims = tuple(layer_dims) if layer_dims else default_layer_dims(self.latent_dim)
        if sum(dims) != self.latent_dim or min(dims) < 1:
            raise ValueError(f"layer_dims {list(dims)} must be positive and sum to latent_dim={self.latent_dim}")
        self.layer_dims = dims
        self.warmup_steps = int(warmup_steps)
        self.register_buffer("kl_step", torch.zeros((), dtype=torch.long))  # training forwards so far
        L, W = len(dims), rung_width
        self.encoder = ConvEncoder(in_channels=in_channels, resolution=resolution, blocks=enc_blocks,
                                   channels=enc_channels, out_features=W, hidden=enc_hidden, groups=groups)
        # bottom-up: d_i = rung_i(d_{i-1}), heads (mu_hat_i, sigma_hat_i^2); index i-1 holds layer i
        self.up = nn.ModuleList(_Rung(W, rung_hidden, W) for _ in range(L))
        self.q_heads = nn.ModuleList(nn.Linear(W, 2 * d) for d in dims)
        # top-down: h_L = rung(z_L); for i < L: prior head on h_{i+1}, h_i = rung([h_{i+1}, z_i])
        self.top = _Rung(dims[-1], rung_hidden, W)
        self.p_heads = nn.ModuleList(nn.Linear(W, 2 * d) for d in dims[:-1])
        self.down = nn.ModuleList(_Rung(W + d, rung_hidden, W) for d in dims[:-1])
        self.decoder = ConvDecoder(latent_dim=W, out_channels=in_channels, resolution=resolution, blocks=dec_blocks,
                                   channels=dec_channels, hidden=dec_hidden, groups=groups)

    # ---------------------------------------------------------------- passes
    def _bottom_up(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(mu_hat_i, sigma_hat_i^2)] for i = 1..L, each (B, dim_i)."""
        d = self.encoder(x)
        out = []
        for rung, head in zip(self.up, self.q_heads):
            d = rung(d)
            out.append(_gaussian(head, d))
        return out

    def _infer(self, x: torch.Tensor, sample: bool) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """Top-down inference: (z_1..z_L, h_1, per-layer KL summed over dims and averaged over the batch).

        sample=False feeds each layer's posterior mean down (encode); True reparameterises (training)."""
        like = self._bottom_up(x)
        L = len(self.layer_dims)
        zs: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
        kls: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
        mu, var = like[-1]  # top layer: q = the bottom-up Gaussian, p = N(0, I)
        kls[-1] = kl_gaussians(mu, var, torch.zeros_like(mu), torch.ones_like(var)).sum(1).mean()
        zs[-1] = mu + var.sqrt() * torch.randn_like(mu) if sample else mu
        h = self.top(zs[-1])
        for i in range(L - 2, -1, -1):
            mu_p, var_p = _gaussian(self.p_heads[i], h)
            mu, var = precision_weighted(*like[i], mu_p, var_p)
            kls[i] = kl_gaussians(mu, var, mu_p, var_p).sum(1).mean()
            zs[i] = mu + var.sqrt() * torch.randn_like(mu) if sample else mu
            h = self.down[i](torch.cat([h, zs[i].to(h.dtype)], dim=1))
        return zs, h, kls

    def _generate(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        """h_1 from given latents of every layer (B, W)."""
        h = self.top(zs[-1])
        for i in range(len(zs) - 2, -1, -1):
            h = self.down[i](torch.cat([h, zs[i].to(h.dtype)], dim=1))
        return h

    # ---------------------------------------------------------------- LatentModel API
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._infer(x, sample=False)[0], dim=1)

    def decode_logits(self, u: torch.Tensor) -> torch.Tensor:
        return self.decoder(self._generate(u.split(self.layer_dims, dim=1)))

    def kl_weight(self) -> torch.Tensor:
        """The current warm-up beta (a tensor on the model's device: no host sync)."""
        return warmup_beta(self.kl_step, self.warmup_steps).to(self.kl_step.device)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        beta = self.kl_weight()
        if self.training:
            self.kl_step += 1  # counted after reading beta: the first step trains with beta = 0
        zs, h, kls = self._infer(x, sample=True)
        rec = reconstruction_loss(self.decoder(h), x, self.recon_loss)
        kl = torch.stack(kls).sum()
        terms = {f"kl{i + 1}": k for i, k in enumerate(kls)}
        return ModelOutput(loss=rec + beta * kl, recon=rec, kl=kl, beta=beta, **terms)

    @torch.no_grad()
    def sample_latents(self, n: int, method: str = "hybrid", generator: torch.Generator | None = None) -> torch.Tensor:
        """prior: ancestral sampling z_L ~ N(0, I), z_i ~ p(z_i | z_>i); hybrid: as every model (001 sec 2.3)."""
        eps = super().sample_latents(n, method, generator)
        if method != "prior":
            return eps
        eps = eps.split(self.layer_dims, dim=1)
        L = len(self.layer_dims)
        zs: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
        zs[-1] = eps[-1]
        h = self.top(zs[-1])
        for i in range(L - 2, -1, -1):
            mu_p, var_p = _gaussian(self.p_heads[i], h)
            zs[i] = mu_p + var_p.sqrt() * eps[i]
            h = self.down[i](torch.cat([h, zs[i].to(h.dtype)], dim=1))
        return torch.cat(zs, dim=1)
