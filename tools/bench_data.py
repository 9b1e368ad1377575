"""Data throughput: 3D-Shapes rendering (geometry ray-cast + recolouring), batch fetch per step, device residency."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causalrep.data import DATASETS  # noqa: E402
from causalrep.data import shapes3d as s3d  # noqa: E402


def rate(fn, items: int, repeats: int) -> float:
    """Items per second, median over repeats (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return items / float(np.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(2) if args.device == "cpu" else None
    dev = torch.device(args.device)
    rng = np.random.default_rng(0)
    rows = []

    # 1) geometry: the 480 (scale, shape, orientation) ray casts, timed once (the cache build)
    t0 = time.perf_counter()
    s3d.build_geometry(progress=False)
    geo_s = time.perf_counter() - t0
    rows.append(("shapes3d geometry ray-cast (480 geometries, once)", f"{geo_s:.2f} s", ""))

    with tempfile.TemporaryDirectory() as tmp:
        ds = DATASETS.get("shapes3d")(resolution=64, cache_dir=tmp)
        ds.images(ds.sample_factors(4, rng))  # builds and caches the geometry
        # 2) rendering = colouring cached geometry: what every image costs after the one-off cast
        chunk = ds.sample_factors(4096, rng)
        render = rate(lambda: ds.images(chunk), 4096, args.repeats)
        full_s = geo_s + 480_000 / render
        rows.append(("shapes3d render, chunks of 4096", f"{render:,.0f} img/s", f"full 480k set: {full_s:.0f} s"))
        # 3) per-step batch fetch from the cache (sample indices -> images on the device)
        train = np.arange(len(ds))

        def fetch():
            idx = train[rng.integers(0, len(train), args.batch)]
            return ds.images_at(idx).to(dev)

        fetch_rate = rate(fetch, 1, args.repeats * 4)
        rows.append((f"batch {args.batch} from the geometry cache", f"{fetch_rate:,.1f} batch/s", ""))
        # 4) device-resident uint8 data (a 50k-image slice standing in for the training split)
        n = 50_000
        resident = torch.empty((n, 3, 64, 64), dtype=torch.uint8, device=dev)
        for s in range(0, n, 4096):
            e = min(s + 4096, n)
            resident[s:e] = (ds.images_at(train[s:e]).to(dev) * 255).round().to(torch.uint8)
        gen = torch.Generator(device="cpu").manual_seed(0)

        def fetch_resident():
            pick = torch.randint(0, n, (args.batch,), generator=gen).to(dev)
            x = resident[pick].float().div_(255)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return x

        res_rate = rate(fetch_resident, 1, args.repeats * 20)
        rows.append((f"batch {args.batch} from device-resident uint8", f"{res_rate:,.1f} batch/s",
                     f"{res_rate / fetch_rate:.1f}x the cache fetch"))

    device = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    w = max(len(r[0]) for r in rows)
    print(f"{'what':<{w}} | rate | note\n{'-' * w}-|------|-----")
    for r in rows:
        print(f"{r[0]:<{w}} | {r[1]} | {r[2]}")
    print(json.dumps({"shapes3d_render_img_per_s": round(render, 1), "shapes3d_geometry_s": round(geo_s, 2),
                      "shapes3d_full_set_s": round(full_s, 1), "batch_fetch_cache_per_s": round(fetch_rate, 2),
                      "batch_fetch_resident_per_s": round(res_rate, 2), "batch_size": args.batch, "device": device}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
