"""FactorVAE (Kim & Mnih 2018): VAE + gamma * TC, the TC estimated by a discriminator (density-ratio trick)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.latent import LatentGraph
from ..nn.divergences import kl_standard_normal
from ..spec.schema import FactorVAESpec, Spec
from ._spec_args import conv_common, conv_decoder
from .ae import VAE
from .base import BuildContext, ModelOutput, reconstruction_loss, register_model


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples of prod_j q(z_j) from samples of q(z): each column permuted independently across the batch.

    z: (B, D) -> (B, D). Every column keeps its values (the marginals q(z_j) exactly) while the pairing
    between columns is broken (Kim & Mnih 2018, Algorithm 1). One argsort of uniform noise gives all D
    permutations at once.
    """
    dev = generator.device if generator is not None else z.device  # no host work per step on CUDA
    noise = torch.rand(z.shape, generator=generator, device=dev)
    return z.gather(0, noise.to(z.device).argsort(dim=0))


def discriminator(latent_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    """MLP z (B, D) -> 2 logits (B, 2): [q(z), prod_j q(z_j)], LeakyReLU(0.2) between layers (Kim & Mnih,
    appendix: 6 layers of 1000 units)."""
    dims = [latent_dim, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    layers.append(nn.Linear(dims[-1], 2))
    return nn.Sequential(*layers)


@register_model("factorvae")
class FactorVAE(VAE):
    """FactorVAE: loss = recon + KL + gamma * TC, TC ~= E_q(z)[log D(z) / (1 - D(z))] (Kim & Mnih 2018, sec 2).

    D is a classifier between samples of q(z) and of prod_j q(z_j) (permute_dims); with logits
    (a, b) = D(z), log D/(1 - D) = a - b. D is an aux parameter group with its own Adam (lr 1e-4,
    betas (0.5, 0.9): Kim & Mnih's appendix) trained on ModelOutput.aux["discriminator"], the cross-entropy
    of D on z.detach() (label 0) and on permute_dims(z.detach()) (label 1). Kim & Mnih permute the codes of
    a second batch; here the same batch is permuted (the common simplification: the trainer hands the model
    one batch), so D's negatives share their marginal values with its positives. encode() is the posterior
    mean.
    """

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "FactorVAE":
        m: FactorVAESpec = spec.model
        return cls(gamma=m.gamma, discriminator_hidden=m.discriminator_hidden, discriminator_lr=m.discriminator_lr,
                   **conv_common(spec, graph, ctx.channels), **conv_decoder(m))

    def __init__(self, *, gamma: float = 10.0, discriminator_hidden: Sequence[int] = (1000,) * 6,
                 discriminator_lr: float = 1e-4, discriminator_betas: tuple[float, float] = (0.5, 0.9), **kwargs):
        super().__init__(beta=1.0, **kwargs)
        self.gamma = gamma
        self.discriminator_lr = discriminator_lr
        self.discriminator_betas = tuple(discriminator_betas)
        self.discriminator = discriminator(self.latent_dim, discriminator_hidden)

    def aux_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"discriminator": list(self.discriminator.parameters())}

    def aux_optimizer_options(self, name: str, *, lr: float, betas: tuple[float, float]) -> dict:
        if name == "discriminator":
            return {"lr": self.discriminator_lr, "betas": self.discriminator_betas}
        return super().aux_optimizer_options(name, lr=lr, betas=betas)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        mu, logvar = self.posterior(x)
        u = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # (B, D) ~ q(z | x), reparameterised
        rec = reconstruction_loss(self.decode_logits(u), x, self.recon_loss)
        kl = kl_standard_normal(mu, logvar)
        logits = self.discriminator(u).float()  # (B, 2); gradients reach the encoder, not D (trainer's inputs=)
        tc = (logits[:, 0] - logits[:, 1]).mean()  # density-ratio estimate of KL(q(z) || prod_j q(z_j))
        # D's own loss on detached codes: real = q(z) (label 0), permuted = prod_j q(z_j) (label 1)
        zd = u.detach()
        both = self.discriminator(torch.cat([zd, permute_dims(zd)])).float()  # (2B, 2)
        labels = torch.cat([torch.zeros(len(zd), dtype=torch.long), torch.ones(len(zd), dtype=torch.long)])
        d_loss = F.cross_entropy(both, labels.to(both.device))
        return ModelOutput(loss=rec + kl + self.gamma * tc, recon=rec, kl=kl, tc=tc,
                           aux={"discriminator": d_loss})
