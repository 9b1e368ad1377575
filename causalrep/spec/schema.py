"""The experiment spec schema: frozen attrs classes, one per YAML section (docs/spec.md is generated from it)."""
from __future__ import annotations

import attrs

from .convert import Kinded, Pattern, kinded_base, register_kind, spec_field as field

# a name that becomes one folder on any file system: no separators, no leading dot or dash, at most 200 characters
FOLDER_NAME = Pattern(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}",
                      "a folder name: letters, digits, '_', '.', '+', '-', starting with a letter or digit, "
                      "at most 200 characters")

frozen = attrs.frozen(kw_only=True)

# Valid ranges of the numeric keys (`range=` of a field; the interval syntax is convert.Range's). Every number in
# a key's value must lie in its range: each width of a list of widths, each value of a mapping. Floats must also
# be finite (NaN and infinities are refused everywhere). docs/spec.md shows each key's range.
POSITIVE = "> 0"              # learning rates, scales, standard deviations
NON_NEGATIVE = ">= 0"         # loss weights and penalties (0: off)
SHARE = "[0, 1]"              # fractions and probabilities
SEED = "[0, 4294967295]"      # seeds (numpy and torch take 32 bits)
STEPS = "[1, 1e9]"            # step counts and intervals
STEPS_OR_0 = "[0, 1e9]"       # step counts where 0 means none
RESOLUTION = "[8, 512]"       # image side; each dataset supports a few sizes of these (python -m causalrep.run --check)
PIXELS = "[1, 512]"           # patch sides, strides, feature-map sides
BLOCKS = "[1, 64]"            # conv blocks and layers of a network
CHANNELS = "[1, 4096]"        # conv channels and GroupNorm groups
WIDTH = "[1, 65536]"          # hidden widths of MLP layers, token widths
DIMS = "[1, 4096]"            # latent dimensions, per node or in all
COUNT = "[1, 1024]"           # graph nodes, experts, heads, rungs, Str-Tfm layers
INDEX = ">= 0"                # factor value indices


# ---------------------------------------------------------------- data
@kinded_base("perturbation kind")
@frozen
class PerturbationSpec(Kinded):
    """A perturbation of every image that keeps the factor labels (002 sec 4)."""


@register_kind(PerturbationSpec, "pattern")
@frozen
class PatternPerturbationSpec(PerturbationSpec):
    """x + eps * f(s(x)): a random +-1 pattern shifted by round(s / c_j) in column j (002 eq. 8)."""

    epsilon: float = field(0.1, range=SHARE, help="magnitude; 002 sec 5.4: beta-VAE picks s up at about 0.1")
    factor: str | None = field(None, help="s = index of this ground-truth factor")
    run: str | None = field(None, help="s = least-noisy latent of this trained VAE run folder (002 eq. 6)")
    scale: float = field(1.0, range=POSITIVE, help="s is multiplied by this before the shift")
    seed: int = field(0, range=SEED, help="seed of the pattern p and the column factors c_j")
    fit: str = field("rescale", help="back into [0, 1] for BCE: rescale = (x + delta + eps) / (1 + 2 eps), the whole "
                                    "pattern kept; clamp = cut at 0 and 1 (half the pattern on binary images)",
                     choices=("rescale", "clamp"))

    def __attrs_post_init__(self):
        if (self.factor is None) == (self.run is None):
            raise ValueError("perturbation: give exactly one of `factor` or `run` as the source of s")


@register_kind(PerturbationSpec, "uniform")
@frozen
class UniformPerturbationSpec(PerturbationSpec):
    """The control of 002 sec 5.3: pixel-wise uniform noise in [-eps, eps], fixed per image."""

    epsilon: float = field(0.1, range=SHARE, help="noise magnitude (the same as the pattern's for the control)")
    seed: int = field(0, range=SEED, help="noise seed")
    fit: str = field("rescale", help="back into [0, 1] for BCE: rescale = (x + delta + eps) / (1 + 2 eps), the whole "
                                    "pattern kept; clamp = cut at 0 and 1 (half the pattern on binary images)",
                     choices=("rescale", "clamp"))


@frozen
class DataSpec:
    name: str = field(help="dataset name (see the dataset registry: dsprites, shapes3d, mpi3d, ...)")
    resolution: int = field(64, help="image side in pixels (square images; smaller sizes are area-averaged)",
                            range=RESOLUTION)
    split: tuple[float, ...] = field((0.7, 0.1, 0.2), help="train/val/test fractions of the dataset (001 sec 3)",
                                     range=SHARE)
    path: str | None = field(None, help="a real dataset file to load instead of the procedural generator (hdf5: "
                                        "your own file). Relative file paths in data: are taken from the spec "
                                        "file's folder, from the working directory when given by --set")
    images: str | None = field(None, help="your own data: folder = the folder of image files, hdf5 = the key of "
                                          "the images dataset (docs/datasets.md, \"Your own data\")")
    factors: str | None = field(None, help="your own data: folder = the CSV of factor values (a `file` column, "
                                           "then one column per factor), hdf5 = the key of the factors dataset")
    factor_bins: int = field(20, range="[2, 65536]", help="your own data: a factor with more distinct values "
                             "is cut into this many equal-width bins for the metrics (disentanglement_lib's "
                             "histogram discretiser); one with at most this many keeps each value")
    include: dict[str, tuple[int | str, ...]] = field(attrs.Factory(dict), help="keep only images whose factor "
                                                      "takes one of these values (index or name), e.g. {shape: [cube]}",
                                                      range=INDEX)
    exclude: dict[str, tuple[int | str, ...]] = field(attrs.Factory(dict), help="drop images whose factor takes one "
                                                      "of these values, e.g. {shape: [sphere]} (001 extrapolation)",
                                                      range=INDEX)
    perturbation: PerturbationSpec | None = field(None, help="perturb every image, keeping the labels (002)")
    resident: str = field("auto", help="keep the training split on the device as uint8 (auto: on CUDA when it "
                                       "fits in 8 GB)", choices=("auto", "always", "never"))

    @split.validator
    def _split(self, attribute, value):
        if len(value) != 3 or any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"split: expected three non-negative fractions summing to 1, got {list(value)}")


# ---------------------------------------------------------------- graph
@kinded_base("graph kind")
@frozen
class GraphSpec(Kinded):
    """The latent SCM; `kind` picks chain | dag | learned | experts."""


@register_kind(GraphSpec, "chain")
@frozen
class ChainGraphSpec(GraphSpec):
    """SAE causal ordering u1 -> u2 -> ...: node i enters the structural decoder at depth i (001 sec 2.1)."""

    nodes: int = field(range=COUNT, help="number of latent nodes (SAE-K has K)")
    node_dim: int | None = field(None, range=DIMS, help="dims per node; default model.latent_dim / nodes")
    prefix: str = field("u", help="node names are PREFIX1..PREFIXK")


@register_kind(GraphSpec, "dag")
@frozen
class DagGraphSpec(GraphSpec):
    """An explicit DAG over named nodes; a structural decoder follows its edges."""

    nodes: tuple[str, ...] = field((), help="node names in declaration order (latent layout order)")
    edges: tuple[tuple[str, ...], ...] = field((), help="directed edges as [parent, child] pairs")
    node_dim: int | None = field(None, range=DIMS, help="dims per node; default model.latent_dim / len(nodes)")
    node_dims: dict[str, int] = field(attrs.Factory(dict), range=DIMS, help="per-node dims overriding node_dim")
    from_dataset: bool = field(False, help="take nodes and edges from the dataset's true graph")


@register_kind(GraphSpec, "learned")
@frozen
class LearnedGraphSpec(GraphSpec):
    """A learnable adjacency A with the DAG penalty h(A) = tr((I + A*A/n)^n) - n (CausalVAE, 003)."""

    nodes: int | tuple[str, ...] = field(range=COUNT, help="number of nodes, or their names")
    node_dim: int | None = field(None, range=DIMS, help="dims per node; default model.latent_dim / nodes")
    prior_edges: tuple[tuple[str, ...], ...] = field((), help="[parent, child] edges that must exist")
    forbidden_edges: tuple[tuple[str, ...], ...] = field((), help="[parent, child] edges that may not exist")
    dag_weight: float = field(1.0, range=NON_NEGATIVE, help="weight of h(A) in the loss")
    sparsity: float = field(0.0, range=NON_NEGATIVE, help="weight of the L1 penalty on A")
    threshold: float = field(0.3, range=NON_NEGATIVE, help="|A_ij| above which an edge counts as present")


@register_kind(GraphSpec, "experts")
@frozen
class ExpertsGraphSpec(GraphSpec):
    """N independent mechanisms competing for data (ICM, 004 sec 3)."""

    experts: int = field(range=COUNT, help="number of competing experts N'")
    assignment: str = field("wta", help="winner-take-all or soft assignment", choices=("wta", "soft"))


# ---------------------------------------------------------------- encoder / decoder
@kinded_base("encoder kind")
@frozen
class EncoderSpec(Kinded):
    """Image -> latent network."""


@register_kind(EncoderSpec, "conv")
@frozen
class ConvEncoderSpec(EncoderSpec):
    """The conv backbone of 001 appendix A.2.1: conv + GroupNorm + Mish, 2x2 max-pool every third block."""

    blocks: int = field(12, range=BLOCKS, help="number of conv blocks (first 5x5, then 3x3)")
    channels: int = field(64, range=CHANNELS, help="channels of every conv block")
    hidden: tuple[int, ...] = field((), range=WIDTH, help="hidden widths of the MLP head after the conv features")
    groups: int = field(8, range=CHANNELS, help="GroupNorm groups")


@kinded_base("decoder kind")
@frozen
class DecoderSpec(Kinded):
    """Latent -> image network."""


@register_kind(DecoderSpec, "conv")
@frozen
class ConvDecoderSpec(DecoderSpec):
    """The hourglass decoder of 001 A.2.1: bilinear 2x upsampling before every third conv block."""

    blocks: int = field(12, range=BLOCKS, help="number of conv blocks")
    channels: int = field(64, range=CHANNELS, help="channels of every conv block")
    hidden: tuple[int, ...] = field((), help="hidden widths of the MLP from the latent to the first features",
                                    range=WIDTH)
    groups: int = field(8, range=CHANNELS, help="GroupNorm groups")


@register_kind(DecoderSpec, "structural")
@frozen
class StructuralDecoderSpec(DecoderSpec):
    """Structural decoder (001 sec 2.2): static features transformed by one Str-Tfm layer per graph node."""

    blocks: int = field(12, range=BLOCKS, help="number of conv blocks, spread evenly over the graph's levels")
    channels: int = field(64, range=CHANNELS, help="channels of every conv block")
    mechanism_hidden: tuple[int, ...] = field((64, 64, 64), help="hidden widths of each Str-Tfm MLP (A.2.1: three)",
                                              range=WIDTH)
    groups: int = field(8, range=CHANNELS, help="GroupNorm groups")


# ---------------------------------------------------------------- model
@kinded_base("model kind")
@frozen
class ModelSpec(Kinded):
    """The model family; `kind` picks it (see docs/spec.md for each kind's keys)."""


@register_kind(ModelSpec, "ae")
@frozen
class AESpec(ModelSpec):
    """Unregularised hourglass autoencoder (001 sec 3.1, "AE")."""

    latent_dim: int = field(range=DIMS, help="total latent dimensions D")
    encoder: EncoderSpec = field(attrs.Factory(ConvEncoderSpec), help="encoder network")
    decoder: DecoderSpec = field(attrs.Factory(ConvDecoderSpec), help="decoder network (conv)")


@register_kind(ModelSpec, "vae")
@frozen
class VAESpec(AESpec):
    """VAE (Kingma & Welling 2013): Gaussian posterior, N(0, I) prior, loss = recon + beta * KL."""

    beta: float = field(1.0, range=NON_NEGATIVE, help="weight of the KL term")


@register_kind(ModelSpec, "bvae")
@frozen
class BetaVAESpec(AESpec):
    """beta-VAE (Higgins et al. 2017; 003): beta = 2 was best on 3D-Shapes and MPI3D (001 A.2.2)."""

    beta: float = field(2.0, range=NON_NEGATIVE, help="weight of the KL term")


@register_kind(ModelSpec, "causalvae")
@frozen
class CausalVAESpec(ModelSpec):
    """CausalVAE (Yang et al. 2021; 003): a `learned` graph over labelled concepts, z = (I - A^T)^-1 eps,
    mask layer z_i = g_i(A_i * z) + eps_i, loss = -ELBO + DAG penalty + beta_u * l_u + gamma_m * l_m."""

    latent_dim: int = field(range=DIMS, help="total latent dimensions: graph nodes x dims per node")
    encoder: EncoderSpec = field(attrs.Factory(ConvEncoderSpec), help="encoder network (conv) -> q(eps|x)")
    decoder: DecoderSpec = field(attrs.Factory(ConvDecoderSpec), help="decoder network (conv) from z~")
    mechanism_hidden: tuple[int, ...] = field((32,), help="hidden widths of each node's mask-layer MLP g_i",
                                              range=WIDTH)
    label_hidden: int = field(16, help="hidden width of each node's norm-bounded label mechanism h_i in l_u",
                              range=WIDTH)
    beta_u: float = field(1.0, range=NON_NEGATIVE, help="beta: weight of the label loss l_u (003 eqs 38, 41)")
    gamma_m: float = field(1.0, range=NON_NEGATIVE, help="gamma: weight of the mechanism loss l_m (003 eqs 39, 41)")
    kl_weight: float = field(1.0, range=NON_NEGATIVE, help="weight of the two KL terms of the ELBO")
    dag_schedule: str = field("augmented_lagrangian", help="augmented_lagrangian: lam * h + rho/2 * h^2 with "
                              "NOTEARS updates; fixed: graph.dag_weight * h (003 eq 41's alpha)",
                              choices=("augmented_lagrangian", "fixed"))
    dag_rho: float = field(1.0, range=POSITIVE, help="initial rho of the augmented Lagrangian")
    dag_rho_growth: float = field(10.0, range=">= 1", help="rho's factor when h(A) did not fall below a quarter")
    dag_rho_max: float = field(1e6, range=POSITIVE, help="largest rho")
    dag_update_every: int = field(200, range=STEPS, help="steps between multiplier updates")
    prior_std: float = field(1.0, help="lambda_2 of the label-conditioned prior p(z|u) = N(u, lambda_2^2) "
                                       "(003 eq 33 takes 1; smaller ties each concept's value closer to its "
                                       "label, so do(z_i := label) stays on the encoder's manifold)", range=POSITIVE)
    graph_from: str = field("joint", help="joint: every loss term trains A (003); labels: only l_u, the DAG "
                                          "penalty and the sparsity do (the causal and mask layers read A "
                                          "without a gradient)", choices=("joint", "labels"))
    label_loss: str = field("gated_mlp", help="l_u's mechanism: gated_mlp: ||u_i - h_i(A_i * u)||^2, h_i a "
                            "norm-bounded MLP per node (the reference code's per-concept MLP over A^T u); sigmoid: "
                            "||u - sigmoid(A^T u)||^2 (003 eq 38 as written); linear: ||u - A^T u||^2 (the linear "
                            "SEM on the labels)", choices=("gated_mlp", "sigmoid", "linear"))
    labels: tuple[str, ...] = field((), help="the dataset label supervising each graph node, in node order; "
                                             "empty: the nodes' own names")


@register_kind(ModelSpec, "sae")
@frozen
class SAESpec(ModelSpec):
    """Structural autoencoder SAE-K (001 sec 2): conv encoder, structural decoder built from the graph."""

    latent_dim: int = field(range=DIMS, help="total latent dimensions D, split evenly over the graph's nodes")
    encoder: EncoderSpec = field(attrs.Factory(ConvEncoderSpec), help="encoder network")
    decoder: DecoderSpec = field(attrs.Factory(StructuralDecoderSpec), help="decoder network (structural)")


@register_kind(ModelSpec, "wae")
@frozen
class WAESpec(AESpec):
    """WAE-MMD (Tolstikhin et al. 2018; the "WAE" baseline of 001 sec 3.1): deterministic encoder,
    loss = recon + lam * MMD^2 to N(0, I) with the inverse multiquadric kernel."""

    lam: float = field(10.0, help="weight of the MMD penalty (WAE sec 4: 10 on MNIST, 100 on CelebA; 001 gives none)",
                       range=NON_NEGATIVE)
    kernel_scale: float = field(1.0, help="sigma_z^2 in the IMQ kernel constant C = 2 * latent_dim * sigma_z^2 "
                                          "(1: the N(0, I) prior)", range=POSITIVE)


@register_kind(ModelSpec, "btcvae")
@frozen
class BTCVAESpec(AESpec):
    """beta-TC-VAE (Chen et al. 2018; studied in 002): loss = recon + alpha * MI + beta * TC + gamma *
    dimension-wise KL, estimated on each minibatch (minibatch weighted sampling by default)."""

    alpha: float = field(1.0, range=NON_NEGATIVE, help="weight of the index-code mutual information")
    beta: float = field(6.0, range=NON_NEGATIVE, help="weight of the total correlation")
    gamma: float = field(1.0, range=NON_NEGATIVE, help="weight of the dimension-wise KL")
    estimator: str = field("mws", help="estimator of q(z) in the TC: mws = minibatch weighted sampling (Chen et al. "
                                      "sec 4.1; disentanglement_lib trains with it), mss = stratified importance "
                                      "weights (unbiased)", choices=("mws", "mss"))
    dataset_size: int | None = field(None, range="[1, 1e12]", help="N of the TC estimator; null: the train "
                                                "split's size, from the dataset's factor grid, data.split and the "
                                                "include/exclude filters")


@register_kind(ModelSpec, "factorvae")
@frozen
class FactorVAESpec(AESpec):
    """FactorVAE (Kim & Mnih 2018; studied in 002): loss = recon + KL + gamma * TC, the TC estimated by a
    discriminator trained with its own Adam (betas 0.5, 0.9) on z vs dimension-wise permuted z."""

    gamma: float = field(10.0, help="weight of the TC term (the smallest of disentanglement_lib's FactorVAE "
                                    "sweep 10..100, which 002 sec 5 takes its settings from)", range=NON_NEGATIVE)
    discriminator_hidden: tuple[int, ...] = field((1000,) * 6, help="hidden widths of the discriminator MLP "
                                                                    "(Kim & Mnih: 6 layers of 1000)", range=WIDTH)
    discriminator_lr: float = field(1e-4, help="Adam learning rate of the discriminator (Kim & Mnih: 1e-4)",
                                    range=POSITIVE)


@register_kind(ModelSpec, "laddervae")
@frozen
class LadderVAESpec(AESpec):
    """Ladder VAE (Sønderby et al. 2016; slides 003): bottom-up rungs, top-down hierarchical prior,
    precision-weighted posterior merge, KL warm-up."""

    layer_dims: tuple[int, ...] | None = field(None, help="dims of the stochastic layers z_1 (bottom) .. z_L (top), "
                                                          "summing to latent_dim; null: latent_dim over 3 layers",
                                               range=DIMS)
    warmup_steps: int = field(10_000, help="steps over which the KL weight rises linearly from 0 to 1 (003)",
                              range=STEPS_OR_0)
    rung_width: int = field(128, range=WIDTH, help="width of the deterministic bottom-up and top-down ladder features")
    rung_hidden: tuple[int, ...] = field((), range=WIDTH, help="hidden widths of each ladder rung's MLP")


@register_kind(EncoderSpec, "attention")
@frozen
class AttentionEncoderSpec(EncoderSpec):
    """The ASAE attention encoder (000 sec 2): overlapping patches with their (x, y) coordinates, each embedded
    by one shared MLP, then a single attention layer whose `model.heads` heads each write latent_dim / heads dims."""

    patch: int = field(4, range=PIXELS, help="patch side in pixels (000 sec 2: overlapping 4x4 patches)")
    stride: int = field(2, help="step between patches (not given in 000; 2 overlaps 4x4 patches by half and, "
                                "with zero padding (patch - stride) / 2, tiles 64x64 images as a 32x32 grid)",
                        range=PIXELS)
    embed_dim: int = field(384, help="token width E, divisible by model.heads (each head's keys and values "
                                     "have E / heads dims)", range=WIDTH)
    hidden: tuple[int, ...] = field((256,), range=WIDTH, help="hidden widths of the per-patch MLP (pixels + x, y -> E)")
    head_hidden: tuple[int, ...] = field((64, 64, 64), range=WIDTH, help="hidden widths of each head's MLP from its "
                                                            "attended features to its latent dims")


@register_kind(ModelSpec, "adaae")
@frozen
class AdaAESpec(ModelSpec):
    """AdaAE-K (001 sec 3.1, "Adaptive"): the SAE except that every Str-Tfm layer sees the whole latent
    vector (effectively Ada-IN); each latent dim is its own variable for hybrid sampling."""

    latent_dim: int = field(range=DIMS, help="total latent dimensions D; every Str-Tfm layer reads all of them")
    layers: int | None = field(None, range=COUNT, help="Str-Tfm layers K, placed evenly between the decoder blocks "
                                          "(001 A.2.1); null: latent_dim (AdaAE-12 for D = 12)")
    encoder: EncoderSpec = field(attrs.Factory(ConvEncoderSpec), help="encoder network (conv)")
    decoder: DecoderSpec = field(attrs.Factory(StructuralDecoderSpec), help="decoder network: structural "
                                 "(mechanism_hidden sizes each layer's MLP) or conv (its hidden does)")


@register_kind(ModelSpec, "vlae")
@frozen
class VLAESpec(ModelSpec):
    """VLAE-L (Zhao et al. 2017; 001 sec 3.1): L latent groups inferred from and injected at L depths by
    ladder rungs that concatenate their features with the decoder's; N(0, I) prior, loss = recon + beta * KL."""

    latent_dim: int = field(range=DIMS, help="total latent dimensions D, split evenly over the rungs")
    rungs: int = field(4, help="ladder rungs L (001: 2, 3, 4, 6, 12, 16); rung k enters before decoder block "
                               "k * blocks / L and reads the mirrored encoder block", range=COUNT)
    beta: float = field(1.0, range=NON_NEGATIVE, help="weight of the KL term (1: the ELBO)")
    rung_hidden: tuple[int, ...] = field((32, 32, 32), help="hidden widths of every inference and generative "
                                                            "rung MLP (001 A.2.1: three hidden layers)", range=WIDTH)
    rung_channels: int = field(8, help="channels of a generative rung's feature map (concatenated with the "
                                       "decoder's features, then a 1x1 conv block back to its channels)",
                               range=CHANNELS)
    rung_side: int = field(4, help="side of a generative rung's map, bilinearly resized to the features it joins",
                           range=PIXELS)
    rung_pool: int = field(2, help="inference rungs read the encoder features average-pooled to this side",
                           range=PIXELS)
    encoder: EncoderSpec = field(attrs.Factory(ConvEncoderSpec), help="encoder network (conv; the rungs "
                                 "replace its MLP head, so hidden must be empty)")
    decoder: DecoderSpec = field(attrs.Factory(ConvDecoderSpec), help="decoder network (conv; the first rung "
                                 "starts it, so hidden must be empty)")


@register_kind(ModelSpec, "asae")
@frozen
class ASAESpec(ModelSpec):
    """ASAE-H (000 sec 2): an attention encoder whose H heads each write latent_dim / H dims, and the SAE's
    structural decoder (000: K = 12, a chain over latent_dim nodes unless `graph` says otherwise)."""

    latent_dim: int = field(range=DIMS, help="total latent dimensions D (000: 12), divisible by heads")
    heads: int = field(4, help="attention heads H (000: 4, 6 or 12); head h writes dims [h*D/H, (h+1)*D/H)",
                       range=COUNT)
    encoder: EncoderSpec = field(attrs.Factory(AttentionEncoderSpec), help="attention (000: patches + "
                                 "coordinates) or conv (attention over the conv features' pixels: token width "
                                 "= channels, each head's MLP = hidden)")
    decoder: DecoderSpec = field(attrs.Factory(StructuralDecoderSpec), help="decoder network: structural "
                                 "(000) or conv")


@register_kind(ModelSpec, "icm")
@frozen
class ICMSpec(ModelSpec):
    """A committee of competing experts (004 sec 3-4, Algorithm 1): N' image-to-image experts (N' from
    `graph: {kind: experts, experts: N'}`) and one discriminator; each transformed image goes to the expert
    whose output the discriminator scores highest, and only winners are trained, to fool it."""

    expert_layers: int = field(7, help="3x3 conv + batch norm + ELU layers of an expert before its 3x3 sigmoid "
                                       "output conv (004 Table 1: 7; the main text's five convs in all: 4)",
                               range=BLOCKS)
    expert_channels: int = field(32, range=CHANNELS, help="filters of every expert conv layer (004 Table 1: 32)")
    discriminator_channels: tuple[tuple[int, ...], ...] = field(
        ((16, 16, 16), (32, 32), (64, 64)), help="discriminator 3x3 conv + ELU widths per stage, each stage "
                                                 "followed by 2x2 average pooling (004 Table 1)", range=CHANNELS)
    discriminator_hidden: int = field(1024, help="units of the discriminator's last hidden (FC, ELU) layer "
                                                 "(004 Table 1)", range=WIDTH)
    discriminator_lr: float | None = field(None, help="Adam learning rate of the discriminator; null: train.lr "
                                                      "(004: Adam with default hyper-parameters for both)",
                                           range=POSITIVE)
    discriminator_r1: float = field(0.0, help="weight gamma of the R1 penalty gamma/2 E||grad_x D(x)||^2 on "
                                              "canonical digits (Mescheder et al. 2018), against a discriminator "
                                              "fitting a small canonical set; 0: off (004 has none)",
                                    range=NON_NEGATIVE)
    discriminator_fakes: str = field("all", help="fakes the discriminator trains on: every expert's output, "
                                                 "weighted 1/N' (004 Algorithm 1 line 5 and eq. 3) or only the "
                                                 "winners'", choices=("all", "winners"))
    score_precision: str = field("fp32", help="precision of the discriminator passes whose scores c_j = "
                                              "D(E_j(x')) pick each image's winner (004 sec 3.2, Algorithm 1 "
                                              "line 6): fp32 = autocast off, float32 inputs; autocast = the "
                                              "trainer's precision. At initialisation the experts' scores differ "
                                              "by ~4e-5, below bf16's resolution: under bf16 most images tie "
                                              "and argmax sends them all to expert 0", choices=("fp32", "autocast"))
    winner_forward: str = field("full", help="how a winner is recomputed for its update: on the whole batch, "
                                             "batch norm back-propagating through the batch statistics (004), or "
                                             "on its won images only, normalised with the scoring pass's "
                                             "statistics (cheaper)", choices=("full", "won"))
    init_iters: int = field(500, help="most steps of each expert's approximate-identity initialisation on "
                                      "transformed batches (004 appendix B: 500; 0 skips it)", range=STEPS_OR_0)
    init_mse: float = field(0.002, help="an expert's initialisation stops once its batch MSE to the input is "
                                        "below this (004 appendix B: 0.002)", range=NON_NEGATIVE)
    revive_every: int = field(0, help="every this many steps, an expert that won under revive_below of the "
                                      "images since the last check is replaced by a perturbed copy of the "
                                      "busiest expert (experts added during training, 004 sec 3 item 1); "
                                      "0: off, Algorithm 1 exactly", range=STEPS_OR_0)
    revive_below: float = field(0.01, help="win share under which an expert counts as inactive (revive_every)",
                                range="[0, 1)")
    revive_until: int | None = field(None, help="last step at which experts may be revived (null: the whole run)",
                                     range=STEPS_OR_0)
    revive_noise: float = field(0.01, help="std of the Gaussian perturbation of a revived copy, relative to each "
                                           "weight tensor's RMS (breaks the tie with its source)", range="[0, 1)")
    stop_stability: float | None = field(None, help="stop training once the probe's assignment_stability (share "
                                                    "of validation digits keeping their winner between validation "
                                                    "steps) is at least this at stop_checks validation steps in a "
                                                    "row after revive_until (004 sec 3 item 2b); null: train all "
                                                    "train.steps", range="(0, 1]")
    stop_checks: int = field(3, range=STEPS, help="consecutive validation steps at stop_stability that stop training")


# ---------------------------------------------------------------- train / evaluate / track
@frozen
class TrainSpec:
    steps: int = field(100_000, range=STEPS, help="optimiser steps (001 A.2.2: 100k)")
    batch_size: int = field(128, range="[1, 1e6]", help="images per step (001 A.2.2: 128)")
    lr: float = field(5e-4, range=POSITIVE, help="Adam learning rate (001 A.2.2)")
    betas: tuple[float, ...] = field((0.9, 0.999), range="[0, 1)", help="Adam betas (001 A.2.2)")
    lr_schedule: str = field("constant", help="learning rate over the steps: constant (001 A.2.2) or cosine "
                                             "(from lr down to 0 at train.steps, after the warm-up)",
                             choices=("constant", "cosine"))
    lr_warmup_steps: int = field(0, help="steps over which the learning rate rises linearly from lr/warmup to lr",
                                 range=STEPS_OR_0)
    loss: str = field("bce", help="reconstruction loss, summed over pixels", choices=("bce", "mse"))
    precision: str = field("auto", help="auto: bf16 autocast on CUDA, fp32 on CPU", choices=("auto", "fp32", "bf16"))
    device: str = field("auto", help="auto: CUDA when present", choices=("auto", "cpu", "cuda"))
    checkpoint_every: int = field(1000, range=STEPS, help="steps between checkpoints (checkpoints/last.pt, written "
                                                          "atomically; the one before it is kept as last.prev.pt)")
    log_every: int = field(50, range=STEPS, help="steps between logged training metrics")
    val_every: int = field(1000, range=STEPS, help="steps between validation passes")
    val_samples: int = field(512, range="[1, 1e8]", help="validation images scored every val_every steps (the "
                                                          "first N of the val split; the final metrics' sample "
                                                          "size is evaluate.val_samples)")
    threads: int | None = field(None, range="[1, 1024]", help="torch CPU threads (default: torch's choice)")
    channels_last: bool = field(False, help="channels_last memory format for model and batches (see tools/bench_train.py)")
    compile: bool = field(False, help="torch.compile the model's training forward (measured option)")
    init_from: str | None = field(None, help="a run folder (its checkpoints/last.pt) or checkpoint file whose model "
                                             "weights start this run; the optimiser starts afresh (001 sec 3.2, "
                                             "000's staged transfer; a sweep stage may write \"@stage\")")
    trainable: str = field("all", help="what the optimiser updates; the rest is frozen: encoder = the parameters "
                                       "encode() uses, decoder = those decode() uses (001 Table 3: update the "
                                       "encoder only, the decoder only, or both)",
                           choices=("all", "encoder", "decoder"))


# evaluate.dci / evaluate.every_dci: the names metrics/wrappers.py's DCI_ESTIMATORS maps to gbt.py's kinds
DCI_CHOICES = ("reference", "fast", "lightgbm", "short", "hist")
# evaluate.sap: the names metrics/wrappers.py's SAP_SOLVERS maps to disentanglement.sap's backends
SAP_CHOICES = ("exact", "reference")


@frozen
class EvaluateSpec:
    metrics: tuple[str, ...] = field(("reconstruction",), help="metrics computed after training")
    sampling: tuple[str, ...] = field(("hybrid",), help="sample grids in the report: hybrid (001 sec 2.3), "
                                      "structured hybrid (000 sec 4), prior (regularised models only)",
                                      choices=("hybrid", "structured", "prior"))
    val_samples: int = field(2048, help="sample size of the final metrics: the disentanglement metrics draw N fresh "
                                        "factor samples to fit their predictors on and N // 2 to test them on "
                                        "(disentanglement_lib: 10000 / 5000), reconstruction and FID use the first "
                                        "N images of the val split", range="[2, 1e8]")
    dci: str = field("fast", help="DCI's boosted trees: reference = scikit-learn's GradientBoostingClassifier as "
                                  "disentanglement_lib's dci.py; fast = lightgbm, the same model fitted by LightGBM "
                                  "with GBC's importances; short = lightgbm with half the stages at twice the "
                                  "learning rate (not GBC's model; half the time, e.g. for the curves); hist = "
                                  "sklearn's HistGradientBoosting twin (the fast estimator before LightGBM). Speed "
                                  "and agreement: docs/metrics.md",
                     choices=DCI_CHOICES)
    sap: str = field("exact", help="SAP's linear SVMs (final metrics and curves): exact = liblinear's problem solved "
                                   "to its optimum by a batched Newton method in torch (metrics/tensor.py; half the "
                                   "time); reference = scikit-learn's LinearSVC as disentanglement_lib's "
                                   "sap_score.py (liblinear, tol 1e-4). They differ only at test points within the "
                                   "solvers' tolerance of a boundary (<= 1.2e-4 in SAP measured; docs/metrics.md)",
                     choices=SAP_CHOICES)
    traversal_steps: int = field(9, range="[1, 1024]", help="columns of each traversal grid")
    baseline: str | None = field(None, help="a folder of finished runs trained with the same budget (e.g. "
                                            "results/quickstart/ae, relative to the working directory): report.md "
                                            "and the terminal summary put their mean beside each metric")
    hybrid_latents: int = field(128, range="[1, 1e7]", help="latents stored for hybrid sampling (001 sec 2.3: N = 128)")
    every: int = field(0, range="[0, 1e9]", help="steps between disentanglement curve points during training (0: "
                                                 "none): every_metrics on the first every_samples validation images, "
                                                 "logged in context 'curve' and drawn as curves.png in the report")
    every_metrics: tuple[str, ...] = field(("dci", "mig", "sap"), choices=("mig", "dci", "sap", "irs", "modexp"),
                                           help="the metrics of each curve point (codes and factors only)")
    every_dci: str = field("short", choices=DCI_CHOICES,
                           help="DCI's boosted trees for the curve points (the choices of evaluate.dci): short, half "
                                "of lightgbm's time, is within 0.01 of GradientBoostingClassifier on the bench's "
                                "cases (docs/metrics.md); the final metrics use evaluate.dci")
    every_samples: int = field(1500, range="[6, 1e7]", help="validation images of the curves (fixed: the first N of "
                                                            "the val split; 2/3 fit the predictors, 1/3 test them)")
    stop_on: str | None = field(None, help="early stopping: a curve key (e.g. dci_disentanglement, mig, sap) whose "
                                           "lack of improvement for stop_patience curve points stops training, with "
                                           "a checkpoint; needs every > 0")
    stop_patience: int = field(3, range="[1, 1e6]", help="curve points without improvement before stop_on stops")
    stop_mode: str = field("max", choices=("max", "min"), help="whether stop_on improves upwards or downwards")
    stop_min_delta: float = field(0.0, range=NON_NEGATIVE, help="the least change that counts as an improvement")


@frozen
class TrackSpec:
    kind: str = field("aim", help="aim: Aim repo plus metrics.jsonl; jsonl: metrics.jsonl only",
                      choices=("aim", "jsonl"))
    repo: str | None = field(None, help="Aim repo folder; default the --out folder (runs/)")
    experiment: str | None = field(None, help="Aim experiment name; default the spec name")


@frozen
class Spec:
    """One experiment: data, latent graph, model, training, evaluation, tracking."""

    name: str = field(help="experiment name (run folders go to OUT/NAME/RUN_ID)", pattern=FOLDER_NAME)
    seed: int = field(0, range=SEED, help="seed for the split, initialisation and batches")
    data: DataSpec = field(help="the dataset")
    graph: GraphSpec | None = field(None, help="the latent SCM; default: independent dims (chain over "
                                                "latent_dim nodes for sae)")
    model: ModelSpec = field(help="the model")
    train: TrainSpec = field(attrs.Factory(TrainSpec), help="training")
    evaluate: EvaluateSpec = field(attrs.Factory(EvaluateSpec), help="evaluation and report")
    track: TrackSpec = field(attrs.Factory(TrackSpec), help="experiment tracking")
    description: str = field("", help="free text, shown in the report")
