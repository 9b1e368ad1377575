"""CausalVAE (Yang et al. 2021; slides 003): a VAE whose latent is a learned SCM over labelled concepts."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SpecError
from ..graph.draw import adjacency_heatmap, draw_graph
from ..graph.latent import LatentGraph
from ..graph.penalty import LearnedAdjacency, dag_penalty
from ..nn.backbone import ConvDecoder, ConvEncoder
from ..nn.causal import AugmentedLagrangian, GatedMechanism, MaskLayer, linear_scm
from ..spec.schema import CausalVAESpec, ConvDecoderSpec, LearnedGraphSpec, Spec
from ._spec_args import conv_common, conv_decoder, graph_of_kind
from .base import BuildContext, LatentModel, ModelOutput, reconstruction_loss, register_model


def _gauss_kl(mean: torch.Tensor, var: torch.Tensor, prior_mean: torch.Tensor | float = 0.0,
              prior_var: float = 1.0) -> torch.Tensor:
    """KL(N(mean, var) || N(prior_mean, prior_var)) summed over all but the batch dim, averaged over the batch."""
    kl = 0.5 * ((var + (mean - prior_mean) ** 2) / prior_var - 1.0 - torch.log(var) + math.log(prior_var))
    return kl.flatten(1).sum(1).mean()


LABEL_LOSSES = ("gated_mlp", "sigmoid", "linear")


@register_model("causalvae")
class CausalVAE(LatentModel):
    """n concepts of k dims each; nodes of a `learned` graph aligned with the dataset's labels.

    Inference (003 eqs 29-31, 35): eps ~ q(eps|x) = N(mu(x), diag sigma^2(x)) from a conv encoder (the
    reference code's encoder reads x only, so abduction needs no labels); the causal layer gives
    z = (I - A^T)^{-1} eps (eq 27); the mask layer gives the decoder's input z~_i = g_i(A_i ∘ z) + eps_i.
    Loss (eq 41): L = -ELBO + H-penalty(A) + beta * l_u + gamma * l_m, with
      -ELBO = recon + KL(q(eps|x) || N(0, I)) + KL(q(z|x) || p(z|u)), p(z|u) = N(u, I) (eq 33,
              lambda_1(u) = u, lambda_2 = 1; u standardised per label and repeated over a node's k dims),
      l_u = sum_i ||u_i - h_i(A_i ∘ u)||^2 by default (label_loss="gated_mlp"; eq 38 has sigma(A^T u),
              label_loss="sigmoid": the fixed sigmoid cannot reach standardised labels nor express the shadow's
              nonlinear mechanisms, so h_i is a small MLP per node over the A-gated labels, as the reference
              code's per-concept MLP over A^T u, norm-bounded so that A carries each edge's strength:
              nn.causal.GatedMechanism; label_loss="linear": A^T u),
      l_m = sum_i ||z_i - g_i(A_i ∘ z)||^2 (eq 39),
      H-penalty: lam * h(A) + rho/2 * h(A)^2 with h of graph/penalty.py (augmented Lagrangian, or the fixed
              alpha * H(A) of eq 41), plus the graph's L1 sparsity.
    encode() returns the noises' means (the representation U of LatentModel); node_values() the concepts z per
    node, on which do() intervenes (decode_values_logits).
    """

    supports = LatentModel.supports | {"prior"}
    structural = True
    batch_keys = ("labels",)

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "CausalVAE":
        """The learned graph's nodes supervised by the dataset's labels (003), standardised by label statistics
        of up to 20,000 images of ctx.dataset drawn with spec.seed."""
        m: CausalVAESpec = spec.model
        g = graph_of_kind(spec, LearnedGraphSpec, "learns its graph: needs graph kind 'learned'")
        if not isinstance(m.decoder, ConvDecoderSpec):
            raise SpecError("model.decoder.kind", f"model 'causalvae' needs decoder kind 'conv'; got {m.decoder.KIND!r}")
        dataset = ctx.dataset
        names = list(dataset.label_names)
        wanted = list(m.labels) if m.labels else list(graph.nodes)
        where = "model.labels" if m.labels else "graph.nodes"
        if len(wanted) != len(graph.nodes):
            raise SpecError("model.labels", f"{len(wanted)} labels for {len(graph.nodes)} graph nodes")
        missing = [w for w in wanted if w not in names]
        if missing:
            raise SpecError(where, f"no dataset label named {', '.join(map(repr, missing))}; the labels of "
                                   f"{spec.data.name!r} are: {', '.join(names)}")
        index = [names.index(w) for w in wanted]
        rng = np.random.default_rng(spec.seed)
        n = min(len(dataset), 20_000)
        factors = dataset.index_to_factors(rng.choice(len(dataset), size=n, replace=False))
        labels = np.asarray(dataset.labels(factors), dtype=np.float64)[:, index]
        std = labels.std(0)
        if (std == 0).any():
            raise SpecError(where, f"label(s) {[wanted[i] for i in np.flatnonzero(std == 0)]} are constant")
        # created before the model's own layers, in this order (the seeded initialisation depends on it)
        adjacency = LearnedAdjacency(nodes=list(graph.nodes), prior_edges=g.prior_edges,
                                     forbidden_edges=g.forbidden_edges, dag_weight=g.dag_weight, sparsity=g.sparsity,
                                     threshold=g.threshold)
        dag = AugmentedLagrangian(schedule=m.dag_schedule, alpha=g.dag_weight, rho=m.dag_rho, growth=m.dag_rho_growth,
                                  rho_max=m.dag_rho_max, every=m.dag_update_every)
        c = conv_common(spec, graph, ctx.channels)
        return cls(adjacency=adjacency, dag=dag, label_names=wanted, label_index=index,
                   label_mean=labels.mean(0).tolist(), label_std=std.tolist(), mechanism_hidden=m.mechanism_hidden,
                   label_hidden=m.label_hidden, beta_u=m.beta_u, gamma_m=m.gamma_m, kl_weight=m.kl_weight,
                   graph_from=m.graph_from, prior_std=m.prior_std, label_loss=m.label_loss, **c, **conv_decoder(m))

    def __init__(self, *, graph: LatentGraph, adjacency: LearnedAdjacency, label_names: Sequence[str],
                 label_index: Sequence[int],
                 label_mean: Sequence[float], label_std: Sequence[float], in_channels: int, resolution: int,
                 enc_blocks: int = 6, enc_channels: int = 32, enc_hidden: Sequence[int] = (),
                 dec_blocks: int = 6, dec_channels: int = 32, dec_hidden: Sequence[int] = (), groups: int = 8,
                 mechanism_hidden: Sequence[int] = (32,), label_hidden: int = 16,
                 beta_u: float = 1.0, gamma_m: float = 1.0, kl_weight: float = 1.0, graph_from: str = "joint",
                 prior_std: float = 1.0, label_loss: str = "gated_mlp",
                 dag: AugmentedLagrangian | None = None, recon_loss: str = "bce", hybrid_latents: int = 128):
        super().__init__(graph=graph, recon_loss=recon_loss, hybrid_latents=hybrid_latents)
        self.nodes = list(graph.nodes)
        n = len(self.nodes)
        dims = {graph.dims[v] for v in self.nodes}
        if len(dims) != 1:
            raise ValueError(f"CausalVAE needs equal node dims; got {graph.dims}")
        self.k = dims.pop()
        if adjacency.nodes != self.nodes:
            raise ValueError(f"adjacency nodes {adjacency.nodes} differ from the graph's {self.nodes}")
        if not (len(label_names) == len(label_index) == len(label_mean) == len(label_std) == n):
            raise ValueError(f"expected one label per node ({n}); got {len(label_names)} names, {len(label_index)} indices, "
                             f"{len(label_mean)} means, {len(label_std)} stds")
        self.adjacency = adjacency
        self.label_names = list(label_names)  # the dataset label supervising each node, in node order
        self.dag = dag if dag is not None else AugmentedLagrangian()
        self.register_buffer("label_index", torch.as_tensor(list(label_index), dtype=torch.int64))
        self.register_buffer("label_mean", torch.as_tensor(list(label_mean), dtype=torch.float32))
        self.register_buffer("label_std", torch.as_tensor(list(label_std), dtype=torch.float32))
        self.encoder = ConvEncoder(in_channels=in_channels, resolution=resolution, blocks=enc_blocks,
                                   channels=enc_channels, out_features=2 * graph.latent_dim, hidden=enc_hidden,
                                   groups=groups)
        self.decoder = ConvDecoder(latent_dim=graph.latent_dim, out_channels=in_channels, resolution=resolution,
                                   blocks=dec_blocks, channels=dec_channels, hidden=dec_hidden, groups=groups)
        self.mask = MaskLayer(nodes=n, dim=self.k, hidden=mechanism_hidden)
        if label_loss not in LABEL_LOSSES:
            raise ValueError(f"label_loss must be one of {', '.join(LABEL_LOSSES)}; got {label_loss!r}")
        self.label_loss = label_loss
        # gated_mlp only: the sigmoid and linear forms of l_u have no parameters besides A
        self.label_mechanisms = torch.nn.ModuleList(
            GatedMechanism(nodes=n, hidden=label_hidden) for _ in range(n if label_loss == "gated_mlp" else 0))
        self.beta_u, self.gamma_m, self.kl_weight = beta_u, gamma_m, kl_weight
        if graph_from not in ("joint", "labels"):
            raise ValueError(f"graph_from must be joint or labels; got {graph_from!r}")
        # joint: every loss term moves A (003); labels: only l_u, the DAG penalty and the sparsity do, while the
        # causal and mask layers read A without a gradient (the image terms then cannot add edges)
        self.graph_from = graph_from
        if prior_std <= 0:
            raise ValueError(f"prior_std must be positive; got {prior_std}")
        self.prior_var = prior_std ** 2  # lambda_2(u)^2 of p(z|u) = N(u, lambda_2^2) (003 eq 33; 003 takes 1)

    # -- the SCM ------------------------------------------------------------------------------------
    @property
    def A(self) -> torch.Tensor:
        """(n, n) learned adjacency, A[i, j] the weight of node i -> node j (masked by allowed edges)."""
        return self.adjacency.matrix

    def learned_graph(self) -> nx.DiGraph:
        """The thresholded learned graph over the node names (the causal graph do() follows)."""
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from(self.adjacency.edges())
        return g

    @property
    def label_nodes(self) -> dict[str, str]:
        """node -> the dataset label it is supervised with (read by the MIC/TIC and SHD metrics)."""
        return dict(zip(self.nodes, self.label_names))

    def standardise(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, L) raw dataset labels -> (B, n) the nodes' standardised labels u (the prior means)."""
        return (labels[:, self.label_index].float() - self.label_mean) / self.label_std

    def value_of(self, node: str, label: float | torch.Tensor) -> torch.Tensor:
        """A node value for do() from a label in the dataset's units (e.g. degrees): z_i = standardised label,
        the mean of p(z_i | u) (003 eq 33), repeated over the node's k dims: (k,) or (B, k)."""
        i = self._index(node)
        u = (torch.as_tensor(label, dtype=torch.float32, device=self.label_mean.device) - self.label_mean[i]) \
            / self.label_std[i]
        return u[..., None].expand(*u.shape, self.k)

    def label_of(self, node: str, value: torch.Tensor) -> torch.Tensor:
        """The inverse of value_of: a node's value (mean over its k dims) in the dataset's label units."""
        i = self._index(node)
        return value.float().mean(-1) * self.label_std[i] + self.label_mean[i]

    def _index(self, node: str) -> int:
        if node not in self.graph.dims:
            raise KeyError(f"do(): unknown node {node!r}; nodes: {', '.join(self.nodes)}")
        return self.nodes.index(node)

    def _eps(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 2 or u.shape[1] != self.latent_dim:
            raise ValueError(f"expected noises of shape (B, {self.latent_dim}), got {tuple(u.shape)}")
        return u.reshape(-1, len(self.nodes), self.k)

    def scm(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, z~) for noises eps (B, n, k): the causal layer's z and the mask layer's z~ = g(A ∘ z) + eps."""
        a = self.A
        z = linear_scm(a, eps)
        return z, self.mask(a, z) + eps

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """z~ = g(A ∘ z) + eps with eps = (I - A^T) z: the decoder's input as a function of the concepts z alone
        (the causal layer z = A^T z + eps, eq 27, solved for eps). (B, n, k) -> (B, n, k)."""
        a = self.A
        return self.mask(a, z) + z - torch.einsum("ji,bjk->bik", a.to(z.dtype), z)

    # -- LatentModel --------------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def decode_logits(self, u: torch.Tensor) -> torch.Tensor:
        _, zt = self.scm(self._eps(u))
        return self.decoder(zt.flatten(1))

    @torch.no_grad()
    def node_values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each concept's z_i (B, k): the causal layer's output, the variable p(z|u) ties to its label (eq 33),
        so value_of()/label_of() convert between it and the label's units."""
        z, _ = self.scm(self._eps(self.encode(x)))
        return {v: z[:, i] for i, v in enumerate(self.nodes)}

    def decode_values_logits(self, u: torch.Tensor, values: Mapping[str, Any]) -> torch.Tensor:
        """do(z_i := value) on the concepts z, then decode (abduction, action, prediction).

        The SCM lives on z, the label-aligned concepts: the mask layer's g_j was trained (l_m, eq 39) to
        predict z_j from A_j ∘ z, so it is node j's mechanism. Abduction: z from x's noises, and each node's
        residual r_j = z_j - g_j(A_j ∘ z). Action: the set nodes take their values, their mechanisms cut.
        Prediction: their descendants in the thresholded learned graph, in topological order,
        z'_j = g_j(A_j ∘ z') + r_j; the decoder reads z~' = g(A ∘ z') + (I - A^T) z' (decoder_input), the
        function of z it was trained on. Non-descendants keep z and z~ bit-for-bit.
        (Setting z~ instead, and feeding z~ back into the mechanisms, gives the decoder inputs it never saw
        in training: measured on the pendulum, do(pendulum angle) then misses its set value by 13.5 degrees
        instead of 1.5; docs/interventions.md.)"""
        z, zt = self.scm(self._eps(u))
        graph = self.learned_graph()
        if not nx.is_directed_acyclic_graph(graph):  # no order to recompute descendants in (e.g. 003's fixed
            edges = nx.find_cycle(graph)  # alpha H(A))
            cycle = " -> ".join([a for a, _ in edges] + [edges[0][0]])
            raise ValueError(f"do(): the learned graph (|A_ij| > {self.adjacency.threshold}) has a cycle, {cycle}; "
                             f"value-level do() needs a DAG (train longer, or a larger graph.dag_weight / the "
                             f"augmented_lagrangian dag_schedule)")
        zp = z.clone()
        changed: set[str] = set()
        for node, value in values.items():
            i = self._index(node)
            zp[:, i] = self._check_value(node, value, zp.shape[0], zp)
            changed |= nx.descendants(graph, node)
        changed -= set(values)
        a = self.A
        for node in nx.topological_sort(graph):
            if node in changed:
                j = self.nodes.index(node)
                zp[:, j] = self.mask.mechanism(j, a, zp) + (z[:, j] - self.mask.mechanism(j, a, z))
        moved = [self.nodes.index(v) for v in changed | set(values)]
        zt = zt.clone()
        zt[:, moved] = self.decoder_input(zp)[:, moved]
        return self.decoder(zt.flatten(1))

    def _check_value(self, node: str, value: Any, batch: int, like: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        if v.dim() == 0 or v.shape == (self.k,):
            return v.expand(batch, self.k)
        if v.shape == (batch, self.k) or (self.k == 1 and v.shape == (batch,)):
            return v.reshape(batch, self.k)
        raise ValueError(f"do(): value for node {node!r} has shape {tuple(v.shape)}; expected a number, "
                         f"({self.k},) or ({batch}, {self.k})")

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        if labels is None:
            raise ValueError("CausalVAE is trained with labels: forward(x, labels=(B, L) dataset labels)")
        mu, logvar = self.posterior(x)
        var = logvar.exp()
        eps = self._eps(mu + var.sqrt() * torch.randn_like(mu))  # (B, n, k) reparameterised
        a_labels = self.A
        a = a_labels if self.graph_from == "joint" else a_labels.detach()
        # C = (I - A^T)^-1 once per step: z = C eps (003 eq 27) and q(z|x)'s mean C mu and variances (C*C) var
        c = torch.linalg.inv(torch.eye(len(self.nodes), device=a.device, dtype=a.dtype) - a.T)
        z = torch.einsum("ij,bjk->bik", c, eps)
        zt = self.mask(a, z) + eps  # the decoder's input z~ (mask layer)
        rec = reconstruction_loss(self.decoder(zt.flatten(1)), x, self.recon_loss)
        # q(z|x) = N(C mu, C diag(var) C^T) with C = (I - A^T)^-1: its marginals have variance sum_j C_ij^2 var_j
        z_mean = torch.einsum("ij,bjk->bik", c, self._eps(mu))
        z_var = torch.einsum("ij,bjk->bik", c * c, self._eps(var))
        u = self.standardise(labels)  # (B, n)
        kl_eps = _gauss_kl(mu, var)
        kl_z = _gauss_kl(z_mean, z_var, u[..., None], self.prior_var)  # p(z|u) = N(u, lambda_2^2 I), eq 33
        l_u = ((u - self.predict_labels(u, a_labels)) ** 2).sum(1).mean()  # eq 38
        l_m = ((z - self.mask(a, z)) ** 2).flatten(1).sum(1).mean()  # eq 39
        h = dag_penalty(a_labels)
        sparsity = self.adjacency.sparsity * a_labels.abs().sum()
        loss = rec + self.kl_weight * (kl_eps + kl_z) + self.beta_u * l_u + self.gamma_m * l_m + self.dag(h) \
            + sparsity
        if self.training:
            self.dag.step(h)
        return ModelOutput(loss=loss, recon=rec, kl_eps=kl_eps, kl_z=kl_z, l_u=l_u, l_m=l_m, h_A=h.detach(),
                           dag_rho=self.dag.rho.detach(), edges=(a.detach().abs() > self.adjacency.threshold).sum())

    def predict_labels(self, u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """l_u's prediction of each standardised label from its parents' (B, n) -> (B, n) (003 eq 38)."""
        if self.label_loss == "sigmoid":  # sigma(A^T u) as 003 eq 38 writes it: row b is sigma(u_b A)
            return torch.sigmoid(u @ a)
        if self.label_loss == "linear":  # A^T u: the linear SEM u = A^T u + noise on the labels
            return u @ a
        # h_i(A_i ∘ u): node i reads every label gated by its column of A (003 "Step 2"'s A_i ∘ z notation)
        return torch.cat([h(u * a[:, i]) for i, h in enumerate(self.label_mechanisms)], dim=1)

    # -- pictures -------------------------------------------------------------------------------------
    def track_images(self) -> dict[str, torch.Tensor]:
        return {"adjacency": adjacency_heatmap(self.A.detach().cpu(), self.nodes, self.adjacency.threshold)}

    def report_images(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"adjacency": adjacency_heatmap(self.A.detach().cpu(), self.nodes, self.adjacency.threshold),
                "learned_graph": draw_graph(self.learned_graph())}
