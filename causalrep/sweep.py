"""Sweeps: expand a grid of runs (models x grid x seeds, optional stages) and run them locally, with torchrun or
as Slurm jobs (submitit).

    python -m causalrep.sweep specs/sweeps/smoke.yaml --out runs/smoke [--dry-run] [--set KEY=VALUE ...]

Each run is an ordinary run folder OUT/<model>[-<grid>][-<stage>]/s<seed> (spec.yaml, checkpoints,
metrics.json, report) with track.experiment = the sweep's name, so `aim up --repo OUT` shows the sweep as
one experiment and `python -m causalrep.table OUT` tabulates it. A finished run (metrics.json present) is
skipped and an interrupted one continues from its checkpoint, so re-running a sweep completes it; a run that
fails is listed with its error at the end (the sweep exits 1) and its later stages are not run.
The sweep file's schema is causalrep/spec/sweep.py (docs/spec.md "Sweep files"); docs/sweeps.md explains it.
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
import traceback
from pathlib import Path
from typing import Any

import attrs
import torch
import yaml
from tqdm.auto import tqdm

from . import slurm
from .build import build_dataset
from .data.base import factor_mask
from .errors import CausalrepError, SpecError, one_line, one_line_warnings
from .experiment import Experiment
from .heldout import heldout_metrics
from .report import write_json_atomic
from .spec.load import apply_override, deep_merge, dump_spec, load_spec, load_tree
from .spec.sweep import NAME, STAGE_REF, HeldoutSpec, SlurmSpec, SweepSpec, load_sweep_spec
from .train.checkpoint import CHECKPOINT, has_checkpoint

LAUNCHERS = attrs.fields_dict(SweepSpec)["launcher"].metadata["choices"]  # local, torchrun, slurm
ERROR_LOG = "error.log"  # a failed run's traceback, in its run folder (removed when it succeeds)
PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])  # first on the PYTHONPATH of torchrun and Slurm jobs


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
    chain: str  # model[-grid]/s<seed>: a chain's runs are its stages in order, each after the one before

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
    """A validated sweep file (spec.sweep.SweepSpec) expanded into its runs, with what running them needs."""

    name: str
    path: Path
    out: Path
    runs: tuple[PlannedRun, ...]
    heldout: dict[str, HeldoutSpec]
    launcher: str
    nproc: int
    slurm: SlurmSpec = attrs.Factory(SlurmSpec)


# ----------------------------------------------------------------------------------------- helpers
def as_override(key: str, value: Any) -> str:
    """A `--set KEY=VALUE` string whose VALUE reads back (yaml.safe_load) as `value`."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30)
    if text.endswith("\n...\n"):  # a plain scalar document
        text = text[: -len("\n...\n")]
    return f"{key}={text.strip()}"


def _fail(where: str, key: str, message: str):
    raise SpecError(f"{where}: {key}", message)


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
    """Read and validate a sweep file (spec.sweep.SweepSpec) and expand it into its runs (errors name the sweep
    file and key path)."""
    path = Path(path)
    return expand(load_sweep_spec(path), path, out=out, overrides=overrides)


def expand(spec: SweepSpec, path: Path, *, out: str | Path | None = None, overrides: tuple[str, ...] = ()) -> Sweep:
    """The runs of a validated sweep: model x grid point x seed, the stages in order within each. `path` is the
    sweep file (spec files are relative to it); `overrides` are the command line's --set strings."""
    where = str(path)
    out = Path(out) if out is not None else Path("runs") / spec.name
    out_abs = out.resolve()

    # models: spec files (specs:) and/or spec data over a base (models:)
    models: list[tuple[str, Path | None, dict | None]] = []
    for i, s in enumerate(spec.specs):
        file = Path(os.path.normpath(path.parent / s))
        if not file.is_file():
            _fail(where, f"specs[{i}]", f"spec file not found: {file} (paths are relative to the sweep file)")
        models.append((str(load_tree(file).get("name") or file.stem), file, None))
    if spec.base is not None and not (path.parent / spec.base).is_file():
        _fail(where, "base", f"spec file not found: {path.parent / spec.base} (paths are relative to the sweep file)")
    if spec.base is not None and not spec.models:
        _fail(where, "base", "a base needs models: (name -> spec keys merged over the base)")
    base_tree = load_tree(path.parent / spec.base) if spec.base is not None else {}
    for m, entry in spec.models.items():
        models.append((m, None, deep_merge(base_tree, entry or {})))
    if not models:
        _fail(where, "specs", "a sweep needs at least one model: give specs: [files] or base: + models:")
    for m, _, _ in models:
        if not re.fullmatch(NAME.regex, m):
            _fail(where, "specs", f"model name {m!r} (a spec's name): expected {NAME.phrase}")
    stages = spec.stages or (None,)  # None: one unnamed stage, the runs themselves

    runs: list[PlannedRun] = []
    for (model, source, tree), point, seed in itertools.product(models, grid_points(spec.grid), spec.seeds or [None]):
        done: dict[str, Path] = {}
        for stage_index, st in enumerate(stages):
            stage = st.name if st is not None else None
            group = "-".join(p for p in (model, grid_label(point) if point else "", stage) if p)
            sets = [as_override(k, v) for k, v in spec.overrides.items()]
            sets += [as_override(k, v) for k, v in point.items()]
            for k, v in (st.overrides if st is not None else {}).items():
                if isinstance(v, str) and v.startswith(STAGE_REF):
                    v = str(done[v[1:]].resolve())  # the earlier stage's run folder
                sets.append(as_override(k, v))
            if seed is not None:
                sets.append(f"seed={seed}")
            sets += list(overrides)
            books = [as_override("name", group), as_override("track.experiment", spec.name)]
            if not any(ov.startswith("track.repo=") for ov in sets):
                books.append(as_override("track.repo", str(out_abs)))
            resolved = tree if tree is not None else load_tree(source)
            for ov in sets:  # plain data only: the folder is named after the seed the run will have
                resolved = apply_override(resolved, ov)
            run_dir = out / group / f"s{_slug(resolved.get('seed', 0))}"
            chain = "-".join(p for p in (model, grid_label(point) if point else "") if p) + f"/{run_dir.name}"
            runs.append(PlannedRun(group=group, model=model, stage=stage, stage_index=stage_index, grid=point,
                                   seed=seed, source=source, tree=tree, overrides=tuple(sets),
                                   bookkeeping=tuple(books), run_dir=run_dir, chain=chain))
            if stage is not None:
                done[stage] = run_dir
    labels = [r.label for r in runs]
    twice = sorted({lb for lb in labels if labels.count(lb) > 1})
    if twice:
        _fail(where, "specs", f"two runs would share a folder: {', '.join(twice)} (give the models distinct names)")
    heldout = {n: h if h is not None else HeldoutSpec() for n, h in spec.heldout.items()}
    return Sweep(name=spec.name, path=path, out=out, runs=tuple(runs), heldout=heldout, launcher=spec.launcher,
                 nproc=spec.nproc, slurm=spec.slurm)


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
                factor_mask(ds, sub.include, sub.exclude, where=f"heldout.{hn}")
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
    """Train (or continue) one run in this process, or as its own torchrun job with launcher: torchrun."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / "sweep.json").write_text(json.dumps(run.info(sweep.name), indent=2))
    if sweep.launcher == "torchrun":
        spec_file = run.run_dir / "spec.yaml"  # the resolved spec; the run rewrites the same text
        spec_file.write_text(dump_spec(spec))
        path = os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        res = subprocess.run(torchrun_command(run, sweep, spec_file, progress), env=env)
        if res.returncode != 0:
            raise CausalrepError(f"sweep run {run.label} failed (torchrun exit code {res.returncode}); "
                                 f"re-running the sweep continues from its last checkpoint")
    else:
        Experiment(spec, out=sweep.out, run_dir=run.run_dir, progress=progress).run()


def _missing_heldout(metrics: dict, sweep: Sweep) -> dict[str, HeldoutSpec]:
    """The sweep's held-out sets a run's metrics lack (only those are scored: a set added to a finished sweep
    costs just itself)."""
    return {hn: sub for hn, sub in sweep.heldout.items() if f"heldout_{hn}_mse_x1000" not in metrics}


def add_heldout(run: PlannedRun, sweep: Sweep) -> None:
    """Merge the sweep's held-out reconstruction errors into the run's metrics.json (each set once)."""
    if not sweep.heldout:
        return
    path = run.run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    missing = _missing_heldout(metrics, sweep)
    if not missing:
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metrics.update(heldout_metrics(run.run_dir, missing, device=device))
    write_json_atomic(path, metrics)  # a sweep killed here keeps the run's metrics.json whole


def needs_work(run: PlannedRun, sweep: Sweep) -> bool:
    """Not finished, or finished without some of the sweep's held-out sets."""
    if status(run) != "done":
        return True
    return bool(sweep.heldout) and bool(_missing_heldout(json.loads((run.run_dir / "metrics.json").read_text()), sweep))


def execute_run(run: PlannedRun, spec, sweep: Sweep, progress: bool = False) -> str | None:
    """All one run needs, in whichever process runs it (the sweep's own, or a Slurm / submitit job): train or
    continue it unless it is finished, then score the held-out sets it lacks. Returns None, or the error on one
    line, its traceback written to the run folder's error.log, so that one failed run does not stop the others."""
    log = run.run_dir / ERROR_LOG
    try:
        if status(run) != "done":
            run_one(run, spec, sweep, progress=progress)
        add_heldout(run, sweep)
    except Exception as exc:  # any failure of one run is reported with the others' at the end of the sweep
        run.run_dir.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        what = str(exc) if isinstance(exc, CausalrepError) else f"{type(exc).__name__}: {exc}"
        return f"{one_line(what, 500)} (traceback in {log})"
    log.unlink(missing_ok=True)
    return None


class SweepFailed(CausalrepError):
    """Some runs of a sweep failed (the others finished): one line per failed run."""

    exit_code = 1

    def __init__(self, failed: dict[str, str], total: int):
        self.failed = dict(failed)
        lines = [f"{len(failed)} of {total} runs failed; running the sweep again retries them (finished runs are "
                 "kept, interrupted ones continue from their checkpoints):"]
        lines += [f"  {label}: {one_line(error)}" for label, error in failed.items()]
        super().__init__("\n".join(lines))


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
    """Validate every run's spec, then (unless dry_run) run the runs: in order in this process (launcher local or
    torchrun) or as Slurm jobs (launcher slurm), each finished run's small files copied under `results` (see
    keep_results); returns the plan, or raises SweepFailed naming the runs that failed once every other ended."""
    specs = {r.label: r.spec() for r in sweep.runs}  # every spec is checked before anything trains
    check_heldout(sweep, specs)
    width = max(len(r.label) for r in sweep.runs)
    how = {"torchrun": f", {sweep.nproc} processes each",
           "slurm": f", cluster {sweep.slurm.cluster}, {sweep.slurm.gpus_per_task} GPU(s) per job"
                    + (f", partition {sweep.slurm.partition}" if sweep.slurm.partition else "")}
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs -> {sweep.out} (launcher: {sweep.launcher}"
          + how.get(sweep.launcher, "") + ")", flush=True)
    if dry_run:
        for r in sweep.runs:
            sets = " ".join(f"--set {shlex.quote(s)}" for s in r.overrides)
            src = r.source if r.source is not None else f"models.{r.model}"
            print(f"  {r.label:<{width}}  {status(r):<6}  {src} {sets}")
        return list(sweep.runs)
    if sweep.launcher == "slurm":
        slurm.require(str(sweep.path))  # before any folder is made
    sweep.out.mkdir(parents=True, exist_ok=True)
    run = _run_as_jobs if sweep.launcher == "slurm" else _run_here
    failed = run(sweep, specs, progress=progress, results=Path(results) if results is not None else None)
    if failed:
        raise SweepFailed(failed, len(sweep.runs))
    return list(sweep.runs)


def _run_here(sweep: Sweep, specs: dict[str, Any], *, progress: bool, results: Path | None) -> dict[str, str]:
    """launcher local / torchrun: the runs one after another in this process; a failed run's later stages are
    not run. Returns label -> error of the runs that failed."""
    failed: dict[str, str] = {}
    broken: dict[str, str] = {}  # chain -> its failed run
    bar = tqdm(sweep.runs, desc=f"sweep {sweep.name}", unit="run", disable=not progress, dynamic_ncols=True)
    for r in bar:
        bar.set_postfix_str(r.label)
        if r.chain in broken:
            failed[r.label] = f"not run: {broken[r.chain]} failed"
            continue
        if needs_work(r, sweep):
            state = status(r)
            tqdm.write(f"[{r.label}] " + {"resume": "continuing from its checkpoint", "new": "training"}.get(
                state, "scoring its held-out sets"))
            error = execute_run(r, specs[r.label], sweep, progress=progress)
            if error is not None:
                tqdm.write(f"[{r.label}] failed: {error}")
                failed[r.label], broken[r.chain] = error, r.label
                continue
        if results is not None:
            tqdm.write(f"[{r.label}] results in {keep_results(r, sweep, results)}")
    bar.close()
    return failed


def _run_as_jobs(sweep: Sweep, specs: dict[str, Any], *, progress: bool, results: Path | None) -> dict[str, str]:
    """launcher slurm: each run that needs work is one job through submitit, running execute_run (the same
    function the local launcher calls); a run's later stage is submitted once it has succeeded. Finished runs
    are never submitted. Returns label -> error of the runs that failed."""
    todo = {r.label for r in sweep.runs if needs_work(r, sweep)}
    for r in sweep.runs:
        if r.label not in todo and results is not None:
            print(f"[{r.label}] results in {keep_results(r, sweep, results)}", flush=True)
    if not todo:
        print("nothing to submit: every run is finished", flush=True)
        return {}
    folder = Path(sweep.slurm.folder) if sweep.slurm.folder else sweep.out / ".submitit"
    executor = slurm.make_executor(sweep.slurm, folder, name=sweep.name, where=str(sweep.path),
                                   pythonpath=PACKAGE_PARENT)
    job_sweep = attrs.evolve(sweep, runs=())  # what a job needs of the sweep; not the whole plan, once per job
    tasks, last = [], {}  # last: chain -> its latest run so far (the one a later stage waits for)
    by_label = {r.label: r for r in sweep.runs}
    for r in sweep.runs:
        if r.label in todo:
            tasks.append(slurm.Task(r.label, (r, specs[r.label], job_sweep), after=last.get(r.chain)))
        last[r.chain] = r.label

    def submitted(task: slurm.Task, job) -> None:
        print(f"[{task.key}] submitted: job {job.job_id}", flush=True)

    def ended(task: slurm.Task, error: str | None) -> None:
        if error is not None:
            print(f"[{task.key}] failed: {error}", flush=True)
            return
        line = f"[{task.key}] done"
        if results is not None:
            line += f"; results in {keep_results(by_label[task.key], sweep, results)}"
        print(line, flush=True)

    print(f"submitting {len(tasks)} runs through submitit (logs in {folder})", flush=True)
    outcome = slurm.run_tasks(executor, execute_run, tasks, limit=slurm.parallelism(sweep.slurm),
                              poll_s=slurm.POLL_S[sweep.slurm.cluster], on_submit=submitted, on_end=ended)
    return {label: error for label, error in outcome.items() if error is not None}


# ----------------------------------------------------------------------------------------- CLI
def main(argv=None, prog: str = "python -m causalrep.sweep") -> int:
    p = argparse.ArgumentParser(prog=prog,
                                description="Expand a sweep file into runs and run them (docs/sweeps.md).")
    p.add_argument("sweep", help="sweep YAML file")
    p.add_argument("--out", help="folder of the sweep's run folders and Aim repo (default: runs/<sweep name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of every run's spec, after the sweep's own overrides; repeatable")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs, train nothing")
    p.add_argument("--launcher", choices=LAUNCHERS, help="override the sweep's launcher (slurm: jobs through "
                                                         "submitit, with the sweep file's slurm: settings)")
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
        print("interrupted (with launcher: slurm, its running jobs are cancelled); run the same command again to "
              "continue the sweep", file=sys.stderr)
        return 130
    if not args.dry_run:
        print(f"done: {len(runs)} runs in {sweep.out}; tabulate with: python -m causalrep.table {sweep.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
