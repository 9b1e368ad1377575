"""Contact sheets: one PNG per dataset, a row per factor varied across its range (docs/img/<name>_factors.png)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from causalrep.data import DATASETS  # noqa: E402

COLUMNS = 10


def sheet(dataset, columns: int = COLUMNS) -> torch.Tensor:
    """(K * columns, C, H, W): row k sweeps factor k over `columns` evenly spaced values, others at mid-range."""
    base = np.array([s // 2 for s in dataset.factor_sizes])
    rows = []
    for k, size in enumerate(dataset.factor_sizes):
        f = np.repeat(base[None], columns, axis=0)
        f[:, k] = np.round(np.linspace(0, size - 1, columns)).astype(int)
        rows.append(dataset.images(f))
    x = torch.cat(rows)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="docs/img")
    p.add_argument("--datasets", default="dsprites,shapes3d,pendulum,digits")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name in args.datasets.split(","):
        ds = DATASETS.get(name)(resolution=64)
        path = Path(args.out) / f"{name}_factors.png"
        save_image(sheet(ds), path, nrow=COLUMNS, padding=2, pad_value=0.5)
        sizes = " x ".join(f"{n} {s}" for n, s in zip(ds.factor_names, ds.factor_sizes))
        print(f"{path}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
