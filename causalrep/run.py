"""CLI: python -m causalrep.run SPEC [--set k=v ...] [--out DIR] [--device cpu|cuda] [--resume RUN_DIR].

Data-parallel on N processes: torchrun --nproc-per-node N -m causalrep.run SPEC (same arguments).
"""
from __future__ import annotations

import argparse
import sys

from .errors import CausalrepError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m causalrep.run", description="Train, evaluate and report one spec.")
    p.add_argument("spec", nargs="?", help="spec YAML file (omit with --resume)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key (YAML-typed value), e.g. --set train.steps=200; repeatable")
    p.add_argument("--out", default="runs", help="runs folder, also the Aim repo by default (default: runs)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="override train.device")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    p.add_argument("--run-dir", metavar="DIR", help="train into DIR instead of OUT/NAME/<time stamp> (continues "
                                                   "from DIR's checkpoint if it has one; used by causalrep.sweep)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not args.spec and not args.resume:
        p.error("give a SPEC file, or --resume RUN_DIR")
    if args.resume and args.run_dir:
        p.error("--run-dir goes with a SPEC file; --resume already names the run folder")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from .train import distributed

    main_rank = True
    try:
        from .experiment import Experiment
        from .report import summary
        from .spec import load_spec

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
        print(f"error: {exc}", file=sys.stderr)
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
