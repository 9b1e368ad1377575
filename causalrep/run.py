"""CLI: python -m causalrep.run SPEC [--set k=v ...] [--out DIR] [--device cpu|cuda] [--resume RUN_DIR].

python -m causalrep.run --check SPEC [--set k=v ...] validates SPEC without training or writing anything.

Data-parallel on N processes: torchrun --nproc-per-node N -m causalrep.run SPEC (same arguments).
"""
from __future__ import annotations

import argparse
import sys

from .build import check_spec
from .errors import CausalrepError, one_line_warnings
from .experiment import Experiment
from .report import summary
from .spec import load_spec
from .train import distributed


PROG = "python -m causalrep.run"


def parse_args(argv=None, prog: str = PROG) -> argparse.Namespace:
    """The options of one run; `prog` names the command in --help (`causalrep run` for the console script)."""
    p = argparse.ArgumentParser(prog=prog, description="Train, evaluate and report one spec.",
                                usage="%(prog)s SPEC [--set KEY=VALUE ...] [--check] [options]  (or --resume RUN_DIR)")
    p.add_argument("spec", nargs="?", help="spec YAML file (omit with --resume)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key (YAML-typed value), e.g. --set train.steps=200; repeatable")
    p.add_argument("--out", default="runs", help="runs folder, also the Aim repo by default (default: runs)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="override train.device")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    p.add_argument("--run-dir", metavar="DIR", help="train into DIR instead of OUT/NAME/<time stamp> (continues "
                                                   "from DIR's checkpoint if it has one; used by causalrep.sweep)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--check", action="store_true", help="validate SPEC (with its --set overrides) and exit: the schema "
                   "and its ranges, the cross-section rules, the dataset, the split and the model (built on the meta "
                   "device); nothing is trained or written. Exit status 0: ok, 2: the error printed")
    args = p.parse_args(argv)
    if args.check and (args.resume or not args.spec):
        p.error("--check takes a SPEC file (not --resume)")
    if not args.spec and not args.resume:
        p.error("give a SPEC file, or --resume RUN_DIR")
    if args.resume and args.run_dir:
        p.error("--run-dir goes with a SPEC file; --resume already names the run folder")
    return args


def print_error(exc: BaseException) -> None:
    """`error: ...` on stderr, one line, whatever stderr's encoding."""
    line = f"error: {exc}"
    enc = getattr(sys.stderr, "encoding", None) or "utf-8"
    try:
        line.encode(enc)
    except (UnicodeEncodeError, LookupError):
        line = line.encode("ascii", "backslashreplace").decode("ascii")
    print(line, file=sys.stderr)


def check(args: argparse.Namespace) -> int:
    """--check: load and validate the spec, build what can be built without training; write nothing."""
    try:
        info = check_spec(load_spec(args.spec, args.overrides))
    except CausalrepError as exc:
        print_error(exc)
        return exc.exit_code
    print(f"ok: {args.spec} ({info['kind']}, {info['params']:,} params; {info['dataset']}, {info['images']:,} images)")
    return 0


def main(argv=None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)
    if args.check:
        return check(args)
    with one_line_warnings():  # e.g. "warning: checkpoint ...: truncated or corrupted ...; using the previous ..."
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    main_rank = True
    try:
        if args.resume:
            exp = Experiment.resume(args.resume, args.overrides, device=args.device, progress=not args.no_progress)
        else:
            spec = load_spec(args.spec, args.overrides)
            exp = Experiment(spec, out=args.out, run_dir=args.run_dir, device=args.device,
                             progress=not args.no_progress)
        main_rank = distributed.is_main()  # under torchrun only rank 0 prints the run folder and metrics
        if main_rank:
            print(f"run folder: {exp.run_dir}" + (f" ({distributed.world_size()} processes)"
                                                  if distributed.world_size() > 1 else ""), flush=True)
        metrics = exp.run()
    except CausalrepError as exc:
        print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; resume with --resume RUN_DIR (the last checkpoint is kept)", file=sys.stderr)
        return 130
    finally:
        distributed.cleanup()
    if main_rank:
        print(f"done: {exp.run_dir}\n{summary(metrics, exp.baseline)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
