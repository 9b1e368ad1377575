"""Benchmark one ICM committee training step (004 Algorithm 1, specs/icm_digits.yaml's model) in float32 against
bfloat16 autocast, on the machine's CPU or GPU.

    python tools/bench_icm.py [--spec specs/icm_digits.yaml] [--threads 2] [--steps 8] [--device auto]

Each precision gets the same freshly built committee (same seed), a fixed transformed batch and canonical batch
of the spec's batch size, the trainer's two optimisers (experts; discriminator) and channels_last; the first step
of each precision is a warm-up. Prints a table of the median seconds per step and, last, one JSON line:
{"device", "threads", "fp32_s_per_step", "bf16_s_per_step", "bf16_speedup"}. On CPUs without native bfloat16
(no AVX512-BF16 / AMX) bf16 autocast is emulated and slower: that is what the ratio is for.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from causalrep.build import build_model  # noqa: E402
from causalrep.spec.load import load_spec  # noqa: E402
from causalrep.train.trainer import describe_device, resolve_device  # noqa: E402


def step_times(spec, device: torch.device, precision: str, steps: int) -> list[float]:
    torch.manual_seed(spec.seed)
    model = build_model(spec, dataset=types.SimpleNamespace(channels=1, true_graph=None)).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    d_params = model.aux_parameter_groups()["discriminator"]  # the trainer's two groups
    d_ids = {id(p) for p in d_params}
    main = [p for p in model.parameters() if id(p) not in d_ids]
    opt, d_opt = torch.optim.Adam(main), torch.optim.Adam(d_params)
    r, b = spec.data.resolution, spec.train.batch_size
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(b, 1, r, r, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    canonical = torch.rand(b, 1, r, r, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x, canonical=canonical)
        opt.zero_grad(set_to_none=True)
        d_opt.zero_grad(set_to_none=True)
        out.loss.backward(inputs=main, retain_graph=True)  # as the trainer: each loss updates its own group
        out.aux["discriminator"].backward(inputs=d_params)
        opt.step()
        d_opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "specs" / "icm_digits.yaml"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_spec(args.spec)
    device = resolve_device(args.device)
    med = {}
    print(f"ICM step ({spec.graph.experts} experts, batch {spec.train.batch_size}, {spec.data.resolution}px) on "
          f"{describe_device(device)}, {args.steps} timed steps each")
    print(f"{'precision':>10} {'median s/step':>14} {'min':>8} {'max':>8}")
    for precision in ("fp32", "bf16"):
        t = step_times(spec, device, precision, args.steps)
        med[precision] = statistics.median(t)
        print(f"{precision:>10} {med[precision]:14.3f} {min(t):8.3f} {max(t):8.3f}")
    print(json.dumps({"device": describe_device(device), "threads": args.threads,
                      "fp32_s_per_step": round(med["fp32"], 4), "bf16_s_per_step": round(med["bf16"], 4),
                      "bf16_speedup": round(med["fp32"] / med["bf16"], 3)}))


if __name__ == "__main__":
    main()
