"""LatentModel: encode/decode, the reconstruction loss, interventions, traversals, hybrid sampling (a Trainable)."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from ..graph.latent import LatentGraph
from .trainable import (CAPABILITIES, DEFAULT_GRAPHS, MODELS, BuildContext, FitContext, ModelOutput,  # noqa: F401
                        Trainable, register_model)  # (re-exported: models.base is where a model file imports from)


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-image loss summed over pixels, averaged over the batch: (B, C, H, W) x2 -> scalar.

    bce: Bernoulli log-likelihood of x in [0, 1] given decoder logits (001 sec 3 trains and
    reports BCE); mse: squared error of sigmoid(logits).
    """
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
    elif kind == "mse":
        per = (torch.sigmoid(logits.float()) - x.float()) ** 2
    else:
        raise ValueError(f"unknown reconstruction loss {kind!r}; valid: bce, mse")
    return per.flatten(1).sum(1).mean()


class LatentModel(Trainable):
    """Base of every autoencoder-like model: latents U are laid out by `graph` (one slice per node).

    Subclasses implement `encode` (deterministic representation), `decode_logits` and `forward`
    (returning ModelOutput). Interventions act on the noises U: abduction (encode), action (set a
    node's slice), prediction (decode) — 001 sec 2.1's reading of the latents as SCM noises.
    A model with a regularised latent space adds "prior" to `supports` (LatentModel.supports | {"prior"}).
    """

    # declared by the class; an instance whose configuration lacks one (ASAE with a conv decoder has no node
    # mechanisms for value-level do()) removes it from its own `supports`
    supports = frozenset({"reconstruct", "hybrid", "do_noise", "do_value"})
    structural = False  # True where do() on a node provably leaves non-descendants' features unchanged
    validation_metric = "recon_error"

    def __init__(self, *, graph: LatentGraph, recon_loss: str = "bce", hybrid_latents: int = 128):
        super().__init__(graph=graph)
        self.recon_loss = recon_loss
        # N stored latents of training images for hybrid sampling and traversal ranges (001 sec 2.3)
        self.register_buffer("latent_bank", torch.zeros(hybrid_latents, graph.latent_dim))
        self.register_buffer("latent_bank_filled", torch.zeros((), dtype=torch.bool))
        if graph.nx.number_of_edges() and type(self).decode_values_logits is LatentModel.decode_values_logits:
            self.supports = self.supports - {"do_value"}  # the default value-level do() needs a graph without edges

    # -- to implement -----------------------------------------------------------------------------
    def decode_logits(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def validation_error(self, x: torch.Tensor) -> torch.Tensor:
        """The per-image reconstruction loss of validation images (logged as recon_error[val])."""
        return reconstruction_loss(self.decode_logits(self.encode(x)), x, self.recon_loss)

    # -- shared API -------------------------------------------------------------------------------
    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]: (B, latent_dim) -> (B, C, H, W)."""
        return torch.sigmoid(self.decode_logits(u))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def intervene(self, u: torch.Tensor, do: Mapping[str, Any]) -> torch.Tensor:
        """A copy of latents u (B, D) with each node's noise slice set to its value.

        A value is a number, a (dim,) vector or a (B, dim) batch; anything else is an error
        naming the node and the shapes.
        """
        u = u.clone()
        for node, value in do.items():
            if node not in self.graph.dims:
                raise KeyError(f"do(): unknown node {node!r}; nodes: {', '.join(self.graph.nodes)}")
            sl = self.graph.slice(node)
            dim = self.graph.dims[node]
            v = torch.as_tensor(value, dtype=u.dtype, device=u.device)
            if v.dim() == 0:
                v = v.expand(u.shape[0], dim)
            elif v.shape == (dim,):
                v = v.expand(u.shape[0], dim)
            elif v.shape == (u.shape[0], dim) or (dim == 1 and v.shape == (u.shape[0],)):
                v = v.reshape(u.shape[0], dim)
            else:
                raise ValueError(f"do(): value for node {node!r} has shape {tuple(v.shape)}; expected a number, "
                                 f"({dim},) or ({u.shape[0]}, {dim})")
            u[:, sl] = v
        return u

    def decode_values_logits(self, u: torch.Tensor, values: Mapping[str, Any]) -> torch.Tensor:
        """Decoder logits of latents u with the listed nodes' values fixed (their mechanisms cut, their
        descendants recomputed). Default, for models without mechanisms between latents (a graph with no
        edges: AE, VAE and the other baselines): a node's value is its latent, so this is intervene()."""
        if self.graph.nx.number_of_edges():
            raise NotImplementedError(f"{type(self).__name__} does not implement value-level do(); use on='noise'")
        return self.decode_logits(self.intervene(u, values))

    @torch.no_grad()
    def do(self, x: torch.Tensor, do: Mapping[str, Any], on: str = "value") -> torch.Tensor:
        """Images of x's units under an intervention (abduction: encode x; action; prediction: decode).

        on="value": do(node := value). The node's mechanism is cut and its descendants are recomputed
            through the learned mechanisms from the new value; non-descendants keep their values.
            A value is what the node holds: its latent (CausalVAE z_i, a baseline's dim) or, in a
            structural decoder, its feature map S_i (e.g. another image's, from node_values()).
        on="noise": the node's exogenous noise U_i is set instead; its mechanism still runs.
        x: (B, C, H, W) -> (B, C, H, W). Unknown nodes and wrong shapes are errors naming both.
        """
        u = self.encode(x)
        if on == "noise":
            return self.decode(self.intervene(u, do))
        if on == "value":
            return torch.sigmoid(self.decode_values_logits(u, do))
        raise ValueError(f"do(): on={on!r} is not an intervention target; valid: value, noise")

    @torch.no_grad()
    def counterfactual(self, x: torch.Tensor, do: Mapping[str, Any], on: str = "noise") -> torch.Tensor:
        """Abduction (U = encode(x)), action (set the nodes' noises, or values with on="value"), prediction."""
        return self.do(x, do, on=on)

    @torch.no_grad()
    def node_values(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each node's value for images x (what do(on="value") sets): by default its latent slice."""
        u = self.encode(x)
        return {node: u[:, self.graph.slice(node)] for node in self.graph.nodes}

    def node_range(self, node: str, quantiles: tuple[float, float] = (0.05, 0.95)) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dim (low, high) of a node's stored latents; ±2 (the N(0, 1) prior's bulk) before any are stored."""
        sl = self.graph.slice(node)
        if bool(self.latent_bank_filled):
            bank = self.latent_bank[:, sl]
            return torch.quantile(bank, quantiles[0], dim=0), torch.quantile(bank, quantiles[1], dim=0)
        dim = self.graph.dims[node]
        ref = self.latent_bank
        return torch.full((dim,), -2.0, device=ref.device), torch.full((dim,), 2.0, device=ref.device)

    @torch.no_grad()
    def traverse(self, x: torch.Tensor, node: str, steps: int = 9) -> torch.Tensor:
        """Decode x's latents with `node` swept linearly over its range: (B, steps, C, H, W)."""
        u = self.encode(x)
        low, high = self.node_range(node)
        t = torch.linspace(0, 1, steps, device=u.device)[:, None]
        values = low[None] + t * (high - low)[None]  # (steps, dim)
        rows = [self.decode(self.intervene(u, {node: v})) for v in values]
        return torch.stack(rows, dim=1)

    @torch.no_grad()
    def store_latents(self, u: torch.Tensor) -> None:
        """Keep latents of N training images for hybrid sampling (001 sec 2.3)."""
        n = self.latent_bank.shape[0]
        if u.shape != (n, self.latent_dim):
            raise ValueError(f"store_latents: expected shape ({n}, {self.latent_dim}), got {tuple(u.shape)}")
        self.latent_bank.copy_(u)
        self.latent_bank_filled.fill_(True)

    @torch.no_grad()
    def sample_latents(self, n: int, method: str = "hybrid", generator: torch.Generator | None = None) -> torch.Tensor:
        """hybrid: each node's value from an independently chosen stored latent (001 sec 2.3);
        prior: N(0, I) (a model whose prior is not, e.g. the Ladder VAE's hierarchy, redefines this)."""
        dev = self.latent_bank.device
        if method == "prior":  # drawn where the generator lives (CPU by default), then moved
            gdev = generator.device if generator is not None else "cpu"
            return torch.randn(n, self.latent_dim, generator=generator, device=gdev).to(dev)
        if method != "hybrid":
            raise ValueError(f"unknown sampling method {method!r}; valid: hybrid, prior")
        if not bool(self.latent_bank_filled):
            raise RuntimeError("hybrid sampling needs stored latents: call store_latents() (the trainer does)")
        out = torch.empty(n, self.latent_dim, device=dev)
        for node in self.graph.nodes:  # baselines' graphs have one node per dim, as 001 sec 3.1 treats them
            sl = self.graph.slice(node)
            j = torch.randint(0, self.latent_bank.shape[0], (n,), generator=generator).to(dev)
            out[:, sl] = self.latent_bank[j, sl]
        return out

    @torch.no_grad()
    def sample(self, n: int, method: str = "hybrid", generator: torch.Generator | None = None) -> torch.Tensor:
        return self.decode(self.sample_latents(n, method, generator))
