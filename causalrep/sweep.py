"""Sweeps: expand a grid of runs (models x grid x seeds, optional stages) and run them locally or with torchrun.

    python -m causalrep.sweep specs/sweeps/smoke.yaml --out runs/smoke [--dry-run] [--set KEY=VALUE ...]

Each run is an ordinary run folder OUT/<model>[-<grid>][-<stage>]/s<seed> (spec.yaml, checkpoints,
metrics.json, report) with track.experiment = the sweep's name, so `aim up --repo OUT` shows the sweep as
one experiment and `python -m causalrep.table OUT` tabulates it. A finished run (metrics.json present) is
skipped and an interrupted one continues from its checkpoint, so re-running a sweep completes it.
The sweep file's schema is in docs/sweeps.md.
"""
from __future__ import annotations

import argparse
import fnmatch
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import torch
import yaml
from tqdm.auto import tqdm

from .build import build_dataset
from .data.base import factor_mask
from .errors import CausalrepError, SpecError, one_line_warnings
from .experiment import Experiment
from .heldout import SUBSET_KEYS, heldout_metrics
from .report import write_json_atomic
from .spec.load import _read_yaml, apply_override, deep_merge, dump_spec, load_spec, load_tree
from .train.checkpoint import CHECKPOINT, has_checkpoint

KEYS = ("name", "description", "specs", "base", "models", "seeds", "overrides", "grid", "stages", "heldout",
        "launcher", "nproc")
LAUNCHERS = ("local", "torchrun")
STAGE_KEYS = ("name", "overrides")
# top-level keys with this prefix are ignored: they hold YAML anchors (&name) that models refer to (*name),
# as docker-compose's extension fields do
EXTENSION_PREFIX = "x-"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@attrs.frozen
class PlannedRun:
    """One run of a sweep: where its spec comes from, the overrides applied to it, and its folder."""

    group: str  # the spec's name: model[-grid][-stage]; a table row groups the seeds of one group
    model: str
    stage: str | None
    stage_index: int  # position in the sweep's stages (0 without stages)
    grid: dict[str, Any]
    seed: int | None  # None: the spec's own seed
    source: Path | None  # the spec file (specs:), or None for models: entries (tree)
    tree: dict | None  # plain spec data of a models: entry, merged over base:
    overrides: tuple[str, ...]  # --set strings, applied in order
    bookkeeping: tuple[str, ...]  # then these: name=<group>, track.experiment=<sweep>, track.repo=<out>
    run_dir: Path

    def spec(self):
        """The validated spec (load_spec: base inheritance, overrides, cross-section checks)."""
        sets = (*self.overrides, *self.bookkeeping)
        try:
            return load_spec(self.source, sets) if self.source is not None else load_spec(data=self.tree, overrides=sets)
        except SpecError as exc:
            raise SpecError(exc.path, f"{exc.message} (sweep run {self.label})") from None

    @property
    def label(self) -> str:
        return f"{self.run_dir.parent.name}/{self.run_dir.name}"

    def info(self, sweep: str) -> dict[str, Any]:
        """What the run folder's sweep.json records (causalrep.table reads model, stage and grid from it)."""
        return {"sweep": sweep, "group": self.group, "model": self.model, "stage": self.stage,
                "stage_index": self.stage_index, "grid": self.grid, "seed": self.seed}


@attrs.frozen
class Sweep:
    name: str
    path: Path
    out: Path
    runs: tuple[PlannedRun, ...]
    heldout: dict[str, dict]
    launcher: str
    nproc: int


# ----------------------------------------------------------------------------------------- helpers
def as_override(key: str, value: Any) -> str:
    """A `--set KEY=VALUE` string whose VALUE reads back (yaml.safe_load) as `value`."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30)
    if text.endswith("\n...\n"):  # a plain scalar document
        text = text[: -len("\n...\n")]
    return f"{key}={text.strip()}"


def _fail(where: str, key: str, message: str):
    raise SpecError(f"{where}: {key}", message)


def _mapping(data: Any, where: str, key: str) -> dict:
    if not isinstance(data, dict):
        _fail(where, key, f"expected a mapping, got {type(data).__name__}")
    return data


def _overrides(data: Any, where: str, key: str) -> dict[str, Any]:
    """A mapping of dotted key paths (train.steps) to values; each key names a spec key."""
    data = _mapping(data or {}, where, key)
    for k in data:
        if not isinstance(k, str) or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in k.split(".")):
            _fail(where, f"{key}.{k}", "expected a dotted key path such as train.steps")
    return data


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("_") or "x"


def grid_points(grid: dict[str, list]) -> list[dict[str, Any]]:
    """The cartesian product of the grid's value lists, first key slowest: [{key: value, ...}, ...]."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def grid_label(point: dict[str, Any]) -> str:
    """e.g. {train.lr: 0.001, model.latent_dim: 6} -> 'lr0.001-latent_dim6' (leaf key + value)."""
    leaves = [k.rsplit(".", 1)[-1] for k in point]
    names = [leaf if leaves.count(leaf) == 1 else k.replace(".", "_") for k, leaf in zip(point, leaves)]
    return "-".join(f"{n}{_slug(v)}" for n, v in zip(names, point.values()))


# ----------------------------------------------------------------------------------------- loading
def load_sweep(path: str | Path, *, out: str | Path | None = None, overrides: tuple[str, ...] = ()) -> Sweep:
    """Read and validate a sweep file and expand it into its runs (errors name the sweep key path)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise SpecError("", f"sweep file not found: {path}")
    data = _read_yaml(path, where)
    for key in data:
        if key not in KEYS and not str(key).startswith(EXTENSION_PREFIX):
            _fail(where, str(key), f"unknown key; allowed: {', '.join(KEYS)} (or an {EXTENSION_PREFIX}* key "
                                   "holding YAML anchors, which is ignored)")
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        _fail(where, "name", f"expected a name of letters, digits, '_', '.', '-', got {name!r}")
    out = Path(out) if out is not None else Path("runs") / name
    out_abs = out.resolve()

    # models: spec files (specs:) and/or spec data over a base (models:)
    models: list[tuple[str, Path | None, dict | None]] = []
    specs = data.get("specs", [])
    if not isinstance(specs, list):
        _fail(where, "specs", "expected a list of spec files (relative to the sweep file)")
    for i, s in enumerate(specs):
        if not isinstance(s, str):
            _fail(where, f"specs[{i}]", f"expected a spec file name, got {s!r}")
        file = Path(os.path.normpath(path.parent / s))
        if not file.is_file():
            _fail(where, f"specs[{i}]", f"spec file not found: {file} (paths are relative to the sweep file)")
        models.append((str(load_tree(file).get("name") or file.stem), file, None))
    base = data.get("base")
    if base is not None and not isinstance(base, str):
        _fail(where, "base", f"expected a spec file name, got {base!r}")
    if base is not None and not (path.parent / base).is_file():
        _fail(where, "base", f"spec file not found: {path.parent / base} (paths are relative to the sweep file)")
    entries = _mapping(data.get("models", {}) or {}, where, "models")
    if base is not None and not entries:
        _fail(where, "base", "a base needs models: (name -> spec keys merged over the base)")
    base_tree = load_tree(path.parent / base) if base is not None else {}
    for m, entry in entries.items():
        entry = _mapping(entry if entry is not None else {}, where, f"models.{m}")
        models.append((str(m), None, deep_merge(base_tree, entry)))
    if not models:
        _fail(where, "specs", "a sweep needs at least one model: give specs: [files] or base: + models:")
    for m, _, _ in models:
        if not NAME.match(m):
            _fail(where, "models", f"model name {m!r}: use letters, digits, '_', '.', '-'")

    seeds = data.get("seeds")
    if seeds is not None:
        if not isinstance(seeds, list) or not seeds:
            _fail(where, "seeds", "expected a non-empty list of ints")
        for i, s in enumerate(seeds):
            if not isinstance(s, int) or isinstance(s, bool) or s < 0:
                _fail(where, f"seeds[{i}]", f"expected a non-negative int, got {s!r}")
        if len(set(seeds)) != len(seeds):
            _fail(where, "seeds", f"repeated seeds in {seeds}")
    common = _overrides(data.get("overrides"), where, "overrides")
    grid = _overrides(data.get("grid"), where, "grid")
    for k, values in grid.items():
        if not isinstance(values, list) or not values:
            _fail(where, f"grid.{k}", "expected a non-empty list of values")

    stages = data.get("stages")
    if stages is None:
        stages = [{"name": None, "overrides": {}}]  # one unnamed stage: the runs themselves
    elif not isinstance(stages, list) or not stages:
        _fail(where, "stages", "expected a non-empty list of {name, overrides}")
    else:
        stage_names: list[str] = []
        for i, st in enumerate(stages):
            st = _mapping(st, where, f"stages[{i}]")
            for k in st:
                if k not in STAGE_KEYS:
                    _fail(where, f"stages[{i}].{k}", f"unknown key; allowed: {', '.join(STAGE_KEYS)}")
            sn = st.get("name")
            if not isinstance(sn, str) or not NAME.match(sn):
                _fail(where, f"stages[{i}].name", f"expected a name of letters, digits, '_', '.', '-', got {sn!r}")
            if sn in stage_names:
                _fail(where, f"stages[{i}].name", f"stage {sn!r} appears twice")
            for k, v in _overrides(st.get("overrides"), where, f"stages[{i}].overrides").items():
                if isinstance(v, str) and v.startswith("@") and v[1:] not in stage_names:
                    _fail(where, f"stages[{i}].overrides.{k}",
                          f"unknown stage {v!r}; a stage refers to an earlier one "
                          f"({', '.join('@' + n for n in stage_names) or 'none before this one'})")
            stage_names.append(sn)

    heldout = _mapping(data.get("heldout", {}) or {}, where, "heldout")
    for hn, sub in heldout.items():
        if not NAME.match(str(hn)):
            _fail(where, f"heldout.{hn}", "use letters, digits, '_', '.', '-' in a held-out set's name")
        sub = _mapping(sub if sub is not None else {}, where, f"heldout.{hn}")
        heldout[hn] = sub
        for k in sub:
            if k not in SUBSET_KEYS:
                _fail(where, f"heldout.{hn}.{k}", f"unknown key; allowed: {', '.join(SUBSET_KEYS)}")
        if sub.get("split", "test") not in ("val", "test"):
            _fail(where, f"heldout.{hn}.split", f"expected val or test, got {sub['split']!r}")
        if not isinstance(sub.get("fid", False), bool):
            _fail(where, f"heldout.{hn}.fid", f"expected true or false, got {sub['fid']!r}")
        n = sub.get("n")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 2):
            _fail(where, f"heldout.{hn}.n", f"expected an int of at least 2, got {n!r}")
        for k in ("include", "exclude"):
            rules = _mapping(sub.get(k) or {}, where, f"heldout.{hn}.{k}")
            for f, values in rules.items():
                if not isinstance(values, list) or not values:
                    _fail(where, f"heldout.{hn}.{k}.{f}", "expected a non-empty list of values (names or indices)")

    launcher = data.get("launcher", "local")
    if launcher not in LAUNCHERS:
        _fail(where, "launcher", f"{launcher!r} is not allowed; allowed: {', '.join(LAUNCHERS)}")
    nproc = data.get("nproc", 2)
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        _fail(where, "nproc", f"expected a positive int, got {nproc!r}")

    # expansion: model x grid point x seed, the stages in order within each
    runs: list[PlannedRun] = []
    for (model, source, tree), point, seed in itertools.product(models, grid_points(grid), seeds or [None]):
        done: dict[str, Path] = {}
        for stage_index, st in enumerate(stages):
            stage = st.get("name")
            group = "-".join(p for p in (model, grid_label(point) if point else "", stage) if p)
            sets = [as_override(k, v) for k, v in common.items()]
            sets += [as_override(k, v) for k, v in point.items()]
            for k, v in (st.get("overrides") or {}).items():
                if isinstance(v, str) and v.startswith("@"):
                    v = str(done[v[1:]].resolve())  # the earlier stage's run folder
                sets.append(as_override(k, v))
            if seed is not None:
                sets.append(f"seed={seed}")
            sets += list(overrides)
            books = [as_override("name", group), as_override("track.experiment", name)]
            if not any(ov.startswith("track.repo=") for ov in sets):
                books.append(as_override("track.repo", str(out_abs)))
            resolved = tree if tree is not None else load_tree(source)
            for ov in sets:  # plain data only: the folder is named after the seed the run will have
                resolved = apply_override(resolved, ov)
            run_dir = out / group / f"s{_slug(resolved.get('seed', 0))}"
            runs.append(PlannedRun(group=group, model=model, stage=stage, stage_index=stage_index, grid=point, seed=seed, source=source,
                                   tree=tree, overrides=tuple(sets), bookkeeping=tuple(books), run_dir=run_dir))
            if stage is not None:
                done[stage] = run_dir
    labels = [r.label for r in runs]
    twice = sorted({lb for lb in labels if labels.count(lb) > 1})
    if twice:
        _fail(where, "specs", f"two runs would share a folder: {', '.join(twice)} (give the models distinct names)")
    return Sweep(name=name, path=path, out=out, runs=tuple(runs), heldout=heldout, launcher=launcher, nproc=nproc)


def check_heldout(sweep: Sweep, specs: dict[str, Any]) -> None:
    """The held-out filters name real factors and values of every run's dataset (checked before training)."""
    if not sweep.heldout:
        return
    seen: set = set()
    for spec in specs.values():
        key = (spec.data.name, spec.data.path, spec.data.resolution)
        if key in seen:
            continue
        seen.add(key)
        ds = build_dataset(spec)
        for hn, sub in sweep.heldout.items():
            try:
                factor_mask(ds, sub.get("include"), sub.get("exclude"), where=f"heldout.{hn}")
            except SpecError as exc:
                raise SpecError(f"{sweep.path}: {exc.path}", exc.message) from None


# ----------------------------------------------------------------------------------------- running
def status(run: PlannedRun) -> str:
    """done: metrics.json exists (written last, atomically, by the report); resume: a checkpoint exists (last.pt
    or the previous one); new: neither (a run killed before its first checkpoint starts again)."""
    if (run.run_dir / "metrics.json").is_file():
        return "done"
    if has_checkpoint(run.run_dir / CHECKPOINT):
        return "resume"
    return "new"


def torchrun_command(run: PlannedRun, sweep: Sweep, spec_file: Path, progress: bool) -> list[str]:
    """One run as its own torchrun job: N processes of causalrep.run on the run's resolved spec."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={sweep.nproc}",
           "-m", "causalrep.run", str(spec_file), "--run-dir", str(run.run_dir), "--out", str(sweep.out)]
    return cmd + ([] if progress else ["--no-progress"])


def run_one(run: PlannedRun, spec, sweep: Sweep, *, progress: bool) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "sweep.json").write_text(json.dumps(run.info(sweep.name), indent=2))
    if sweep.launcher == "torchrun":
        spec_file = run.run_dir / "spec.yaml"  # the resolved spec; the run rewrites the same text
        spec_file.write_text(dump_spec(spec))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                          os.environ.get("PYTHONPATH")]))}
        res = subprocess.run(torchrun_command(run, sweep, spec_file, progress), env=env)
        if res.returncode != 0:
            raise CausalrepError(f"sweep run {run.label} failed (torchrun exit code {res.returncode}); "
                                 f"re-running the sweep continues from its last checkpoint")
    else:
        Experiment(spec, out=sweep.out, run_dir=run.run_dir, progress=progress).run()


def add_heldout(run: PlannedRun, sweep: Sweep) -> None:
    """Merge the sweep's held-out reconstruction errors into the run's metrics.json (each set once)."""
    if not sweep.heldout:
        return
    path = run.run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    missing = {hn: sub for hn, sub in sweep.heldout.items() if f"heldout_{hn}_mse_x1000" not in metrics}
    if not missing:  # only the sets a run lacks are scored (a set added to a finished sweep costs just itself)
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metrics.update(heldout_metrics(run.run_dir, missing, device=device))
    write_json_atomic(path, metrics)  # a sweep killed here keeps the run's metrics.json whole


RESULT_FILES = ("spec.yaml", "metrics.json", "sweep.json")  # small, text: what a table and a rerun need


def keep_results(run: PlannedRun, sweep: Sweep, results: Path) -> Path:
    """Copy a finished run's spec.yaml, metrics.json and sweep.json to RESULTS/<group>/s<seed>/ (no
    checkpoints, no images), so they can be committed as soon as the run ends and `python -m
    causalrep.table RESULTS` tabulates them; the copy's spec reruns that one seed."""
    dest = results / run.run_dir.relative_to(sweep.out)
    dest.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        src = run.run_dir / name
        if src.is_file():
            (dest / name).write_bytes(src.read_bytes())
    return dest


def select(sweep: Sweep, only: str | None) -> Sweep:
    """The runs whose label (GROUP/sSEED, e.g. sae12-encoder/s0) matches the glob `only`."""
    if not only:
        return sweep
    runs = tuple(r for r in sweep.runs if fnmatch.fnmatchcase(r.label, only))
    if not runs:
        raise CausalrepError(f"--only {only!r} matches no run; runs: {', '.join(r.label for r in sweep.runs[:8])}"
                             + (" ..." if len(sweep.runs) > 8 else ""))
    return attrs.evolve(sweep, runs=runs)


def run_sweep(sweep: Sweep, *, dry_run: bool = False, progress: bool = True,
              results: str | Path | None = None) -> list[PlannedRun]:
    """Validate every run's spec, then (unless dry_run) run the runs in order, each finished run's small
    files copied under `results` (see keep_results); returns the plan."""
    specs = {r.label: r.spec() for r in sweep.runs}  # every spec is checked before anything trains
    check_heldout(sweep, specs)
    width = max(len(r.label) for r in sweep.runs)
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs -> {sweep.out} (launcher: {sweep.launcher}"
          + (f", {sweep.nproc} processes each" if sweep.launcher == "torchrun" else "") + ")")
    if dry_run:
        for r in sweep.runs:
            sets = " ".join(f"--set {shlex.quote(s)}" for s in r.overrides)
            src = r.source if r.source is not None else f"models.{r.model}"
            print(f"  {r.label:<{width}}  {status(r):<6}  {src} {sets}")
        return list(sweep.runs)
    sweep.out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(sweep.runs, desc=f"sweep {sweep.name}", unit="run", disable=not progress, dynamic_ncols=True)
    for r in bar:
        state = status(r)
        bar.set_postfix_str(r.label)
        if state != "done":
            tqdm.write(f"[{r.label}] {'continuing from its checkpoint' if state == 'resume' else 'training'}")
            run_one(r, specs[r.label], sweep, progress=progress)
        add_heldout(r, sweep)
        if results is not None:
            tqdm.write(f"[{r.label}] results in {keep_results(r, sweep, Path(results))}")
    bar.close()
    return list(sweep.runs)


# ----------------------------------------------------------------------------------------- CLI
def main(argv=None, prog: str = "python -m causalrep.sweep") -> int:
    p = argparse.ArgumentParser(prog=prog,
                                description="Expand a sweep file into runs and run them (docs/sweeps.md).")
    p.add_argument("sweep", help="sweep YAML file")
    p.add_argument("--out", help="folder of the sweep's run folders and Aim repo (default: runs/<sweep name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of every run's spec, after the sweep's own overrides; repeatable")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs, train nothing")
    p.add_argument("--launcher", choices=LAUNCHERS, help="override the sweep's launcher")
    p.add_argument("--nproc", type=int, help="processes per torchrun job (override the sweep's nproc)")
    p.add_argument("--only", metavar="GLOB", help="run only the runs whose GROUP/sSEED matches, e.g. 'sae12-*/s0' "
                                                  "(a later stage needs its earlier stages' runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--results", metavar="DIR", help="copy each finished run's spec.yaml, metrics.json and sweep.json "
                                                    "to DIR/<group>/s<seed>/ (e.g. results/<claim>, to commit)")
    args = p.parse_args(argv)
    with one_line_warnings():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    try:
        sweep = load_sweep(args.sweep, out=args.out, overrides=tuple(args.overrides))
        if args.nproc is not None and args.nproc < 1:
            raise SpecError("--nproc", f"expected a positive int, got {args.nproc}")
        if args.launcher or args.nproc:
            sweep = attrs.evolve(sweep, launcher=args.launcher or sweep.launcher, nproc=args.nproc or sweep.nproc)
        sweep = select(sweep, args.only)
        runs = run_sweep(sweep, dry_run=args.dry_run, progress=not args.no_progress, results=args.results)
    except CausalrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue the sweep", file=sys.stderr)
        return 130
    if not args.dry_run:
        print(f"done: {len(runs)} runs in {sweep.out}; tabulate with: python -m causalrep.table {sweep.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
