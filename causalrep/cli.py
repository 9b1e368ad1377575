"""The `causalrep` command (console script and python -m causalrep): run, sweep, table, report, check, data get.

Each subcommand is the module that already does the work, with its own options: `causalrep run` is
`python -m causalrep.run`, `causalrep sweep` is `python -m causalrep.sweep`, `causalrep table` is
`python -m causalrep.table`, `causalrep check SPEC` is `python -m causalrep.run --check SPEC`; `causalrep report RUN`
rewrites a finished run's report from its checkpoint and metrics.json; `causalrep data get NAME` downloads a real
dataset file (data/download.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from . import run as run_cli
from . import sweep as sweep_cli
from . import table as table_cli
from .build import load_run
from .data import download
from .errors import CausalrepError, SpecError, one_line_warnings
from .report import read_baseline, write_report

PROG = "causalrep"


class CommandError(CausalrepError):
    """A command's argument names something unusable (e.g. `report` of a folder that is not a finished run)."""

    exit_code = 2


def rewrite_report(run_dir: str | Path, *, device: str = "cpu", baseline: bool = True) -> dict[str, Path]:
    """Write the report of the finished run in `run_dir` again, as Experiment.run wrote it: the PNG grids,
    report.md and metrics.json, from the run's checkpoint (build.load_run) and its metrics.json. Nothing is
    trained or evaluated; the spec's evaluate settings (traversal_steps, sampling, baseline) and seed are used."""
    run_dir = Path(run_dir)
    for name in ("spec.yaml", "metrics.json"):
        if not (run_dir / name).is_file():
            raise CommandError(f"report: {run_dir} is not a finished run folder (no {name}); an interrupted run "
                               f"is finished by: causalrep run --resume {run_dir}")
    run = load_run(run_dir, device=device)
    evaluate = run.spec.evaluate
    base = None
    if baseline and evaluate.baseline is not None:
        try:
            base = read_baseline(evaluate.baseline)
        except SpecError as exc:
            raise SpecError(exc.path, f"{exc.message}; run this from the folder the run was started in, or pass "
                                      "--no-baseline") from None
    return write_report(model=run.model, dataset=run.dataset, split=run.split, run_dir=run.path,
                        metrics=run.metrics, step=run.step, traversal_steps=evaluate.traversal_steps,
                        sampling=evaluate.sampling, seed=run.spec.seed, baseline=base)


# --------------------------------------------------------------------------------- the subcommands
def _run(argv: list[str]) -> int:
    return run_cli.main(argv, prog=f"{PROG} run")


def _sweep(argv: list[str]) -> int:
    return sweep_cli.main(argv, prog=f"{PROG} sweep")


def _table(argv: list[str]) -> int:
    return table_cli.main(argv, prog=f"{PROG} table")


def _check(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"{PROG} check", description="Validate a spec without training or writing "
                                "anything (what `causalrep run --check` does): the schema and its ranges, the "
                                "cross-section rules, the dataset, the split and the model (built on the meta "
                                "device). Exit status 0: ok, 2: the error printed.")
    p.add_argument("spec", help="spec YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key (YAML-typed value); repeatable")
    return run_cli.check(p.parse_args(argv))


def _report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"{PROG} report", description="Regenerate the report of a finished run folder "
                                "(report.md, the PNG grids, metrics.json) from its checkpoint and metrics.json, "
                                "without training or evaluating anything.")
    p.add_argument("run", metavar="RUN", help="a finished run folder (spec.yaml, checkpoints/, metrics.json)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to load the model (default: cpu)")
    p.add_argument("--no-baseline", action="store_true", help="leave out the spec's evaluate.baseline comparison")
    args = p.parse_args(argv)
    try:
        with one_line_warnings():
            files = rewrite_report(args.run, device=args.device, baseline=not args.no_baseline)
    except CausalrepError as exc:
        run_cli.print_error(exc)
        return exc.exit_code
    pngs = sum(1 for f in files.values() if f.suffix == ".png")
    print(f"wrote {files['report']} ({pngs} figures) and {files['metrics'].name}")
    return 0


def _data(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"{PROG} data", description="Real dataset files (docs/datasets.md).")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    g = sub.add_parser("get", help="download, verify and place a dataset file where data.path can load it",
                       description="Download a real dataset file from its official location into DEST, resuming "
                                   "a partial download (DEST/<file>.part), verify its checksum, and print the "
                                   "data.path to put in a spec.")
    g.add_argument("name", metavar="NAME", help=f"one of: {', '.join(sorted(download.SOURCES))}")
    g.add_argument("--variant", help="which file of NAME (mpi3d: " + ", ".join(download.SOURCES["mpi3d"]) +
                                     "; default: the first)")
    g.add_argument("--dest", metavar="DIR", help="folder to put it in (default: $CAUSALREP_DATA, else "
                                                 "~/.cache/causalrep)")
    g.add_argument("--url", help="download from this URL instead (a mirror; the same checksum is required)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        path = download.get(args.name, args.variant, dest=args.dest, url=args.url, progress=not args.no_progress)
    except CausalrepError as exc:
        run_cli.print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue the download (the .part file is kept)",
              file=sys.stderr)
        return 130
    name = download.source(args.name, args.variant).data_name
    print(f"ok: {path} ({path.stat().st_size:,} bytes, verified)\ndata.path: {path.resolve()}\n"
          f"  e.g. --set data.name={name} --set data.path={path.resolve()}")
    return 0


# name -> (one line for `causalrep --help`, handler of the remaining arguments)
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "run": ("train, evaluate and report one spec (python -m causalrep.run)", _run),
    "sweep": ("run a sweep file's grid of runs (python -m causalrep.sweep)", _sweep),
    "table": ("tabulate finished runs, mean ± std over seeds (causalrep.table)", _table),
    "report": ("regenerate a finished run's report; trains nothing", _report),
    "check": ("validate a spec and its --set overrides; trains nothing", _check),
    "data": ("data get NAME: download a real dataset file (dsprites, ...)", _data),
}


def parser() -> argparse.ArgumentParser:
    """The top-level parser: it picks the subcommand and leaves every argument after it to that command."""
    p = argparse.ArgumentParser(prog=PROG, description="Structured and causal representation learning from "
                                "declarative latent-graph specs. `causalrep COMMAND --help` shows a command's options.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (line, _) in COMMANDS.items():
        # add_help=False and no option prefix: `--help`, `--set` etc. all go to the command's own parser
        s = sub.add_parser(name, help=line, add_help=False, prefix_chars="\0")
        s.add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return COMMANDS[args.command][1](args.args)


if __name__ == "__main__":
    sys.exit(main())
