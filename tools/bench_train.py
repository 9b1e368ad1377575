"""Benchmark SAE-12 training steps/s: naive eager vs the Trainer's channels_last/no-sync/compile/bf16 and CUDA graphs."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from causalrep.build import build_model  # noqa: E402
from causalrep.data.base import DATASETS, Split  # noqa: E402
from causalrep.spec.load import load_spec  # noqa: E402
from causalrep.train.trainer import Trainer, describe_device  # noqa: E402

# Loss tolerance (max relative difference of the per-step training losses vs naive over the check steps).
# fp32: channels_last / inductor only reorder float32 sums (conv reductions of <= 64*25 terms, GroupNorm
# over 64*R*R values); that gives ~1e-6 relative on the step-1 loss, and a few Adam steps (lr 5e-4, update
# ~ g/sqrt(v), which amplifies differences only on near-zero gradients) keep the loss within ~1e-4; 1e-3
# leaves 10x headroom while a wrong layout/graph (a real bug) shows up as >= 1e-2.
# bf16: 8-bit mantissa (eps 2^-8 = 3.9e-3) on every conv/linear input; the loss moves by ~1e-3..1e-2, so 3e-2.
TOL = {"fp32": 1e-3, "bf16": 3e-2}
CPU_VARIANTS = {"naive": None, "nosync": {}, "channels_last": {"channels_last": True},
                "compile": {"compile": True}, "compile+channels_last": {"compile": True, "channels_last": True}}
# "+graph": the whole Trainer step captured in one CUDA graph (GraphedStep); not a Trainer option, so
# tools/gpu_check.py trains with the best variant without it
CUDA_VARIANTS = {**CPU_VARIANTS, "bf16": {"precision": "bf16"},
                 "bf16+channels_last": {"precision": "bf16", "channels_last": True},
                 "bf16+compile+channels_last": {"precision": "bf16", "compile": True, "channels_last": True},
                 "bf16+channels_last+graph": {"precision": "bf16", "channels_last": True, "cuda_graph": True},
                 "bf16+compile+channels_last+graph": {"precision": "bf16", "compile": True, "channels_last": True,
                                                      "cuda_graph": True}}
# eager steps before the capture (torch.cuda.graph's docs warm up a few iterations on a side stream so
# cuDNN/cuBLAS workspaces, the optimiser state and, with compile, the compiled code exist before capture)
GRAPH_WARMUP = 3


class NullTracker:
    def log_params(self, params): pass
    def log_metric(self, name, value, *, step, context="train"): pass
    def log_image(self, name, image, *, step, context="eval"): pass
    def close(self): pass


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GraphedStep:
    """The Trainer's whole step (forward, backward, fused Adam) captured once in a CUDA graph and replayed on
    a static input: one graph launch per step instead of the few hundred small kernel launches that bound
    SAE-12 at batch 128 (torch.cuda.graph's whole-network capture). Calls 1..GRAPH_WARMUP run eagerly."""

    def __init__(self, trainer: Trainer, example: torch.Tensor):
        # torch.optim refuses to step inside a capture unless every param group is capturable (its state then
        # lives on the device, as fused Adam's does anyway); set before the first step creates that state
        for opt in (trainer.optimizer, *trainer.aux_optimizers.values()):
            for group in opt.param_groups:
                group["capturable"] = True
        self.trainer = trainer
        self.static_x = example.clone()  # same shape and memory format as every batch
        self.side = torch.cuda.Stream(example.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_loss: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.graph is None and self.calls <= GRAPH_WARMUP:
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                loss = self.trainer.train_step(x).loss.detach()
            torch.cuda.current_stream().wait_stream(self.side)
            return loss
        if self.graph is None:  # capture records the step's kernels without running them
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_loss = self.trainer.train_step(self.static_x).loss.detach()
        self.static_x.copy_(x)
        self.graph.replay()
        return self.static_loss.clone()  # the next replay overwrites static_loss


class Runner:
    """One variant: its own model (same seed => same init) and a step function on a fixed batch pool."""

    def __init__(self, name, opts, spec, device, batches, run_dir):
        self.name, self.opts, self.device = name, opts, device
        graphed = bool(opts and opts.get("cuda_graph"))
        model = build_model(spec, dataset=types.SimpleNamespace(channels=3, true_graph=None))  # seeds init
        t = spec.train
        if opts is None:  # the naive habit: eager, fp32, NCHW, default (for-each) Adam, .item() every step
            self.model = model.to(device)
            self.opt = torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=tuple(t.betas))
            self.step = self._naive_step
            self.precision, fmt = "fp32", torch.contiguous_format
        else:
            opts = {k: v for k, v in {"precision": "fp32", **opts}.items() if k != "cuda_graph"}
            self.trainer = Trainer(model=model, dataset=types.SimpleNamespace(channels=3), split=Split(8, (1.0, 0.0), 0),
                                   run_dir=run_dir, tracker=NullTracker(), steps=1, batch_size=t.batch_size, lr=t.lr,
                                   betas=tuple(t.betas), device=device.type, progress=False, resident="never",
                                   **opts)
            self.step = lambda x: self.trainer.train_step(x).loss.detach()
            self.precision, fmt = opts["precision"], self.trainer.memory_format
        # the layout change is the Trainer's next_batch work; done once here so only the step is timed
        self.batches = [b.contiguous(memory_format=fmt) for b in batches]
        if graphed:
            self.step = GraphedStep(self.trainer, self.batches[0])
        self.losses: list[torch.Tensor] = []
        self.first_step_s = 0.0
        self.rates: list[float] = []

    def _naive_step(self, x):
        self.opt.zero_grad()
        loss = self.model(x).loss
        loss.backward()
        self.opt.step()
        loss.item()  # per-step host sync
        return loss.detach()

    def check(self, n: int) -> None:
        """The first n steps on batches 0..n-1 (losses kept for the equivalence check; warm-up + compile)."""
        for i in range(n):
            sync(self.device)
            t0 = time.perf_counter()
            self.losses.append(self.step(self.batches[i % len(self.batches)]).float())
            sync(self.device)
            if i == 0:
                self.first_step_s = time.perf_counter() - t0

    def time(self, steps: int, warmup: int) -> None:
        for i in range(warmup):  # re-warm caches after the other variants ran
            self.step(self.batches[i % len(self.batches)])
        sync(self.device)
        t0 = time.perf_counter()
        for i in range(steps):
            self.step(self.batches[i % len(self.batches)])
        sync(self.device)
        self.rates.append(steps / (time.perf_counter() - t0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__ + " Inputs are random uniform (B, 3, R, R) batches already "
                                 "on the device (3 channels, as 3D-Shapes), so data loading is not timed.")
    ap.add_argument("--spec", default=str(ROOT / "specs" / "sae12.yaml"), help="model spec (default: specs/sae12.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="spec override, repeatable (after the defaults: resolution 32, batch 32 unless --paper)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train (default cpu)")
    ap.add_argument("--paper", action="store_true", help="paper configuration: 64x64, batch 128 (meant for --device cuda)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default: 8 on cpu, 50 on cuda)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="round-robin repeats over the variants; steps/s is the median (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before each timed repeat (default 1)")
    ap.add_argument("--check-steps", type=int, default=4,
                    help="steps from the same init and batches whose losses are compared to naive; they also "
                         "serve as the initial warm-up and include compilation (default 4)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on cpu (default 2)")
    ap.add_argument("--variants", default=None, help="comma-separated subset of variants (naive is always run)")
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda was asked for but torch sees no CUDA device (torch "
                 f"{torch.__version__}, cuda build {torch.version.cuda}); run with --device cpu")
    if args.paper and args.device == "cpu":
        print("warning: --paper on cpu is the 64x64 batch-128 configuration and will be very slow", file=sys.stderr)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    steps = args.steps or (50 if cuda else 8)
    repeats = args.repeats or 5

    defaults = [] if args.paper else ["data.resolution=32", "train.batch_size=32"]
    overrides = defaults + args.overrides
    spec = load_spec(args.spec, overrides, check=False)
    notes = []
    if spec.data.name not in DATASETS:  # the data are never read: only the name must pass validation
        notes.append(f"data.name {spec.data.name!r} is not registered; validated as dsprites (data unused)")
        overrides.append("data.name=dsprites")
    spec = load_spec(args.spec, overrides)
    B, R = spec.train.batch_size, spec.data.resolution

    variants = CUDA_VARIANTS if cuda else CPU_VARIANTS
    if args.variants:
        keep = {"naive", *args.variants.split(",")}
        unknown = keep - set(variants)
        if unknown:
            ap.error(f"unknown variants {sorted(unknown)}; valid on {device.type}: {', '.join(variants)}")
        variants = {k: v for k, v in variants.items() if k in keep}

    gen = torch.Generator().manual_seed(1234)
    pool = max(args.check_steps, 4)
    batches = [torch.rand(B, 3, R, R, generator=gen).to(device) for _ in range(pool)]
    print(f"# {spec.name}: batch {B}, {R}x{R}, 3 channels (random uniform batches pre-placed on {device.type}; "
          f"data loading not timed); {describe_device(device)}; torch {torch.__version__}")
    for n in notes:
        print(f"# note: {n}")
    print(f"# {steps} timed steps x {repeats} round-robin repeats per variant; {args.check_steps} check steps first",
          flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        runners, failed = [], {}
        for name, opts in variants.items():
            t0 = time.perf_counter()
            try:
                r = Runner(name, opts, spec, device, batches, Path(tmp) / name)
                r.check(args.check_steps)
            except Exception as exc:  # an optional fast path (compile, CUDA graphs) may not work here: report it
                if opts is None:
                    raise  # nothing to compare against without the naive loop
                failed[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                print(f"#   {name}: FAILED ({failed[name]})", flush=True)
                continue
            runners.append(r)
            print(f"#   {name}: {args.check_steps} check steps in {time.perf_counter() - t0:.1f}s "
                  f"(first step {r.first_step_s:.1f}s)", flush=True)
        for rep in range(repeats):
            order = runners if rep % 2 == 0 else runners[::-1]  # alternate order against drift
            for r in order:
                r.time(steps, args.warmup)
            print(f"#   repeat {rep + 1}/{repeats}: " + ", ".join(f"{r.name} {r.rates[-1]:.3g}" for r in runners),
                  flush=True)

    naive = runners[0]
    ref = torch.stack(naive.losses).cpu()
    rows, best, record = [], (None, 0.0), {}
    naive_rate = statistics.median(naive.rates)
    for r in runners:
        rate = statistics.median(r.rates)
        note = []
        ok = True
        if r is not naive:
            got = torch.stack(r.losses).cpu()
            rel = ((got - ref).abs() / ref.abs()).max().item()
            rel1 = ((got[0] - ref[0]).abs() / ref[0].abs()).item()
            tol = TOL[r.precision]
            ok = rel <= tol
            note.append(f"loss rel diff step1 {rel1:.1e}, max over {len(ref)} steps {rel:.1e} "
                        f"({'equivalent' if ok else 'NOT equivalent'}, tol {tol:g})")
        else:
            note.append("eager fp32 NCHW, for-each Adam, .item() per step")
        if r.opts is not None and r.opts.get("compile"):
            note.append(f"compile {max(r.first_step_s - 1 / rate, 0):.1f}s (excluded)")
        if cuda and r.opts is not None:
            note.append("fused Adam")
        if r.opts is not None and r.opts.get("cuda_graph"):
            note.append(f"CUDA graph after {GRAPH_WARMUP} eager steps")
        if ok and rate > best[1]:
            best = (r.name, rate)
        rows.append((r.name, rate, rate / naive_rate, "; ".join(note)))
        record[r.name] = {"steps_per_s": round(rate, 4), "ratio": round(rate / naive_rate, 3), "equivalent": ok,
                          "first_step_s": round(r.first_step_s, 2), "options": r.opts}
    for name, why in failed.items():
        rows.append((name, float("nan"), float("nan"), f"FAILED: {why}"))
        record[name] = {"failed": why, "options": variants[name]}

    w = max(len(r[0]) for r in rows)
    print(f"\n{'variant':<{w}} | steps/s | ratio | notes")
    print(f"{'-' * w}-|---------|-------|------")
    for name, rate, ratio, note in rows:
        print(f"{name:<{w}} | {rate:7.3f} | {ratio:5.2f} | {note}")
    print(json.dumps({"naive_steps_per_s": round(naive_rate, 4), "best_steps_per_s": round(best[1], 4),
                      "best_variant": best[0], "ratio": round(best[1] / naive_rate, 3),
                      "device": describe_device(device), "batch_size": B, "resolution": R, "torch": torch.__version__,
                      "variants": record}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
