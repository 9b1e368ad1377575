"""Golden values: every spec in specs/ at toy size, 20 fixed-seed CPU steps and a fixed evaluation, in one JSON file.

    python tools/make_golden.py                      # recompute every spec, rewrite tests/golden/values.json
    python tools/make_golden.py --spec sae12 --spec ae                     # only these specs (merged into the file)
    python tools/make_golden.py --spec laddervae --key prior_samples       # only these keys of these specs
    python tools/make_golden.py --check              # recompute and compare with the file; write nothing

They pin today's numerics before a refactor (tests/test_golden.py recomputes them; tests/golden/README.md has
the rule for changing them). Each spec is loaded with `load_spec(path, toy_overrides(path))`: its own model,
graph, data, loss and schedule kinds, at 16x16 (the pendulum's smallest size, 32x32, for its specs), with
3-block, 8-channel networks where the spec's own sizes would take seconds a step, batch 4, one CPU thread, fp32.
Per spec (`golden_values`):
  train          every value the trainer logs over 20 steps (log_every 1: each step's ModelOutput scalar terms,
                 the aux losses, the validation error and the model's tracked metrics at step 20, the ICM
                 committee's identity-initialisation record), as {context/name: [[step, value], ...]}
  metrics        the spec's evaluate.metrics on n = 64 points, minus the slow ones (SKIPPED_METRICS)
  encode         model.encode of 8 fixed test images (shape, sum, sum of |.|, the first 8 values; eval mode)
  committee      the ICM committee only: model.compete on 64 fixed test images (each winner, the winners'
                 outputs and the scores), in place of its slow `icm` metric
  reconstruct    model.reconstruct of those images (the same summary)
  samples        model.sample(8, "hybrid") after storing 8 hybrid latents, and structured hybrid samples where
                 the spec lists them, each from torch.Generator().manual_seed(0)
  prior_samples  model.sample(8, "prior") where model.can("prior") (own key: the Ladder VAE's prior is planned to
                 change, so a later commit can regenerate this key alone)
Models that do not reconstruct (the ICM committee) have no reconstruct / samples keys. The last stdout line is
{"specs": N, "seconds": S}; any spec that fails to build or run is an error (exit code 1).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SPECS_DIR = ROOT / "specs"
VALUES = ROOT / "tests" / "golden" / "values.json"
MACHINE = VALUES.with_name("machine.json")  # where the values were last written (a different CPU can move bits)


def machine() -> dict[str, str]:
    """What decides the last bits of CPU fp32 numerics: the CPU, the kernels torch picks for it, torch's build."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:  # platform.processor() is empty on Linux; lscpu's "Model name" is what people recognise
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}


# The CPU kernel level the values are computed at, on any x86 machine that has it: torch's vectorised ATen
# kernels (ATEN_CPU_CAPABILITY, torch's docs "Environment variables") and oneDNN's convolutions
# (ONEDNN_MAX_CPU_ISA, oneDNN docs "CPU Dispatcher Control") otherwise pick AVX512 code where the CPU has it,
# whose fp32 sums round differently (measured: 35 of the ICM spec's values moved on an AVX512 EPYC, up to 1e-3
# relative after 20 steps). AVX2 is what most x86 CPUs of the last decade have; MKL's BLAS needed no pin here.
KERNEL_LEVEL = "AVX2"
KERNEL_ENV = {"ATEN_CPU_CAPABILITY": KERNEL_LEVEL.lower(), "ONEDNN_MAX_CPU_ISA": KERNEL_LEVEL}


def pinned(env: dict[str, str]) -> bool:
    """Whether `env` (a process environment) pins the golden kernel level."""
    return all(env.get(k) == v for k, v in KERNEL_ENV.items())


STEPS = 20
BATCH = 4
METRIC_N = 64  # evaluate.val_samples: the metrics' fresh samples and the validation images
HYBRID_LATENTS = 8  # evaluate.hybrid_latents: the stored latents hybrid sampling draws from
N_IMAGES = 8  # encoded / reconstructed test images and samples per method
HEAD = 8  # leading values kept of each tensor beside its sums
# not pinned here: dci and fid take seconds to minutes even at n = 64 (boosted trees, a feature network), and
# icm trains a 15-epoch digit classifier and runs the committee on all 10 x 360 test digits (4-9 s a spec);
# the ICM specs pin the committee's competition on fixed test images instead ("committee")
SKIPPED_METRICS = ("dci", "fid", "icm")
COMMITTEE_IMAGES = 64
KEYS = ("train", "metrics", "encode", "reconstruct", "samples", "prior_samples", "committee")


def spec_paths() -> list[Path]:
    """specs/*.yaml: every runnable spec (specs/base holds partial specs, specs/sweeps sweep files)."""
    return sorted(SPECS_DIR.glob("*.yaml"))


# -- toy sizes ----------------------------------------------------------------------------------------
CONV = {"blocks": 3, "channels": 8, "groups": 4}  # one pool/upsample: 16x16 -> 8x8 features


def _net_overrides(raw) -> dict[str, Any]:
    """Shrink the spec's networks (kept: every kind, the latent size and graph, hidden layers being present)."""
    m, kind = raw.model, raw.model.KIND
    over: dict[str, Any] = {}
    if kind == "icm":  # 004's experts and discriminator shrunk as tests/models/test_contract.py does
        return {"model.expert_layers": 1, "model.expert_channels": 4, "model.discriminator_channels": [[4], [8]],
                "model.discriminator_hidden": 16, "model.init_iters": 2,
                # revival every 5 steps, so the 20 steps exercise it where the spec revives at all
                **({"model.revive_every": 5, "model.revive_until": 15} if m.revive_every else {})}
    for key in ("encoder", "decoder"):
        sub = getattr(m, key, None)
        if sub is None:
            continue
        if sub.KIND == "attention":  # ASAE: E divisible by the heads (000 sec 2)
            over[f"model.{key}.embed_dim"] = 2 * m.heads
            over[f"model.{key}.hidden"] = [8] if sub.hidden else []
            over[f"model.{key}.head_hidden"] = [8] if sub.head_hidden else []
            continue
        over.update({f"model.{key}.{k}": v for k, v in CONV.items()})
        if kind == "vlae":  # rung k enters before decoder block k and reads the mirrored encoder block
            over[f"model.{key}.blocks"] = max(CONV["blocks"], m.rungs)
        if getattr(sub, "hidden", ()):
            over[f"model.{key}.hidden"] = [16]
        if getattr(sub, "mechanism_hidden", ()):
            over[f"model.{key}.mechanism_hidden"] = [8]
    if kind == "factorvae":
        over["model.discriminator_hidden"] = [16, 16]
    if kind == "laddervae":  # the KL warm-up completes within the steps
        over.update({"model.rung_width": 16, "model.warmup_steps": STEPS // 2})
    if kind == "vlae":
        over["model.rung_hidden"] = [8] if m.rung_hidden else []
    if kind == "causalvae":  # the augmented Lagrangian updates its multipliers within the steps
        over.update({"model.mechanism_hidden": [8], "model.label_hidden": 8, "model.dag_update_every": 5})
    return over


def toy_overrides(path: str | Path) -> dict[str, Any]:
    """KEY.PATH -> value overrides that make the spec at `path` train 20 steps in about a second on one thread."""
    from causalrep.spec import load_spec

    raw = load_spec(path, check=False)
    resolution = 32 if raw.data.name == "pendulum" else 16  # the pendulum renders 32, 64 or 96
    t = raw.train
    over = {"data.resolution": resolution, "train.steps": STEPS, "train.batch_size": BATCH, "train.threads": 1,
            "train.precision": "fp32", "train.device": "cpu", "train.compile": False, "train.log_every": 1,
            "train.val_every": 10 ** 6, "train.checkpoint_every": 10 ** 6, "track.kind": "jsonl",
            "evaluate.val_samples": METRIC_N, "train.val_samples": METRIC_N, "evaluate.hybrid_latents": HYBRID_LATENTS,
            "evaluate.metrics": [m for m in raw.evaluate.metrics if m not in SKIPPED_METRICS]}
    if t.lr_warmup_steps:  # warm-up then the schedule's decay, both inside the 20 steps
        over["train.lr_warmup_steps"] = min(t.lr_warmup_steps, STEPS // 4)
    over.update(_net_overrides(raw))
    return over


# -- recording -----------------------------------------------------------------------------------------
class Recorder:
    """A Tracker that keeps every logged metric in memory: {context/name: [[step, value], ...]}."""

    def __init__(self):
        self.values: dict[str, list[list[float]]] = {}

    def log_params(self, params):
        pass

    def log_metric(self, name, value, *, step, context="train"):
        self.values.setdefault(f"{context}/{name}", []).append([int(step), _num(value)])

    def log_image(self, name, image, *, step, context="eval"):
        self.values.setdefault(f"{context}/image_sum/{name}", []).append([int(step), _num(image.double().sum())])

    def close(self):
        pass


def _num(v) -> float | str:
    """A float with full precision; non-finite values as strings (JSON has no NaN)."""
    v = float(v)
    return v if math.isfinite(v) else str(v)


def _plain(v):
    """Metric values (floats, nested lists of floats, strings, ints) as JSON values."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, str) or isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    return _num(v)


def summary(t: torch.Tensor) -> dict[str, Any]:
    """A tensor pinned by its sum, its sum of |.| and its first HEAD values (float64 sums of the fp32 values)."""
    t = t.detach().cpu().double()
    return {"shape": list(t.shape), "sum": _num(t.sum()), "abs_sum": _num(t.abs().sum()),
            "head": [_num(v) for v in t.flatten()[:HEAD]]}


@contextlib.contextmanager
def _one_thread():
    """Training on one torch thread (fixed thread count: fp32 CPU results are then bitwise repeatable); the
    caller's thread count is restored afterwards (pytest keeps running other tests in the same process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# -- one spec -------------------------------------------------------------------------------------------
def golden_values(path: str | Path) -> dict[str, Any]:
    """The golden quantities of the spec at `path` at toy size (the module docstring lists them)."""
    from causalrep.build import build_dataset, build_graph, build_model, build_split
    from causalrep.experiment import metric_options
    from causalrep.generate.sampling import sample_images
    from causalrep.metrics import METRICS
    from causalrep.spec import load_spec
    from causalrep.train import Trainer

    path = Path(path)
    spec = load_spec(path, [f"{k}={json.dumps(v)}" for k, v in toy_overrides(path).items()])
    out: dict[str, Any] = {}
    with _one_thread(), tempfile.TemporaryDirectory(prefix="golden_") as run_dir:
        _seed_all(spec.seed)
        dataset = build_dataset(spec)
        graph = build_graph(spec, dataset.true_graph)
        split = build_split(spec, dataset)
        model = build_model(spec, dataset, graph)  # seeds torch with spec.seed itself
        t, ev = spec.train, spec.evaluate
        recorder = Recorder()
        trainer = Trainer(model=model, dataset=dataset, split=split, run_dir=run_dir, tracker=recorder, steps=t.steps,
                          batch_size=t.batch_size, lr=t.lr, betas=t.betas, precision=t.precision, device=t.device,
                          checkpoint_every=t.checkpoint_every, log_every=t.log_every, val_every=t.val_every,
                          val_samples=t.val_samples, seed=spec.seed, progress=False,
                          channels_last=t.channels_last, compile=t.compile, resident=spec.data.resident,
                          trainable=t.trainable, lr_schedule=t.lr_schedule, lr_warmup_steps=t.lr_warmup_steps)
        trainer.fit()
        if model.can("hybrid"):
            trainer.store_hybrid_latents(spec.seed)
        out["train"] = recorder.values

        metrics: dict[str, Any] = {}
        for name in ev.metrics:
            fn = METRICS.get(name)
            metrics.update(fn(model=model, dataset=dataset, split=split, n=ev.val_samples, loss=t.loss,
                              device=trainer.device, **metric_options(fn, ev)))
        out["metrics"] = _plain(metrics)

        model.eval()
        with torch.no_grad():
            x = dataset.images_at(split.test[:N_IMAGES]).to(trainer.device)
            out["encode"] = summary(model.encode(x))
            if hasattr(model, "compete"):  # the ICM committee (004 Algorithm 1): winners, their outputs, scores
                winner, inverted, scores = model.compete(dataset.images_at(split.test[:COMMITTEE_IMAGES]))
                out["committee"] = {"winner": [int(w) for w in winner], "inverted": summary(inverted),
                                    "scores": summary(scores)}
            if model.can("reconstruct"):
                out["reconstruct"] = summary(model.reconstruct(x))
                gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731  (each method its own stream)
                samples = {"hybrid": summary(model.sample(N_IMAGES, "hybrid", gen()))}
                if "structured" in ev.sampling:
                    samples["structured"] = summary(sample_images(model, N_IMAGES, "structured", gen()))
                out["samples"] = samples
                if model.can("prior"):
                    out["prior_samples"] = {"prior": summary(model.sample(N_IMAGES, "prior", gen()))}
    return out


# -- the table --------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else ("-" if v is None else str(v))


SHOWN_METRICS = ("val_recon_error", "mig", "sap", "irs", "shd", "mic")


def table(values: dict[str, dict], seconds: dict[str, float]) -> str:
    rows = [("spec", "loss@1", "loss@10", "loss@20", "metrics", "encode.sum", "hybrid.sum", "prior.sum", "s")]
    for name, v in values.items():
        loss = v["train"].get("train/loss", [])
        at = {int(s): x for s, x in loss}
        m = v.get("metrics", {})
        shown = " ".join(f"{k}={_fmt(m[k])}" for k in SHOWN_METRICS if isinstance(m.get(k), float))
        rows.append((name, _fmt(at.get(1)), _fmt(at.get(10)), _fmt(at.get(20)), shown or "-",
                     _fmt(v.get("encode", {}).get("sum")), _fmt(v.get("samples", {}).get("hybrid", {}).get("sum")),
                     _fmt(v.get("prior_samples", {}).get("prior", {}).get("sum")), f"{seconds.get(name, 0):.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def dump(path: Path) -> int:
    """Compute every spec's values into `path` ({"machine": machine(), "specs": {name: {"values": ...} or
    {"error": traceback}}}), writing nothing else: what tests/test_golden.py runs in a subprocess at the pinned
    kernel level."""
    result: dict[str, dict] = {}
    for p in spec_paths():
        try:
            result[p.stem] = {"values": golden_values(p)}
        except Exception:  # reported per spec by the test that compares it
            result[p.stem] = {"error": traceback.format_exc()}
    path.write_text(json.dumps({"machine": machine(), "specs": result}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", action="append", default=[], help="only this spec (name or path; repeatable); the "
                                                                "others keep their stored values")
    ap.add_argument("--key", action="append", default=[], choices=KEYS,
                    help="replace only this key of each recomputed spec (repeatable)")
    ap.add_argument("--out", default=str(VALUES), help=f"the values file (default {VALUES.relative_to(ROOT)})")
    ap.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    ap.add_argument("--dump", type=Path, default=None, help="compute every spec into this JSON file (values or the "
                                                          "error per spec) and write nothing else: the test's call")
    args = ap.parse_args(argv)
    if args.dump is not None:
        return dump(args.dump)
    start = time.perf_counter()
    out = Path(args.out)
    stored = json.loads(out.read_text()) if out.is_file() else {}
    paths = spec_paths()
    if args.spec:
        by_name = {p.stem: p for p in paths}
        unknown = [s for s in args.spec if Path(s).stem not in by_name]
        if unknown:
            print(f"error: unknown spec(s) {', '.join(unknown)}; specs: {', '.join(by_name)}", file=sys.stderr)
            return 2
        paths = [by_name[Path(s).stem] for s in args.spec]
    if (args.key or args.spec) and not stored and not args.check:
        print(f"error: --spec/--key update {out}, which does not exist yet: run without them first", file=sys.stderr)
        return 2
    values: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    failed: list[str] = []
    for p in paths:
        t0 = time.perf_counter()
        try:
            values[p.stem] = golden_values(p)
        except Exception as exc:  # every spec must build and run: report each failure, then fail
            failed.append(p.stem)
            traceback.print_exc()
            print(f"error: spec {p.stem} ({p}) failed to build or run: {type(exc).__name__}: {exc}", file=sys.stderr)
        seconds[p.stem] = time.perf_counter() - t0
    print(table(values, seconds))
    if failed:
        print(f"error: {len(failed)} spec(s) failed to build or run: {', '.join(failed)}; nothing written",
              file=sys.stderr)
        return 1
    if args.check:
        diff = [n for n, v in values.items() if stored.get(n) is None or
                any(stored[n].get(k) != v.get(k) for k in (args.key or KEYS))]
        print(json.dumps({"specs": len(values), "seconds": round(time.perf_counter() - start, 1), "differ": diff}))
        return 1 if diff else 0
    merged = dict(stored) if (args.spec or args.key) else {}
    for name, v in values.items():
        if args.key:
            entry = dict(merged.get(name, {}))
            for k in args.key:
                if k in v:
                    entry[k] = v[k]
                else:
                    entry.pop(k, None)
            merged[name] = entry
        else:
            merged[name] = v
    merged = {n: merged[n] for n in sorted(merged) if (SPECS_DIR / f"{n}.yaml").is_file()}  # drop removed specs
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=1, sort_keys=False) + "\n")
    if out == VALUES:
        MACHINE.write_text(json.dumps(machine(), indent=1) + "\n")
    print(json.dumps({"specs": len(values), "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    if not pinned(os.environ):  # torch read the kernel level at import: run this script again with it pinned
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]],
                  {**os.environ, **KERNEL_ENV})
    sys.exit(main())
