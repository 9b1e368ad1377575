"""LatentModel: encode/decode, the reconstruction loss, interventions, traversals, hybrid sampling; the model registry."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.latent import LatentGraph
from ..registry import Registry

# model spec kind -> the class whose from_spec builds it (filled by @register_model beside each class)
MODELS: Registry[type["LatentModel"]] = Registry("model")
# the latent graph a spec without `graph:` gets: independent dims (the baselines, 001 sec 3.1) or a chain over
# latent_dim nodes (the structural decoders' SAE-D ordering, 001 sec 2)
DEFAULT_GRAPHS = ("independent", "chain")


def register_model(*kinds: str, default_graph: str = "independent") -> Callable[[type], type]:
    """Class decorator: registers the class in MODELS under each model spec kind it builds (VAE builds both
    `vae` and `bvae`) and declares `default_graph`, the graph of a spec that leaves `graph` out (DEFAULT_GRAPHS).

    The class must define its own `from_spec(spec, graph, ctx)` classmethod, the one place its spec is read.
    """
    if not kinds:
        raise ValueError("register_model needs at least one model spec kind")
    if default_graph not in DEFAULT_GRAPHS:
        raise ValueError(f"default_graph must be one of {', '.join(DEFAULT_GRAPHS)}; got {default_graph!r}")

    def deco(cls: type) -> type:
        if not isinstance(vars(cls).get("from_spec"), classmethod):
            raise TypeError(f"model {cls.__name__} ({', '.join(kinds)}) defines no from_spec classmethod of its own")
        taken = [f"{k!r} (by {MODELS.get(k).__name__})" for k in kinds if k in MODELS]
        if taken or len(set(kinds)) < len(kinds):
            raise KeyError(f"model {cls.__name__}: kinds already registered: {', '.join(taken) or 'repeated'}")
        cls.kinds, cls.default_graph = tuple(kinds), default_graph
        for kind in kinds:
            MODELS.register(kind)(cls)
        return cls

    return deco


@dataclass(frozen=True)
class BuildContext:
    """What a model's from_spec may read beside the spec and the latent graph, filled by build.build_model (the
    models never import the data package): the images' channels, the dataset the model is built for (a
    GroundTruthDataset, e.g. CausalVAE's label statistics) and the train split's size (computed on demand)."""

    channels: int
    dataset: Any
    train_size: Callable[[], int]


class ModelOutput(dict):
    """`loss` (scalar tensor to minimise) plus named scalar terms; attribute access (pythae's ModelOutput)."""

    def __init__(self, loss: torch.Tensor, **terms: Any):
        super().__init__(loss=loss, **terms)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


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


class LatentModel(nn.Module):
    """Base of every autoencoder-like model: latents U are laid out by `graph` (one slice per node).

    Subclasses implement `encode` (deterministic representation), `decode_logits` and `forward`
    (returning ModelOutput). Interventions act on the noises U: abduction (encode), action (set a
    node's slice), prediction (decode) — 001 sec 2.1's reading of the latents as SCM noises.
    """

    structural = False  # True where do() on a node provably leaves non-descendants' features unchanged
    has_prior = False  # True where prior sampling is meaningful (regularised models, 001 sec 3)
    # True where decode(encode(x)) reconstructs x from a latent code, so reconstructions, traversals, stored
    # hybrid latents and samples apply; False for image-to-image models (the ICM committee, 004)
    reconstructs = True
    # what forward(x, **batch) takes beside the images; the trainer supplies each (Trainer.batch_extras)
    batch_keys: tuple[str, ...] = ()
    # the model spec kinds the class builds and the graph a spec without `graph:` gets: set by @register_model
    kinds: tuple[str, ...] = ()
    default_graph = "independent"

    def __init__(self, *, graph: LatentGraph, recon_loss: str = "bce", hybrid_latents: int = 128):
        super().__init__()
        self.graph = graph
        self.latent_dim = graph.latent_dim
        self.recon_loss = recon_loss
        # N stored latents of training images for hybrid sampling and traversal ranges (001 sec 2.3)
        self.register_buffer("latent_bank", torch.zeros(hybrid_latents, graph.latent_dim))
        self.register_buffer("latent_bank_filled", torch.zeros((), dtype=torch.bool))

    # -- to implement -----------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: Any, graph: LatentGraph, ctx: BuildContext) -> "LatentModel":
        """The model of `spec.model` over `graph` (build.build_model calls it after seeding torch with spec.seed):
        reads the spec, raises a SpecError naming the key path for what the spec cannot ask of this model, and
        calls __init__ with plain keyword arguments."""
        raise NotImplementedError(f"{cls.__name__} defines no from_spec")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode_logits(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def aux_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups trained by their own optimiser on ModelOutput.aux[name] (default: none)."""
        return {}

    def aux_optimizer_options(self, name: str, *, lr: float, betas: tuple[float, float]) -> dict:
        """Adam options of an aux group (default: the main lr and betas)."""
        return {"lr": lr, "betas": betas}

    # the name the trainer logs validation_error under (context "val"); a model whose validation_error is not a
    # reconstruction error names its own (the ICM committee: committee_error)
    validation_metric = "recon_error"

    def validation_error(self, x: torch.Tensor) -> torch.Tensor:
        """The scalar the trainer tracks on validation images (logged as `validation_metric`[val]): by default
        the per-image reconstruction loss; a model that does not reconstruct its input redefines both."""
        return reconstruction_loss(self.decode_logits(self.encode(x)), x, self.recon_loss)

    def on_fit_start(self, trainer: Any) -> None:
        """Called by the trainer each time fit() starts, on a fresh run and on resume (before before_fit);
        default: nothing."""

    def before_fit(self, trainer: Any) -> None:
        """Called once by the trainer before step 1 of a fresh run (not on resume); default: nothing."""

    def after_step(self, trainer: Any) -> None:
        """Called by the trainer after each optimiser step (trainer.step already counts it); default: nothing."""

    def should_stop(self, trainer: Any) -> str | None:
        """Called by the trainer after each validation step (after track_metrics): a reason (str) stops training
        there, with a checkpoint; default: None (train all train.steps)."""
        return None

    def track_metrics(self) -> dict[str, float]:
        """Model-specific scalars the trainer logs (context "val") at each validation step, before
        track_images() (e.g. the ICM committee's win statistics on validation images); default: none."""
        return {}

    def track_images(self) -> dict[str, torch.Tensor]:
        """Model-specific images ((C, H, W) in [0, 1]) the trainer logs at each validation step
        (e.g. the learned adjacency as a heat map); default: none."""
        return {}

    def report_images(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model-specific images for the report of a finished run, given validation images x
        (e.g. ASAE's attention maps, the ICM win matrix); each becomes <name>.png; default: none."""
        return {}

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
        prior: N(0, I)."""
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
