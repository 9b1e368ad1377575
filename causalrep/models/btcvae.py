"""beta-TC-VAE (Chen et al. 2018): the VAE's KL split into index-code MI, total correlation and dimension-wise KL."""
from __future__ import annotations

import torch

from ..graph.latent import LatentGraph
from ..nn.divergences import TC_ESTIMATORS, kl_standard_normal, tc_decomposition
from ..spec.schema import BTCVAESpec, Spec
from ._spec_args import conv_common, conv_decoder
from .ae import VAE
from .base import BuildContext, ModelOutput, reconstruction_loss, register_model


@register_model("btcvae")
class BetaTCVAE(VAE):
    """beta-TC-VAE: loss = recon + alpha * MI + beta * TC + gamma * dimension-wise KL (Chen et al. 2018, sec 4).

    alpha = gamma = 1 and beta > 1 penalise only the total correlation KL(q(z) || prod_j q(z_j)) beyond the
    ELBO; the three terms are minibatch estimates that need the training set size N: minibatch weighted
    sampling (estimator="mws", Chen et al. sec 4.1, what disentanglement_lib trains with) or stratified
    importance weights ("mss"); see causalrep.nn.divergences.log_importance_weights. One of the models whose
    disentanglement 002 (Table 1) shows collapsing under its dataset perturbation. encode() is the posterior
    mean, as for the VAE.
    """

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "BetaTCVAE":
        m: BTCVAESpec = spec.model
        n = m.dataset_size if m.dataset_size is not None else ctx.train_size()  # N of Chen et al. sec 4.1
        return cls(alpha=m.alpha, beta=m.beta, gamma=m.gamma, dataset_size=n, estimator=m.estimator,
                   **conv_common(spec, graph, ctx.channels), **conv_decoder(m))

    def __init__(self, *, alpha: float = 1.0, beta: float = 6.0, gamma: float = 1.0, dataset_size: int,
                 estimator: str = "mws", **kwargs):
        super().__init__(beta=beta, **kwargs)
        if dataset_size < 1:
            raise ValueError(f"dataset_size must be a positive number of training images, got {dataset_size}")
        if estimator not in TC_ESTIMATORS:
            raise ValueError(f"unknown TC estimator {estimator!r}; valid: {', '.join(TC_ESTIMATORS)}")
        self.alpha, self.gamma, self.estimator = alpha, gamma, estimator
        self.dataset_size = int(dataset_size)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        mu, logvar = self.posterior(x)
        u = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        rec = reconstruction_loss(self.decode_logits(u), x, self.recon_loss)
        mi, tc, dwkl = tc_decomposition(u, mu, logvar, self.dataset_size, self.estimator)  # sum = MC estimate of the KL
        kl = kl_standard_normal(mu, logvar)  # analytic, logged
        loss = rec + self.alpha * mi + self.beta * tc + self.gamma * dwkl
        return ModelOutput(loss=loss, recon=rec, kl=kl, mi=mi, tc=tc, dwkl=dwkl)
