"""The only place a spec becomes objects: dataset, split, latent graph and model (each model kind's class reads its
own spec in from_spec, found in the models registry; registries live beside what they register), and a run folder
becomes a Run (its spec's objects with the trained weights: load_run), which 002's perturbation reads s(x) from."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import attrs
import torch

from . import data as _data  # noqa: F401  (registers the built-in datasets)
from . import models as _models  # noqa: F401  (registers the built-in models)
from .data.base import DATASETS, FILE_LOADERS, GroundTruthDataset, Split, factor_mask
from .data.perturb import PatternPerturbation, UniformNoise, factor_s
from .errors import CausalrepError, DataError, SpecError
from .graph.kinds import GRAPHS, independent_graph
from .graph.latent import LatentGraph
from .metrics import METRICS
from .metrics.curves import CURVE_KEYS
from .models.trainable import MODELS, BuildContext, Trainable
from .report import read_baseline
from .spec.load import load_spec, register_check, register_resolver
from .spec.schema import ChainGraphSpec, ModelSpec, PatternPerturbationSpec, Spec, UniformPerturbationSpec
from .train.checkpoint import CHECKPOINT, load_latest
from .train.transfer import UnusableStart, checkpoint_path


def build_dataset(spec: Spec) -> GroundTruthDataset:
    """The dataset named by `data.name`, at `data.resolution` (real files via `data.path`), wrapped
    in its perturbation (002) when `data.perturbation` is set."""
    d = spec.data
    if d.name not in DATASETS:
        raise SpecError("data.name", f"unknown dataset {d.name!r}; allowed: {', '.join(DATASETS.names())}")
    if DATASETS.get(d.name).spec_keys:  # your own data (data/user.py) reads its keys itself
        dataset = DATASETS.get(d.name).from_spec(d)
    elif d.path is None:
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
    independent dims and structural models (default_graph="chain") to a chain over latent_dim nodes (SAE-D)."""
    latent_dim = getattr(spec.model, "latent_dim", None)
    if spec.graph is None:  # the model class declares its default (models.base.register_model)
        if model_class(spec).default_graph == "chain":
            return GRAPHS.get("chain")(ChainGraphSpec(nodes=latent_dim), latent_dim=latent_dim)
        return independent_graph(latent_dim)
    return GRAPHS.get(spec.graph.KIND)(spec.graph, latent_dim=latent_dim, true_graph=true_graph)


@register_resolver  # load_spec runs it on the spec file's tree (its folder), then on the final one (the cwd)
def resolve_paths(tree: dict, folder: Path) -> dict:
    """Plain spec data with the dataset's relative file paths (its class's path_keys: data.path, the folder
    dataset's data.images and data.factors) joined to `folder`; anything else is left as it is."""
    data = tree.get("data")
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or name not in DATASETS:
        return tree
    data = dict(data)
    for key in DATASETS.get(name).path_keys:
        value = data.get(key)
        if isinstance(value, str) and value:
            try:
                p = Path(value).expanduser()
            except (RuntimeError, ValueError):  # ~user with no such user, a NUL byte: left for "file not found"
                continue
            data[key] = str(p if p.is_absolute() else folder / p)
    return {**tree, "data": data}


FILE_KEYS = ("path", "images", "factors")  # DataSpec keys naming files or keys in them


@register_check  # load_spec(check=True) runs it (the spec package cannot import the builder)
def validate_spec(spec: Spec) -> None:
    """Cross-section rules that the schema alone cannot express; each error names its key path."""
    if spec.data.name not in DATASETS:
        raise SpecError("data.name", f"unknown dataset {spec.data.name!r}; allowed: {', '.join(DATASETS.names())}")
    dataset_class = DATASETS.get(spec.data.name)
    wanted = dataset_class.spec_keys  # your own data: the keys it reads; the others read data.path at most
    for key in FILE_KEYS:
        value = getattr(spec.data, key)
        if key in wanted and value is None:
            raise SpecError(f"data.{key}", f"dataset {spec.data.name!r} needs {wanted[key]}")
        if value is not None and key not in wanted and (wanted or key != "path"):
            users = [n for n in DATASETS.names() if key in DATASETS.get(n).spec_keys]
            raise SpecError(f"data.{key}", f"dataset {spec.data.name!r} does not read it (datasets that do: "
                                           f"{', '.join(users)})")
    model_class(spec)
    res = spec.data.resolution  # at least 8: the schema's range
    for i, m in enumerate(spec.evaluate.metrics):
        if m not in METRICS:
            raise SpecError(f"evaluate.metrics[{i}]", f"unknown metric {m!r}; allowed: {', '.join(METRICS.names())}")
        if m in dataset_class.unavailable_metrics:
            raise SpecError(f"evaluate.metrics[{i}]", f"metric {m!r} cannot be computed on dataset "
                                                      f"{spec.data.name!r}: {dataset_class.unavailable_metrics[m]}")
    ev = spec.evaluate
    if ev.stop_on is not None:
        keys = [k for m in ev.every_metrics for k in CURVE_KEYS[m]]
        if not ev.every:
            raise SpecError("evaluate.stop_on", f"{ev.stop_on!r} stops on a curve, but evaluate.every is 0 (no "
                                                f"curves); set evaluate.every > 0")
        if ev.stop_on not in keys:
            raise SpecError("evaluate.stop_on", f"{ev.stop_on!r} is not a key of evaluate.every_metrics "
                                                f"{list(ev.every_metrics)}; their keys: {', '.join(keys)}")
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
    validate_spec(spec)
    try:
        dataset = build_dataset(spec)
        build_split(spec, dataset)
    except DataError as exc:  # e.g. a resolution the dataset does not render, a malformed real-data file
        raise SpecError("data", str(exc)) from None
    for key, value, check in (("evaluate.baseline", spec.evaluate.baseline, read_baseline),
                              ("train.init_from", spec.train.init_from, checkpoint_path)):
        if value is not None:
            try:
                check(value)  # the checks the run makes before it trains (read only)
            except SpecError:
                raise
            except UnusableStart as exc:  # the checkpoint reader names the file; the spec reader names the key
                raise SpecError(key, exc.message) from None
            except (OSError, ValueError) as exc:  # a NUL byte, a name the file system refuses, unreadable JSON
                raise SpecError(key, f"cannot read {value!r}: {exc}") from None
    try:
        with torch.device("meta"):
            model = build_model(spec, dataset)
    except CausalrepError:
        raise
    except Exception as exc:  # a model's own failure: still one line naming the section, never a traceback
        raise SpecError("model", f"cannot be built: {type(exc).__name__}: {exc}") from None
    return {"kind": spec.model.KIND, "params": sum(p.numel() for p in model.parameters()), "dataset": spec.data.name,
            "images": len(dataset)}


def model_class(spec: Spec) -> type[Trainable]:
    """The registered class that builds `model:` (models.base.register_model)."""
    kind = spec.model.KIND
    if kind not in MODELS:
        raise SpecError("model.kind", f"no model class for {kind!r}; allowed: {', '.join(MODELS.names())}")
    return MODELS.get(kind)


def build_model(spec: Spec, dataset: GroundTruthDataset | None = None, graph: LatentGraph | None = None) -> Trainable:
    """The model of `model:`, wired to the dataset's channels and resolution and the latent graph: its registered
    class's from_spec, after seeding torch with spec.seed (initialisation is a function of the seed)."""
    dataset = dataset if dataset is not None else build_dataset(spec)
    graph = graph if graph is not None else build_graph(spec, dataset.true_graph)
    cls = model_class(spec)
    torch.manual_seed(spec.seed)
    ctx = BuildContext(channels=dataset.channels, dataset=dataset, train_size=partial(train_split_size, spec))
    return cls.from_spec(spec, graph, ctx)


def train_split_size(spec: Spec) -> int:
    """Images in the train split of `data:`, from the dataset class's factor grid (no images are built).

    The registered class's factor_sizes, data.include/exclude and data.split give exactly the size of
    build_split(...).train; a real-file loader whose grid is only known once its file is read (digits' MNIST)
    counts its class defaults: set the model's dataset_size explicitly there.
    """
    d = spec.data
    if DATASETS.get(d.name).spec_keys:  # your own data: the rows are only known once the files are read
        return len(build_split(spec, build_dataset(spec)).train)
    registry = FILE_LOADERS if d.path is not None and d.name in FILE_LOADERS else DATASETS
    cls = registry.get(d.name)
    grid = GroundTruthDataset()  # a stand-in carrying only the factor grid
    grid.factor_names, grid.factor_sizes = tuple(cls.factor_names), tuple(cls.factor_sizes)
    grid.factor_value_names = dict(cls.factor_value_names)
    return len(build_split(spec, grid).train)


def model_kinds() -> list[str]:
    """Every model kind a spec can name (the contract tests run over all of them). Each spec kind must have a
    registered model class and each registered kind a spec class: a LookupError names the ones that do not."""
    kinds = ModelSpec.KINDS.names()
    no_model = [k for k in kinds if k not in MODELS]
    no_spec = [k for k in MODELS.names() if k not in kinds]
    if no_model or no_spec:
        raise LookupError(f"model spec kinds without a registered model class (models.base.register_model): "
                          f"{', '.join(no_model) or '-'}; registered model kinds without a spec class "
                          f"(spec.schema.register_kind(ModelSpec, ...)): {', '.join(no_spec) or '-'}")
    return kinds


# -- run folders -----------------------------------------------------------------------------------------------
@attrs.frozen
class Run:
    """A finished (or interrupted) run, rebuilt from its folder: spec, model, graph, data, metrics."""

    path: Path
    spec: Spec
    model: Trainable
    graph: LatentGraph
    dataset: GroundTruthDataset
    split: Split
    metrics: dict
    step: int


def load_run(path: str | Path, *, device: str = "cpu") -> Run:
    """Rebuild the model from RUN_DIR/spec.yaml and load RUN_DIR/checkpoints/last.pt into it (its previous
    checkpoint, with a warning, if last.pt is damaged)."""
    path = Path(path)
    if not (path / "spec.yaml").is_file():
        raise CausalrepError(f"not a run folder (no spec.yaml): {path}")
    spec = load_spec(path / "spec.yaml")
    dataset = build_dataset(spec)
    graph = build_graph(spec, dataset.true_graph)
    model = build_model(spec, dataset, graph)
    ckpt, _ = load_latest(path / CHECKPOINT, map_location=device)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    metrics_path = path / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return Run(path=path, spec=spec, model=model, graph=graph, dataset=dataset,
               split=build_split(spec, dataset), metrics=metrics, step=int(ckpt["step"]))


def least_noisy_latent(run: Run, probe: int = 1024, where: str = "the model") -> tuple[int, torch.Tensor]:
    """(j, mu): j = argmin_k <sigma_k^2> (002 eq. 6), the latent of a loaded VAE-like run (load_run) with the
    least posterior variance on average over its first `probe` training images, and those images' posterior
    means (probe, D)."""
    if not hasattr(run.model, "posterior"):
        raise DataError(f"{where} ({type(run.model).__name__}) has no posterior variance to pick the least-noisy "
                        "latent from (002 sec 4.1 needs a VAE)")
    with torch.no_grad():
        mu, logvar = run.model.posterior(run.dataset.images_at(run.split.train[:probe]))
    return int(logvar.exp().mean(0).argmin()), mu


def latent_s(run_dir: str | Path, scale: float = 1.0, probe: int = 1024):
    """s(x) = scale * enc(x)_j with j = argmin_k <sigma_k^2> of a trained VAE-like run (002 eq. 6): the
    (factors, images) -> (N,) function data.perturb.PatternPerturbation takes; `s.latent` is j."""
    run = load_run(run_dir)
    model = run.model
    j, _ = least_noisy_latent(run, probe, where=f"data.perturbation.run: the model of {run_dir}")

    def s(factors, x):
        with torch.no_grad():
            return scale * model.posterior(x.cpu())[0][:, j]

    s.latent = j
    return s
