"""The sweep file's schema (python -m causalrep.sweep): frozen attrs classes, validated like a spec, with key paths.

docs/spec.md's "Sweep files" section is generated from these classes (tools/gen_spec_docs.py); docs/sweeps.md says
how a sweep expands into runs. A sweep's models are spec data; they are validated as specs when the runs are
planned (causalrep.sweep), not here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from ..errors import SpecError
from .convert import Pattern, describe, from_dict, spec_field as field
from .load import _read_yaml
from .schema import INDEX, SEED

frozen = attrs.frozen(kw_only=True)

# a sweep, model, stage or held-out set name: one folder (part) on any file system
NAME = Pattern(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}", "a name of letters, digits, '_', '.', '-', starting with a letter "
                                                     "or digit, at most 200 characters")
# an override's key: a spec key path as --set takes it (train.steps, data.perturbation.run)
KEY_PATH = Pattern(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", "a dotted key path such as train.steps")
# an sbatch option name without its leading dashes (account, qos, mail-type)
SBATCH_OPTION = Pattern(r"[A-Za-z][A-Za-z0-9_-]*", "an sbatch option name without '--', such as account or mail-type")
# a memory size as sbatch --mem takes it: a number and an optional unit
MEMORY = Pattern(r"[1-9][0-9]*[KMGT]?", "a size as sbatch --mem takes it, such as 64G or 500M")

# keys starting with this are ignored: they hold YAML anchors (&name) that models refer to (*name), as
# docker-compose's extension fields do
EXTENSION_PREFIX = "x-"
STAGE_REF = "@"  # a stage override's value "@<stage>" is that earlier stage's run folder


def _non_empty(what: str):
    def check(instance, attribute, value):
        if value is not None and len(value) == 0:
            raise ValueError(f"{attribute.name}: expected a non-empty list of {what}")
    return check


@frozen
class StageSpec:
    """One stage of a staged sweep: every model x grid point x seed runs the stages in order, each its own run."""

    name: str = field(help="the stage's name: part of the run's group (<model>-<stage>) and the target of \"@<name>\"",
                      pattern=NAME)
    overrides: dict[str, Any] = field(attrs.Factory(dict), keys=KEY_PATH,
                                      help="key path -> value, set in this stage's runs after the sweep's own "
                                           "overrides; a value \"@<stage>\" is that earlier stage's run folder "
                                           "(of the same model, grid point and seed)")


@frozen
class HeldoutSpec:
    """A held-out image set scored after every run: the unfiltered split's images passing the filters, minus any
    the run trained on (docs/sweeps.md, "Held-out sets")."""

    include: dict[str, tuple[int | str, ...]] = field(attrs.Factory(dict), range=INDEX,
                                                      help="keep only images whose factor takes one of these values "
                                                           "(index or name), e.g. {shape: [sphere]}")
    exclude: dict[str, tuple[int | str, ...]] = field(attrs.Factory(dict), range=INDEX,
                                                      help="drop images whose factor takes one of these values")
    split: str = field("test", choices=("val", "test"), help="the part of the unfiltered split the images come from")
    n: int | None = field(None, range="[2, 1e9]", help="the first n images; null: the run's evaluate.val_samples")
    fid: bool = field(False, help="also the FID between the images and their reconstructions "
                                  "(heldout_<name>_fid_recon_<features>, 000 Fig. 8)")

    @include.validator
    @exclude.validator
    def _values(self, attribute, value):
        for factor, values in value.items():
            if not values:
                raise ValueError(f"{attribute.name}.{factor}: expected a non-empty list of values (names or indices)")


@frozen
class SlurmSpec:
    """`launcher: slurm`: each run is one job submitted through submitit (AutoExecutor), the runs that can start
    together as one array job (Executor.map_array); the sweep process waits for them, submits later stages once
    their earlier stage has finished, and lists failed runs at the end. The keys map onto submitit's
    update_parameters keys (named in each description)."""

    cluster: str = field("slurm", choices=("slurm", "local"),
                         help="slurm: sbatch on this Slurm cluster (submitit's SlurmExecutor); local: each job a "
                              "process on this machine through submitit's LocalExecutor, to try a sweep (and its "
                              "Slurm bookkeeping) before a cluster")
    partition: str | None = field(None, help="sbatch --partition (slurm_partition); null: the cluster's default")
    gpus_per_task: int = field(1, range="[0, 64]", help="GPUs of each job, which runs one task (gpus_per_node; "
                                                        "sbatch --gpus-per-node)")
    cpus_per_task: int = field(4, range="[1, 1024]", help="CPU cores of each job (cpus_per_task)")
    mem: str | None = field(None, pattern=MEMORY, help="memory of each job, sbatch --mem (slurm_mem); null: the "
                                                       "partition's default")
    time_min: int = field(240, range="[1, 525600]",
                          help="time limit of each job in minutes (timeout_min; sbatch --time). A run that reaches "
                               "it is requeued (up to max_requeue times) and continues from its last checkpoint")
    max_requeue: int = field(3, range="[0, 100]", help="how many times a job that timed out is requeued "
                                                       "(the executor's max_num_timeout); preemptions do not count")
    array_parallelism: int | None = field(None, range="[1, 100000]",
                                          help="most of the sweep's jobs submitted and not ended at once (each "
                                               "array job's sbatch --array=...%N too: slurm_array_parallelism); "
                                               "null: submitit's 256 on Slurm; with cluster: local, the CPU cores / "
                                               "cpus_per_task (at least 1)")
    sbatch: dict[str, str | int | bool] = field(attrs.Factory(dict), keys=SBATCH_OPTION,
                                                help="more sbatch options, name -> value, each written as #SBATCH "
                                                     "--name=value (true: --name alone), e.g. {account: proj42, qos: "
                                                     "high, constraint: a100} (slurm_additional_parameters)")
    setup: tuple[str, ...] = field((), help="shell lines run in each job before Python starts, e.g. [module load "
                                            "cuda/12.4] (slurm_setup; local_setup)")
    folder: str | None = field(None, help="submitit's folder of job pickles and logs (%j_0_log.out / .err); null: "
                                          "<out>/.submitit")


@frozen
class SweepSpec:
    """A sweep: models (spec files, or spec data over a base) x grid points x seeds, optionally in stages; each
    combination is one ordinary run (docs/sweeps.md)."""

    name: str = field(help="sweep name: track.experiment of every run, and the default output folder runs/<name>",
                      pattern=NAME)
    description: str = field("", help="free text")
    specs: tuple[str, ...] = field((), help="spec files, one model each, named by the spec's `name` (paths relative "
                                            "to the sweep file)")
    base: str | None = field(None, help="the spec file (relative to the sweep file) every `models:` entry is "
                                        "deep-merged over")
    models: dict[str, dict[str, Any] | None] = field(attrs.Factory(dict), keys=NAME,
                                                     help="model name -> spec keys (deep-merged over `base`, or a "
                                                          "complete spec without it); a section whose `kind` "
                                                          "changes replaces the base's whole")
    seeds: tuple[int, ...] | None = field(None, range=SEED, help="one run per seed (seed=<s> is set); null: each "
                                                                 "spec's own seed")
    overrides: dict[str, Any] = field(attrs.Factory(dict), keys=KEY_PATH,
                                      help="key path -> value, set in every run after the spec file (a value may be "
                                           "any YAML value; it replaces the key's value)")
    grid: dict[str, Any] = field(attrs.Factory(dict), keys=KEY_PATH,
                                 help="key path -> list of values: the cartesian product, one run per combination "
                                      "(first key slowest)")
    stages: tuple[StageSpec, ...] | None = field(None, help="run in order for every model x grid point x seed; "
                                                            "null: one unnamed stage")
    heldout: dict[str, HeldoutSpec | None] = field(attrs.Factory(dict), keys=NAME,
                                                   help="name -> held-out image set: heldout_<name>_mse_x1000 (and "
                                                        "_images, _fid_recon_*) added to every run's metrics.json")
    launcher: str = field("local", choices=("local", "torchrun", "slurm"),
                          help="how each run is started: local (in the sweep's process, one after another), "
                               "torchrun (each run its own `nproc`-process torchrun job, one after another), slurm "
                               "(each run a job through submitit, see `slurm`)")
    nproc: int = field(2, range="[1, 1024]", help="processes per run with launcher: torchrun")
    slurm: SlurmSpec = field(attrs.Factory(SlurmSpec), help="the Slurm jobs of launcher: slurm")

    @seeds.validator
    def _seeds(self, attribute, value):
        if value is not None and not value:
            raise ValueError("seeds: expected a non-empty list of ints (or null: each spec's own seed)")
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"seeds: repeated seeds in {list(value)}")

    @grid.validator
    def _grid(self, attribute, value):
        for key, values in value.items():
            if not isinstance(values, list | tuple) or not values:
                raise ValueError(f"grid.{key}: expected a non-empty list of values, got {describe(values)}")

    @stages.validator
    def _stages(self, attribute, value):
        if value is None:
            return
        if not value:
            raise ValueError("stages: expected a non-empty list of {name, overrides} (or null: one unnamed stage)")
        names: list[str] = []
        for i, stage in enumerate(value):
            if stage.name in names:
                raise ValueError(f"stages[{i}].name: stage {stage.name!r} appears twice")
            for key, v in stage.overrides.items():
                if isinstance(v, str) and v.startswith(STAGE_REF) and v[1:] not in names:
                    raise ValueError(f"stages[{i}].overrides.{key}: unknown stage {v!r}; a stage refers to an "
                                     f"earlier one ({', '.join(STAGE_REF + n for n in names) or 'none before it'})")
            names.append(stage.name)


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read a sweep file (yaml.safe_load, the spec loader's limits) and validate it against SweepSpec; every error
    names the file and the key path (`specs/sweeps/x.yaml: seeds[2]: expected int, got 'a'`)."""
    path = Path(path)
    where = str(path)
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a name the file system refuses
        found = False
    if not found:
        raise SpecError("", f"sweep file not found: {path}")
    data = _read_yaml(path, where)
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith(EXTENSION_PREFIX))}
    try:
        return from_dict(SweepSpec, data)
    except SpecError as exc:
        message = exc.message
        if message.startswith("unknown key") and exc.path in map(str, data):  # a top-level key
            message += f" (or an {EXTENSION_PREFIX}* key holding YAML anchors, which is ignored)"
        raise SpecError(f"{where}: {exc.path}" if exc.path else where, message) from None
