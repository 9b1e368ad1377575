"""WAE-MMD (Tolstikhin et al. 2018): a deterministic autoencoder whose aggregate posterior is pulled to N(0, I)."""
from __future__ import annotations

import torch

from ..graph.latent import LatentGraph
from ..nn.divergences import mmd_imq
from ..spec.schema import Spec, WAESpec
from ._spec_args import conv_common, conv_decoder
from .ae import AE
from .base import BuildContext, ModelOutput, reconstruction_loss, register_model


@register_model("wae")
class WAE(AE):
    """WAE-MMD, the "WAE" baseline of 001 sec 3.1: loss = recon + lam * MMD^2(q(z), p(z)).

    Tolstikhin et al. 2018, Algorithm 2: a deterministic encoder z = E(x); the penalty is the unbiased MMD^2
    between the batch's codes and as many draws from the prior p(z) = N(0, I), with the inverse multiquadric
    kernel k(x, y) = C / (C + ||x - y||^2), C = 2 * D * sigma_z^2 (their sec 4; sigma_z^2 = 1 here, scaled by
    `kernel_scale`). Their official code sums the kernel over several scales of C; one scale is used here.
    The penalty acts on the aggregate posterior, not per image, so prior sampling is meaningful (supports "prior").
    """

    supports = AE.supports | {"prior"}

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "WAE":
        m: WAESpec = spec.model
        return cls(lam=m.lam, kernel_scale=m.kernel_scale, **conv_common(spec, graph, ctx.channels), **conv_decoder(m))

    def __init__(self, *, lam: float = 10.0, kernel_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.lam = lam
        self.kernel_scale = kernel_scale

    def forward(self, x: torch.Tensor) -> ModelOutput:
        z = self.encode(x)  # (B, D): deterministic codes
        rec = reconstruction_loss(self.decode_logits(z), x, self.recon_loss)
        prior = torch.randn(z.shape, device=z.device)  # (B, D) ~ p(z) = N(0, I)
        c = 2.0 * self.latent_dim * self.kernel_scale  # WAE sec 4: C = 2 * d_z * sigma_z^2
        mmd = mmd_imq(z.float(), prior, c)
        return ModelOutput(loss=rec + self.lam * mmd, recon=rec, mmd=mmd)
