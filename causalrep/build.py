"""The only place a spec becomes objects: dataset, latent graph, model (registries live beside it)."""
from __future__ import annotations

from typing import Callable

import torch

from . import data as _data  # noqa: F401  (registers the built-in datasets)
from . import models as _models  # noqa: F401  (registers the built-in models)
from .data.base import DATASETS, FILE_LOADERS, GroundTruthDataset, Split, factor_mask
from .data.perturb import PatternPerturbation, UniformNoise, factor_s, latent_s
from .errors import SpecError
from .graph.kinds import GRAPHS, independent_graph
from .graph.latent import LatentGraph
from .models.base import MODELS, LatentModel
from .registry import Registry
from .spec.schema import (AESpec, ConvDecoderSpec, ConvEncoderSpec, ModelSpec, PatternPerturbationSpec, SAESpec,
                          Spec, StructuralDecoderSpec, UniformPerturbationSpec, VAESpec)
from .spec.schema import BTCVAESpec, FactorVAESpec, LadderVAESpec, WAESpec

# model spec kind -> fn(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel
BUILDERS: Registry[Callable[..., LatentModel]] = Registry("model builder")
# model kinds whose decoder follows the latent graph (they default to a chain over latent_dim nodes)
STRUCTURAL_KINDS = {"sae"}


def build_dataset(spec: Spec) -> GroundTruthDataset:
    """The dataset named by `data.name`, at `data.resolution` (real files via `data.path`), wrapped
    in its perturbation (002) when `data.perturbation` is set."""
    d = spec.data
    if d.name not in DATASETS:
        raise SpecError("data.name", f"unknown dataset {d.name!r}; allowed: {', '.join(DATASETS.names())}")
    if d.path is None:
        dataset = DATASETS.get(d.name)(resolution=d.resolution)
    elif d.name in FILE_LOADERS:
        dataset = FILE_LOADERS.get(d.name)(path=d.path, resolution=d.resolution)
    else:
        raise SpecError("data.path", f"dataset {d.name!r} has no real-file loader; loaders: "
                                     f"{', '.join(FILE_LOADERS.names())}")
    p = d.perturbation
    if isinstance(p, PatternPerturbationSpec):
        s = factor_s(dataset, p.factor, p.scale) if p.factor is not None else latent_s(p.run, p.scale)
        dataset = PatternPerturbation(dataset, epsilon=p.epsilon, s=s, seed=p.seed, fit=p.fit)
    elif isinstance(p, UniformPerturbationSpec):
        dataset = UniformNoise(dataset, epsilon=p.epsilon, seed=p.seed, fit=p.fit)
    return dataset


def build_split(spec: Spec, dataset: GroundTruthDataset) -> Split:
    """The seeded train/val/test split, after the data.include / data.exclude factor filters."""
    keep = factor_mask(dataset, spec.data.include, spec.data.exclude, where="data")
    return Split(len(dataset), spec.data.split, spec.seed, keep)


def build_graph(spec: Spec, true_graph=None) -> LatentGraph:
    """The latent graph of `graph:`, checked against model.latent_dim; baselines default to
    independent dims and structural models to a chain over latent_dim nodes (SAE-D)."""
    latent_dim = getattr(spec.model, "latent_dim", None)
    if spec.graph is None:
        if spec.model.KIND in STRUCTURAL_KINDS:
            from .spec.schema import ChainGraphSpec

            return GRAPHS.get("chain")(ChainGraphSpec(nodes=latent_dim), latent_dim=latent_dim)
        return independent_graph(latent_dim)
    return GRAPHS.get(spec.graph.KIND)(spec.graph, latent_dim=latent_dim, true_graph=true_graph)


def validate_spec(spec: Spec) -> None:
    """Cross-section rules that the schema alone cannot express; each error names its key path."""
    if spec.data.name not in DATASETS:
        raise SpecError("data.name", f"unknown dataset {spec.data.name!r}; allowed: {', '.join(DATASETS.names())}")
    if spec.model.KIND not in BUILDERS:
        raise SpecError("model.kind", f"no builder for {spec.model.KIND!r}; allowed: {', '.join(BUILDERS.names())}")
    res = spec.data.resolution
    if res < 8:
        raise SpecError("data.resolution", f"expected at least 8 pixels, got {res}")
    from .metrics import METRICS

    for i, m in enumerate(spec.evaluate.metrics):
        if m not in METRICS:
            raise SpecError(f"evaluate.metrics[{i}]", f"unknown metric {m!r}; allowed: {', '.join(METRICS.names())}")
    for key in ("encoder", "decoder"):
        sub = getattr(spec.model, key, None)
        blocks = getattr(sub, "blocks", None)
        if blocks is not None:
            if blocks < 1:
                raise SpecError(f"model.{key}.blocks", f"expected a positive int, got {blocks}")
            pools = (blocks + 2) // 3
            if res % 2 ** pools:
                raise SpecError(f"model.{key}.blocks", f"{blocks} blocks pool/upsample {pools} times, which "
                                                      f"does not divide data.resolution={res}")
        ch, groups = getattr(sub, "channels", None), getattr(sub, "groups", None)
        if ch is not None and groups and ch % groups:
            raise SpecError(f"model.{key}.channels", f"{ch} is not divisible by groups={groups}")
    true_graph = None
    if spec.graph is not None and getattr(spec.graph, "from_dataset", False):
        true_graph = build_dataset(spec).true_graph
    build_graph(spec, true_graph)


def check_spec(spec: Spec) -> dict:
    """Everything `python -m causalrep.run --check` verifies beyond load_spec (the schema and validate_spec),
    without training or writing anything: the dataset builds at data.resolution (each dataset supports a few
    sizes), the split and its include/exclude filters, evaluate.baseline and train.init_from exist, and the
    model builds, on PyTorch's meta device (no memory is allocated, whatever the model's size).
    Every problem is a SpecError naming the key path; returns {"kind", "params", "dataset", "images"}."""
    from .errors import CausalrepError, DataError

    validate_spec(spec)
    try:
        dataset = build_dataset(spec)
        build_split(spec, dataset)
    except DataError as exc:  # e.g. a resolution the dataset does not render, a malformed real-data file
        raise SpecError("data", str(exc)) from None
    from .report import read_baseline
    from .train.transfer import checkpoint_path

    for key, value, check in (("evaluate.baseline", spec.evaluate.baseline, read_baseline),
                              ("train.init_from", spec.train.init_from, checkpoint_path)):
        if value is not None:
            try:
                check(value)  # the checks the run makes before it trains (read only)
            except SpecError:
                raise
            except (OSError, ValueError) as exc:  # a NUL byte, a name the file system refuses, unreadable JSON
                raise SpecError(key, f"cannot read {value!r}: {exc}") from None
    try:
        with torch.device("meta"):
            model = build_model(spec, dataset)
    except CausalrepError:
        raise
    except Exception as exc:  # a builder's own failure: still one line naming the section, never a traceback
        raise SpecError("model", f"cannot be built: {type(exc).__name__}: {exc}") from None
    return {"kind": spec.model.KIND, "params": sum(p.numel() for p in model.parameters()), "dataset": spec.data.name,
            "images": len(dataset)}


def build_model(spec: Spec, dataset: GroundTruthDataset | None = None, graph: LatentGraph | None = None) -> LatentModel:
    """The model of `model:`, wired to the dataset's channels and resolution and the latent graph."""
    dataset = dataset if dataset is not None else build_dataset(spec)
    graph = graph if graph is not None else build_graph(spec, dataset.true_graph)
    if spec.model.KIND not in BUILDERS:
        raise SpecError("model.kind", f"no builder for {spec.model.KIND!r}; allowed: {', '.join(BUILDERS.names())}")
    torch.manual_seed(spec.seed)  # initialisation is a function of the seed
    return BUILDERS.get(spec.model.KIND)(spec, graph, dataset.channels)


def _common(spec: Spec, graph: LatentGraph, channels: int) -> dict:
    m = spec.model
    enc = m.encoder
    if not isinstance(enc, ConvEncoderSpec):
        raise SpecError("model.encoder.kind", f"model {m.KIND!r} supports encoder kinds: conv; got {enc.KIND!r}")
    return dict(graph=graph, in_channels=channels, resolution=spec.data.resolution, enc_blocks=enc.blocks,
                enc_channels=enc.channels, enc_hidden=enc.hidden, groups=enc.groups, recon_loss=spec.train.loss,
                hybrid_latents=spec.evaluate.hybrid_latents)


def _conv_decoder(m: AESpec) -> dict:
    if not isinstance(m.decoder, ConvDecoderSpec):
        raise SpecError("model.decoder.kind", f"model {m.KIND!r} needs decoder kind 'conv'; got {m.decoder.KIND!r}")
    return dict(dec_blocks=m.decoder.blocks, dec_channels=m.decoder.channels, dec_hidden=m.decoder.hidden)


@BUILDERS.register("ae")
def _build_ae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    return MODELS.get("ae")(**_common(spec, graph, channels), **_conv_decoder(spec.model))


@BUILDERS.register("vae")
@BUILDERS.register("bvae")
def _build_vae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    m: VAESpec = spec.model
    return MODELS.get("vae")(beta=m.beta, **_common(spec, graph, channels), **_conv_decoder(m))


@BUILDERS.register("sae")
def _build_sae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    m: SAESpec = spec.model
    if not isinstance(m.decoder, StructuralDecoderSpec):
        raise SpecError("model.decoder.kind", f"model 'sae' needs decoder kind 'structural'; got {m.decoder.KIND!r}")
    if graph.kind not in ("chain", "dag"):
        raise SpecError("graph.kind", f"model 'sae' compiles chain or dag graphs; got {graph.kind!r}")
    return MODELS.get("sae")(dec_blocks=m.decoder.blocks, dec_channels=m.decoder.channels,
                             mechanism_hidden=m.decoder.mechanism_hidden, **_common(spec, graph, channels))



@BUILDERS.register("wae")
def _build_wae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    m: WAESpec = spec.model
    return MODELS.get("wae")(lam=m.lam, kernel_scale=m.kernel_scale, **_common(spec, graph, channels),
                             **_conv_decoder(m))


def train_split_size(spec: Spec) -> int:
    """Images in the train split of `data:`, from the dataset class's factor grid (no images are built).

    The registered class's factor_sizes, data.include/exclude and data.split give exactly the size of
    build_split(...).train; a real-file loader whose grid is only known once its file is read (digits' MNIST)
    counts its class defaults: set the model's dataset_size explicitly there.
    """
    d = spec.data
    registry = FILE_LOADERS if d.path is not None and d.name in FILE_LOADERS else DATASETS
    cls = registry.get(d.name)
    grid = GroundTruthDataset()  # a stand-in carrying only the factor grid
    grid.factor_names, grid.factor_sizes = tuple(cls.factor_names), tuple(cls.factor_sizes)
    grid.factor_value_names = dict(cls.factor_value_names)
    return len(build_split(spec, grid).train)


@BUILDERS.register("btcvae")
def _build_btcvae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    m: BTCVAESpec = spec.model
    n = m.dataset_size if m.dataset_size is not None else train_split_size(spec)  # N of Chen et al. sec 4.1
    return MODELS.get("btcvae")(alpha=m.alpha, beta=m.beta, gamma=m.gamma, dataset_size=n, estimator=m.estimator,
                                **_common(spec, graph, channels), **_conv_decoder(m))


@BUILDERS.register("factorvae")
def _build_factorvae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    m: FactorVAESpec = spec.model
    return MODELS.get("factorvae")(gamma=m.gamma, discriminator_hidden=m.discriminator_hidden,
                                   discriminator_lr=m.discriminator_lr, **_common(spec, graph, channels),
                                   **_conv_decoder(m))


@BUILDERS.register("laddervae")
def _build_laddervae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    m: LadderVAESpec = spec.model
    if m.layer_dims is not None and (sum(m.layer_dims) != m.latent_dim or min(m.layer_dims) < 1):
        raise SpecError("model.layer_dims", f"{list(m.layer_dims)} must be positive and sum to "
                                            f"model.latent_dim={m.latent_dim}")
    return MODELS.get("laddervae")(layer_dims=m.layer_dims, warmup_steps=m.warmup_steps, rung_width=m.rung_width,
                                   rung_hidden=m.rung_hidden, **_common(spec, graph, channels), **_conv_decoder(m))

def model_kinds() -> list[str]:
    """Every model kind a spec can name (the contract tests run over all of them)."""
    return [k for k in ModelSpec.KINDS.names() if k in BUILDERS]


# ---------------------------------------------------------------- AdaAE, VLAE, ASAE (001 sec 3.1, 000 sec 2)
from .spec.schema import AdaAESpec, ASAESpec, AttentionEncoderSpec, VLAESpec  # noqa: E402

STRUCTURAL_KINDS.add("asae")  # 000: an attention encoder + the K = 12 structural decoder (chain over latent_dim)


def _independent_only(spec: Spec, graph: LatentGraph, why: str) -> None:
    if graph.kind != "independent":
        raise SpecError("graph", f"model {spec.model.KIND!r} {why}; leave `graph` out (got kind {graph.kind!r})")


@BUILDERS.register("adaae")
def _build_adaae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    m: AdaAESpec = spec.model
    _independent_only(spec, graph, "treats every latent dim as its own variable (001 sec 3.1) and sets its "
                                   "decoder depth with model.layers")
    dec = m.decoder
    if isinstance(dec, StructuralDecoderSpec):
        hidden = dec.mechanism_hidden
    elif isinstance(dec, ConvDecoderSpec):
        hidden = dec.hidden  # the conv backbone with one style MLP per layer ([]: an affine map, as StyleGAN's A)
    else:
        raise SpecError("model.decoder.kind", f"model 'adaae' supports decoder kinds: structural, conv; got {dec.KIND!r}")
    return MODELS.get("adaae")(layers=m.layers, dec_blocks=dec.blocks, dec_channels=dec.channels,
                               mechanism_hidden=hidden, **_common(spec, graph, channels))


@BUILDERS.register("vlae")
def _build_vlae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    m: VLAESpec = spec.model
    _independent_only(spec, graph, "splits its latent over model.rungs")
    if m.latent_dim % m.rungs:
        raise SpecError("model.rungs", f"latent_dim={m.latent_dim} is not divisible by rungs={m.rungs} (the "
                                       f"latent is split evenly over the rungs, 001 A.2.1)")
    common = _common(spec, graph, channels)
    dec = _conv_decoder(m)
    for key, hidden in (("encoder", common.pop("enc_hidden")), ("decoder", dec.pop("dec_hidden"))):
        if hidden:
            raise SpecError(f"model.{key}.hidden", f"VLAE's ladder rungs replace the {key}'s MLP: leave it empty "
                                                   f"and size the rungs with model.rung_hidden")
    return MODELS.get("vlae")(rungs=m.rungs, beta=m.beta, rung_hidden=m.rung_hidden, rung_channels=m.rung_channels,
                              rung_side=m.rung_side, rung_pool=m.rung_pool, **common, **dec)


@BUILDERS.register("asae")
def _build_asae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    m: ASAESpec = spec.model
    if m.latent_dim % m.heads:
        ok = [h for h in range(1, m.latent_dim + 1) if m.latent_dim % h == 0]
        raise SpecError("model.heads", f"latent_dim={m.latent_dim} is not divisible by heads={m.heads}: each head "
                                       f"writes latent_dim / heads dims (000 sec 2); allowed: {ok}")
    enc = m.encoder
    if isinstance(enc, AttentionEncoderSpec):
        embed, where = enc.embed_dim, "model.encoder.embed_dim"
        kw = dict(tokens="patches", patch=enc.patch, stride=enc.stride, patch_hidden=enc.hidden,
                  head_hidden=enc.head_hidden)
        if enc.patch > spec.data.resolution:
            raise SpecError("model.encoder.patch", f"{enc.patch} exceeds data.resolution={spec.data.resolution}")
    elif isinstance(enc, ConvEncoderSpec):
        embed, where = enc.channels, "model.encoder.channels"
        kw = dict(tokens="conv", enc_blocks=enc.blocks, enc_channels=enc.channels, head_hidden=enc.hidden)
    else:
        raise SpecError("model.encoder.kind", f"model 'asae' supports encoder kinds: attention, conv; got {enc.KIND!r}")
    if embed % m.heads:
        raise SpecError(where, f"{embed} is not divisible by model.heads={m.heads} (each head gets an equal share)")
    dec = m.decoder
    if isinstance(dec, StructuralDecoderSpec):
        if graph.kind not in ("chain", "dag"):
            raise SpecError("graph.kind", f"model 'asae' compiles chain or dag graphs; got {graph.kind!r}")
        kw.update(decoder="structural", mechanism_hidden=dec.mechanism_hidden)
    elif isinstance(dec, ConvDecoderSpec):
        kw.update(decoder="conv", dec_hidden=dec.hidden)
    else:
        raise SpecError("model.decoder.kind", f"model 'asae' supports decoder kinds: structural, conv; got {dec.KIND!r}")
    return MODELS.get("asae")(graph=graph, in_channels=channels, resolution=spec.data.resolution, heads=m.heads,
                              embed_dim=embed, dec_blocks=dec.blocks, dec_channels=dec.channels,
                              groups=getattr(enc, "groups", dec.groups), recon_loss=spec.train.loss,
                              hybrid_latents=spec.evaluate.hybrid_latents, **kw)


from .spec.schema import CausalVAESpec, LearnedGraphSpec  # noqa: E402


def _graph_of_kind(spec: Spec, cls: type, model: str, need: str):
    """spec.graph if it is a `cls` graph spec; otherwise a SpecError at graph.kind saying what the model needs."""
    g = spec.graph
    if not isinstance(g, cls):
        raise SpecError("graph.kind", f"model {model!r} {need}; got "
                                 f"{'no graph' if g is None else 'kind ' + repr(getattr(g, 'KIND', None))}")
    return g


@BUILDERS.register("causalvae")
def _build_causalvae(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    """CausalVAE: the learned graph's nodes supervised by the dataset's labels (003)."""
    import numpy as np

    from .graph.penalty import LearnedAdjacency
    from .nn.causal import AugmentedLagrangian

    m: CausalVAESpec = spec.model
    g = _graph_of_kind(spec, LearnedGraphSpec, "causalvae", "learns its graph: needs graph kind 'learned'")
    if not isinstance(m.decoder, ConvDecoderSpec):
        raise SpecError("model.decoder.kind", f"model 'causalvae' needs decoder kind 'conv'; got {m.decoder.KIND!r}")
    dataset = build_dataset(spec)
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
    adjacency = LearnedAdjacency(nodes=list(graph.nodes), prior_edges=g.prior_edges, forbidden_edges=g.forbidden_edges,
                                 dag_weight=g.dag_weight, sparsity=g.sparsity, threshold=g.threshold)
    dag = AugmentedLagrangian(schedule=m.dag_schedule, alpha=g.dag_weight, rho=m.dag_rho, growth=m.dag_rho_growth,
                              rho_max=m.dag_rho_max, every=m.dag_update_every)
    c = _common(spec, graph, channels)
    return MODELS.get("causalvae")(
        adjacency=adjacency, dag=dag, label_names=wanted, label_index=index, label_mean=labels.mean(0).tolist(), label_std=std.tolist(),
        mechanism_hidden=m.mechanism_hidden, label_hidden=m.label_hidden, beta_u=m.beta_u, gamma_m=m.gamma_m,
        kl_weight=m.kl_weight, graph_from=m.graph_from, prior_std=m.prior_std, label_loss=m.label_loss, **c, **_conv_decoder(m))


# ---------------------------------------------------------------- the ICM committee (004)
from .spec.schema import ExpertsGraphSpec, ICMSpec  # noqa: E402

# metrics that decode latents (the committee maps images to images and has no decoder)
DECODING_METRICS = ("reconstruction", "fid")


@BUILDERS.register("icm")
def _build_icm(spec: Spec, graph: LatentGraph, channels: int) -> LatentModel:
    """N' experts (graph kind experts) and a discriminator, trained by competition (004 Algorithm 1)."""
    m: ICMSpec = spec.model
    g = _graph_of_kind(spec, ExpertsGraphSpec, "icm",
                       "needs `graph: {kind: experts, experts: N}` (one node per expert)")
    if g.assignment != "wta":
        raise SpecError("graph.assignment", f"model 'icm' assigns each image to its highest-scoring expert "
                                            f"(004 Algorithm 1): needs 'wta', got {g.assignment!r}")
    for i, name in enumerate(spec.evaluate.metrics):
        if name in DECODING_METRICS:
            raise SpecError(f"evaluate.metrics[{i}]", f"metric {name!r} decodes latents, which the ICM committee "
                                                      f"does not have; use metric 'icm'")
    stages = len(m.discriminator_channels)
    if not stages or any(not s for s in m.discriminator_channels) or spec.data.resolution % 2 ** stages:
        raise SpecError("model.discriminator_channels", f"{[list(s) for s in m.discriminator_channels]}: needs "
                                                        f"non-empty stages whose 2x2 poolings ({stages}) divide "
                                                        f"data.resolution={spec.data.resolution}")
    return MODELS.get("icm")(graph=graph, in_channels=channels, resolution=spec.data.resolution,
                             expert_layers=m.expert_layers, expert_channels=m.expert_channels,
                             discriminator_channels=m.discriminator_channels,
                             discriminator_hidden=m.discriminator_hidden, discriminator_lr=m.discriminator_lr,
                             discriminator_r1=m.discriminator_r1, discriminator_fakes=m.discriminator_fakes,
                             score_precision=m.score_precision, winner_forward=m.winner_forward,
                             init_iters=m.init_iters, init_mse=m.init_mse, revive_every=m.revive_every,
                             revive_below=m.revive_below, revive_until=m.revive_until, revive_noise=m.revive_noise,
                             stop_stability=m.stop_stability, stop_checks=m.stop_checks,
                             hybrid_latents=spec.evaluate.hybrid_latents)
