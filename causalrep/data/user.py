"""Your own data: a folder of images with a CSV of factors (`folder`), or images and factors in an HDF5 file (`hdf5`).

Such a dataset is a list of N images, each with its factor values (continuous, discrete or, in a CSV, named
categories), not the full factor grid of the procedural datasets. The metrics need integer factor indices, so each
factor is made discrete once, when the dataset is read (`discretise`): a factor with at most `data.factor_bins`
distinct values keeps each value as its own index; a continuous one gets disentanglement_lib's equal-width
histogram (data.discretize.histogram_bins, 20 bins by default) and its index is the rank of its bin among the
bins that hold a row (empty bins get no index, so every index of a factor occurs in the data).

How the ground-truth interface maps onto rows (GroundTruthDataset, disentanglement_lib's):
- flat index = row; `index_to_factors(rows)` = the rows' factor indices; `images_at(rows)` = the rows' images;
- `sample_factors(n, rng)` draws n rows uniformly (with replacement) and returns their factor indices, so MIG,
  DCI, SAP, ModExp and IRS see the data's own joint distribution of factors;
- `images(factors)` returns, for each factor-index tuple, the image of a row with exactly those indices; when
  several rows share them, consecutive requests for the same tuple in one call take those rows in turn (rows in
  file order), so the result is deterministic; a tuple that no row has is an error;
- `fix_factor` (the BetaVAE, FactorVAE and fairness scores fix one factor and vary the others): a row whose
  fixed factor already has the value is kept, any other is replaced by a row drawn uniformly among the rows whose
  factor has that index, i.e. the other factors follow the data's distribution given the fixed one;
- `labels(factors)`: each factor's value (a binned factor: the centre of its bin; a category: its index);
- `true_graph`: None (not known), so the `shd` metric and `graph: {kind: dag, from_dataset: true}` are refused.
Images are read once, on first use, resized to data.resolution x data.resolution (torchvision, bilinear with
antialiasing; the aspect ratio is not kept) and held in memory as uint8: N x channels x resolution^2 bytes.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .base import DATASETS, GroundTruthDataset
from .discretize import NUM_BINS, histogram_bins

CHUNK = 1024  # images read and resized per step
GRAY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I;16N")  # PIL modes read as one channel
FILE_COLUMN = "file"  # the CSV column naming each row's image file


def discretise(columns: Sequence[np.ndarray], names: Sequence[str], bins: int, where: str
               ) -> tuple[np.ndarray, list[dict], list[np.ndarray]]:
    """Factor columns (each (N,): float64, or str for categories) -> ((N, K) int64 indices, one report dict per
    factor, and per factor the value each index stands for). See the module docstring for the rule."""
    codes, table, values = [], [], []
    for name, col in zip(names, columns):
        uniq, inverse = np.unique(col, return_inverse=True)
        if len(uniq) < 2:
            raise DataError(f"{where}: factor {name!r} takes one value ({uniq[0]}) in every row: it varies nothing")
        if col.dtype.kind in "US":
            codes.append(inverse)
            values.append(np.arange(len(uniq), dtype=np.float64))
            table.append({"factor": name, "kind": "categorical", "distinct": len(uniq), "size": len(uniq),
                          "values": [str(u) for u in uniq]})
        elif len(uniq) <= bins:
            codes.append(inverse)
            values.append(uniq.astype(np.float64))
            table.append({"factor": name, "kind": "discrete", "distinct": len(uniq), "size": len(uniq),
                          "values": [float(u) for u in uniq]})
        else:
            labels, edges = histogram_bins(col, bins)  # 1..bins
            occupied = np.unique(labels)
            codes.append(np.searchsorted(occupied, labels))
            values.append((edges[occupied - 1] + edges[occupied]) / 2)  # bin centres
            table.append({"factor": name, "kind": "binned", "distinct": len(uniq), "size": len(occupied),
                          "bins": bins, "edges": [float(e) for e in edges],
                          "empty_bins": [int(b) for b in np.setdiff1d(np.arange(1, bins + 1), occupied) - 1]})
    return np.stack(codes, axis=1).astype(np.int64), table, values


def to_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """(n, C, H, W) float in [0, 1] -> (n, C, R, R) uint8: bilinear with antialiasing, then rounded."""
    if x.shape[-2:] != (resolution, resolution):
        x = TF.resize(x, [resolution, resolution], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    return x.mul(255).round_().clamp_(0, 255).to(torch.uint8)


class RowDataset(GroundTruthDataset):
    """N images with factor values (not a grid); subclasses read them and implement `_read(rows)`."""

    factor_bins_default = NUM_BINS
    unavailable_metrics = {"shd": "your own data has no known true graph to compare a learned graph with",
                           "icm": "the ICM committee's metric needs the icm_digits dataset"}
    # spec_keys: the DataSpec keys each subclass reads (build.validate_spec: each must be set, no other file key
    # may be); path_keys: those holding file paths (relative ones: from the spec file's folder, build.resolve_paths)

    def __init__(self, *, columns: Sequence[np.ndarray], names: Sequence[str], resolution: int, factor_bins: int,
                 channels: int, where: str):
        if not isinstance(factor_bins, int) or factor_bins < 2:
            raise DataError(f"{where}: data.factor_bins must be an int >= 2, got {factor_bins!r}")
        self.where = where
        self.resolution = int(resolution)
        self.channels = channels
        self.factor_names = tuple(names)
        self.codes, self._table, self._values = discretise(columns, names, factor_bins, where)
        self.factor_sizes = tuple(int(c.max()) + 1 for c in self.codes.T)
        self.factor_value_names = {t["factor"]: tuple(t["values"]) for t in self._table if t["kind"] == "categorical"}
        # rows grouped by their factor-index tuple: cell c's rows are _order[_starts[c]:_starts[c + 1]], file order
        cells, cell_of_row = np.unique(self.codes, axis=0, return_inverse=True)
        cell_of_row = cell_of_row.reshape(-1)
        self._cell = {tuple(int(v) for v in row): c for c, row in enumerate(cells)}
        self._order = np.argsort(cell_of_row, kind="stable")
        self._starts = np.concatenate([[0], np.cumsum(np.bincount(cell_of_row, minlength=len(cells)))])
        self._rows_with = [[np.flatnonzero(col == v) for v in range(size)]
                           for col, size in zip(self.codes.T, self.factor_sizes)]
        self._pixels: torch.Tensor | None = None

    @classmethod
    def from_spec(cls, data) -> "RowDataset":
        """The dataset of a DataSpec (`data:`); build.build_dataset's one call."""
        raise NotImplementedError

    # -- the ground-truth interface over rows ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.codes)

    @property
    def true_graph(self) -> None:
        return None

    def factor_table(self) -> list[dict]:
        return [dict(t) for t in self._table]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, K) factor indices of n rows drawn uniformly with replacement."""
        return self.codes[rng.integers(0, len(self), size=n)]

    def _check_rows(self, index) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        bad = (index < 0) | (index >= len(self))
        if bad.any():
            raise DataError(f"{self.where}: row {int(index[bad][0])} out of range; the data has {len(self)} rows")
        return index

    def index_to_factors(self, index: np.ndarray) -> np.ndarray:
        return self.codes[self._check_rows(index)]

    def _cells(self, factors: np.ndarray) -> np.ndarray:
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise DataError(f"{self.where}: factors must have shape (N, {self.num_factors}); got {factors.shape}")
        out = np.empty(len(factors), dtype=np.int64)
        for i, row in enumerate(factors.tolist()):
            c = self._cell.get(tuple(row))
            if c is None:
                raise DataError(f"{self.where}: no row has the factor indices {tuple(row)} "
                                f"({', '.join(self.factor_names)}); the data is not a full grid")
            out[i] = c
        return out

    def factors_to_index(self, factors: np.ndarray) -> np.ndarray:
        """The first row (in file order) with each factor-index tuple."""
        return self._order[self._starts[self._cells(factors)]]

    def rows_for(self, factors: np.ndarray) -> np.ndarray:
        """A row for each tuple; the k-th request for one tuple in a call takes its rows in turn (file order)."""
        cells = self._cells(factors)
        order = np.argsort(cells, kind="stable")
        sorted_cells = cells[order]
        first = np.searchsorted(sorted_cells, sorted_cells, side="left")
        nth = np.empty(len(cells), dtype=np.int64)
        nth[order] = np.arange(len(cells)) - first  # occurrence number of each request among equal tuples
        count = self._starts[cells + 1] - self._starts[cells]
        return self._order[self._starts[cells] + nth % count]

    def images(self, factors: np.ndarray) -> torch.Tensor:
        return self.images_at(self.rows_for(factors))

    def images_at(self, index: np.ndarray) -> torch.Tensor:
        """(N, channels, resolution, resolution) float32 in [0, 1] of the given rows."""
        rows = torch.as_tensor(self._check_rows(index))
        return self.pixels()[rows].float().div_(255)

    def fix_factor(self, factors: np.ndarray, which: np.ndarray, values: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
        out = np.array(factors, dtype=np.int64, copy=True)
        which = np.broadcast_to(np.asarray(which, dtype=np.int64), (len(out),))
        values = np.broadcast_to(np.asarray(values, dtype=np.int64), (len(out),))
        for i in np.flatnonzero(out[np.arange(len(out)), which] != values):
            k, v = int(which[i]), int(values[i])
            if not 0 <= v < self.factor_sizes[k]:
                raise DataError(f"{self.where}: factor {self.factor_names[k]!r} has indices "
                                f"0..{self.factor_sizes[k] - 1}, got {v}")
            rows = self._rows_with[k][v]
            out[i] = self.codes[rows[rng.integers(len(rows))]]
        return out

    def labels(self, factors: np.ndarray) -> np.ndarray:
        """(N, K) float64 factor values: a binned factor's bin centre, a discrete value itself, a category's index."""
        factors = np.asarray(factors, dtype=np.int64)
        return np.stack([self._values[k][factors[:, k]] for k in range(self.num_factors)], axis=1)

    # -- pixels ----------------------------------------------------------------------------------------------
    def pixels(self) -> torch.Tensor:
        """Every image at data.resolution, (N, channels, R, R) uint8, read on first use."""
        if self._pixels is None:
            out = torch.empty((len(self), self.channels, self.resolution, self.resolution), dtype=torch.uint8)
            for s in range(0, len(self), CHUNK):
                out[s:s + CHUNK] = self._read(np.arange(s, min(s + CHUNK, len(self))))
            self._pixels = out
        return self._pixels

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        """(n, channels, R, R) uint8 images of consecutive rows."""
        raise NotImplementedError


# -- a folder of images + a CSV of factors ------------------------------------------------------------------
def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@DATASETS.register("folder")
class ImageFolder(RowDataset):
    """Image files (PNG, JPEG, ... anything PIL reads) listed in a CSV: a header with a column `file` (the image's
    path, relative to the image folder) and one column per factor, then one line per image."""

    spec_keys = {"images": "the folder holding the image files", "factors": "the CSV file of factor values"}
    path_keys = ("images", "factors")

    def __init__(self, *, images: str, factors: str, resolution: int = 64, factor_bins: int = NUM_BINS):
        self.folder, self.csv = Path(images).expanduser(), Path(factors).expanduser()
        if not self.folder.is_dir():
            raise DataError(f"data.images: folder not found: {self.folder}")
        if not self.csv.is_file():
            raise DataError(f"data.factors: CSV file not found: {self.csv}")
        names, files, lines, columns = self._read_csv()
        self.files = files
        modes = []
        for f, line in zip(files, lines):
            try:
                with Image.open(f) as im:
                    modes.append(im.mode)
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{self.csv}, line {line}: {f}: not an image file PIL can read ({exc})") from None
        channels = 1 if all(m in GRAY_MODES for m in modes) else 3
        super().__init__(columns=columns, names=names, resolution=resolution, factor_bins=factor_bins,
                         channels=channels, where=str(self.csv))

    @classmethod
    def from_spec(cls, data) -> "ImageFolder":
        return cls(images=data.images, factors=data.factors, resolution=data.resolution, factor_bins=data.factor_bins)

    def _read_csv(self) -> tuple[list[str], list[Path], list[int], list[np.ndarray]]:
        """(factor names, image paths, CSV line of each row, factor columns) with every check on the way."""
        where = str(self.csv)
        try:
            with open(self.csv, newline="", encoding="utf-8-sig") as fh:
                rows = [(line, r) for line, r in enumerate(csv.reader(fh), start=1) if any(c.strip() for c in r)]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{where}: not a readable CSV file ({exc})") from None
        if not rows:
            raise DataError(f"{where}: empty; expected a header: {FILE_COLUMN}, then one column per factor")
        header = [h.strip() for h in rows[0][1]]
        if FILE_COLUMN not in header:
            raise DataError(f"{where}, line 1: no column {FILE_COLUMN!r} naming the image files; header: "
                            f"{', '.join(header)}")
        for i, h in enumerate(header):
            if not h:
                raise DataError(f"{where}, line 1: column {i + 1} has no name")
            if header.count(h) > 1:
                raise DataError(f"{where}, line 1: column name {h!r} appears {header.count(h)} times")
        fcol = header.index(FILE_COLUMN)
        names = [h for i, h in enumerate(header) if i != fcol]
        if not names:
            raise DataError(f"{where}, line 1: no factor columns beside {FILE_COLUMN!r}")
        body = rows[1:]
        if not body:
            raise DataError(f"{where}: a header but no rows")
        files, lines, cells = [], [], []
        for line, r in body:
            if len(r) != len(header):
                raise DataError(f"{where}, line {line}: {len(r)} fields; the header has {len(header)} "
                                f"({', '.join(header)})")
            name = r[fcol].strip()
            path = self.folder / name
            if not name or not path.is_file():
                raise DataError(f"{where}, line {line}: image file not found: {path}")
            files.append(path)
            lines.append(line)
            cells.append([c.strip() for i, c in enumerate(r) if i != fcol])
        columns = []
        for k, name in enumerate(names):
            texts = [c[k] for c in cells]
            nums = [_number(t) for t in texts]
            numeric = [v is not None for v in nums]
            for t, v, line in zip(texts, nums, lines):
                if not t:
                    raise DataError(f"{where}, line {line}, column {name!r}: empty value")
                if v is not None and not math.isfinite(v):
                    raise DataError(f"{where}, line {line}, column {name!r}: {t} is not a finite number")
            if all(numeric):
                columns.append(np.array(nums, dtype=np.float64))
            elif any(numeric):  # a number among categories, or a typo among numbers
                odd = numeric.index(False) if sum(numeric) > len(numeric) / 2 else numeric.index(True)
                raise DataError(f"{where}, line {lines[odd]}, column {name!r}: {texts[odd]!r} mixes numbers and "
                                f"names in one factor column")
            else:
                columns.append(np.array(texts, dtype=str))
        return names, files, lines, columns

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        out = []
        for r in rows:
            with Image.open(self.files[r]) as im:
                if im.mode.startswith("I;16"):  # 16-bit grey: scale to [0, 1] before PIL would clip it to 8 bits
                    a = np.asarray(im, dtype=np.float32) / 65535.0
                else:
                    a = np.asarray(im.convert("L" if self.channels == 1 else "RGB"), dtype=np.float32) / 255.0
            x = torch.from_numpy(np.ascontiguousarray(a))
            x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)  # (C, H, W)
            if self.channels == 3 and x.shape[0] == 1:
                x = x.expand(3, -1, -1)
            out.append(to_resolution(x[None], self.resolution)[0])
        return torch.stack(out)


# -- images and factors in an HDF5 file ---------------------------------------------------------------------
def _open_h5(path: Path, where: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{where}: not a readable HDF5 file ({exc})") from None


def _h5_dataset(f: h5py.File, key: str, what: str, path: Path) -> h5py.Dataset:
    obj = f.get(key)
    if not isinstance(obj, h5py.Dataset):
        have = []
        f.visititems(lambda name, o: have.append(name) if isinstance(o, h5py.Dataset) else None)
        raise DataError(f"{path}: no dataset {key!r} ({what}); the file has: {', '.join(have) or 'no datasets'}")
    return obj


def _strings(raw) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(raw).reshape(-1).tolist()]


@DATASETS.register("hdf5")
class HDF5Images(RowDataset):
    """An HDF5 file with an images dataset, (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3, uint8 or float
    in [0, 1], and a factors dataset (N, K) or (N,) of numbers. Factor names: the factors dataset's attribute
    `factor_names` (or `names`), else a string dataset `factor_names` beside it, else factor_0, factor_1, ..."""

    spec_keys = {"path": "the HDF5 file", "images": "the key of the images dataset in it",
                 "factors": "the key of the factors dataset in it"}
    path_keys = ("path",)

    def __init__(self, *, path: str, images: str, factors: str, resolution: int = 64, factor_bins: int = NUM_BINS):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise DataError(f"data.path: file not found: {self.path}")
        self.images_key, self.factors_key = images, factors
        with _open_h5(self.path, str(self.path)) as f:
            img = _h5_dataset(f, images, "data.images", self.path)
            fac = _h5_dataset(f, factors, "data.factors", self.path)
            shape = img.shape
            if len(shape) == 3:
                self.layout, channels = "NHW", 1
            elif len(shape) == 4 and shape[3] in (1, 3):
                self.layout, channels = "NHWC", shape[3]
            elif len(shape) == 4 and shape[1] in (1, 3):
                self.layout, channels = "NCHW", shape[1]
            else:
                raise DataError(f"{self.path}: {images!r} has shape {shape}; expected (N, H, W), (N, H, W, C) or "
                                f"(N, C, H, W) with C = 1 or 3")
            if img.dtype != np.uint8 and img.dtype.kind != "f":
                raise DataError(f"{self.path}: {images!r} is {img.dtype}; expected uint8 (0..255) or float in [0, 1]")
            self.float_pixels = img.dtype.kind == "f"
            if fac.dtype.kind not in "biuf" or fac.ndim not in (1, 2):
                raise DataError(f"{self.path}: {factors!r} is {fac.dtype} of shape {fac.shape}; expected numbers, "
                                f"(N, K) or (N,)")
            values = np.asarray(fac[()], dtype=np.float64).reshape(len(fac), -1)
            if values.shape[0] != shape[0]:
                raise DataError(f"{self.path}: {images!r} has {shape[0]} rows but {factors!r} has {values.shape[0]}")
            names = self._names(f, fac, values.shape[1])
        bad = ~np.isfinite(values)
        if bad.any():
            r, k = np.argwhere(bad)[0]
            raise DataError(f"{self.path}: {factors!r} row {r}, column {k} ({names[k]}): {values[r, k]} is not a "
                            f"finite number")
        super().__init__(columns=list(values.T), names=names, resolution=resolution, factor_bins=factor_bins,
                         channels=channels, where=f"{self.path}:{factors}")

    @classmethod
    def from_spec(cls, data) -> "HDF5Images":
        return cls(path=data.path, images=data.images, factors=data.factors, resolution=data.resolution,
                   factor_bins=data.factor_bins)

    def _names(self, f: h5py.File, fac: h5py.Dataset, k: int) -> list[str]:
        for source, raw in [(f"attribute {a!r} of {self.factors_key!r}", fac.attrs[a])
                            for a in ("factor_names", "names") if a in fac.attrs] + \
                           [(f"dataset {n!r}", f[n][()]) for n in (f"{fac.parent.name.rstrip('/')}/factor_names",)
                            if isinstance(f.get(n), h5py.Dataset)]:
            names = _strings(raw)
            if len(names) != k or len(set(names)) != k or not all(names):
                raise DataError(f"{self.path}: {source} gives {len(names)} names {names}; expected {k} distinct, "
                                f"non-empty names, one per column of {self.factors_key!r}")
            return names
        return [f"factor_{i}" for i in range(k)]

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        with _open_h5(self.path, str(self.path)) as f:
            raw = np.asarray(f[self.images_key][int(rows[0]):int(rows[-1]) + 1])  # rows are consecutive
        x = torch.from_numpy(raw)
        if self.layout == "NHW":
            x = x[:, None]
        elif self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        if self.float_pixels:
            x = x.float()
            bad = ~((x >= 0) & (x <= 1)).flatten(1).all(1)
            if bad.any():
                raise DataError(f"{self.path}: {self.images_key!r} row {int(rows[0]) + int(bad.nonzero()[0])} has "
                                f"pixel values outside [0, 1] (float images must lie in [0, 1])")
        else:
            x = x.float().div_(255)
        return to_resolution(x, self.resolution)
