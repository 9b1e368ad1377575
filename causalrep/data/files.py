"""Real-file loaders: dSprites and MPI3D .npz files (memory-mapped when stored uncompressed)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .base import DATASETS, FILE_LOADERS, GroundTruthDataset


def npz_array(path: Path, key: str) -> np.ndarray:
    """Array `key` of an .npz file: a read-only memmap when the member is stored uncompressed
    (np.savez; MPI3D's 12.7 GB file would not fit in memory otherwise), else loaded (np.savez_compressed)."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    with zf:
        names = zf.namelist()
        member = f"{key}.npy"
        if member not in names:
            have = ", ".join(n[:-4] for n in names if n.endswith(".npy"))
            raise DataError(f"{path}: no array {key!r} in the file (it has: {have or 'nothing'})")
        info = zf.getinfo(member)
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as fh:
                # the local file header is 30 bytes + name + extra field (ZIP spec, sec 4.3.7)
                fh.seek(info.header_offset + 26)
                name_len, extra_len = np.frombuffer(fh.read(4), dtype="<u2")
                fh.seek(info.header_offset + 30 + int(name_len) + int(extra_len))
                major, _ = np.lib.format.read_magic(fh)  # .npy format spec: magic, version, header
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(fh)
                offset = fh.tell()
            return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset,
                             order="F" if fortran else "C")
        with zf.open(member) as fh:
            return np.lib.format.read_array(fh)


class NpzGroundTruth(GroundTruthDataset):
    """A full factor grid stored in row-major factor order (the originals' layout), read from a file."""

    images_key = "images"
    native = 64

    def __init__(self, *, path: str, resolution: int = 64):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise DataError(f"data.path: file not found: {self.path}")
        if resolution > self.native or self.native % resolution:
            raise DataError(f"{self.path}: resolution {resolution} must divide the file's {self.native} px")
        self.resolution = resolution
        self.array = npz_array(self.path, self.images_key)
        n = len(self)
        if self.array.shape[0] != n or self.array.shape[1:3] != (self.native, self.native):
            raise DataError(f"{self.path}: {self.images_key!r} has shape {self.array.shape}; expected "
                            f"({n}, {self.native}, {self.native}{', 3' if self.channels == 3 else ''}) for the "
                            f"factor grid {self.factor_sizes}")

    def images(self, factors: np.ndarray, device=None) -> torch.Tensor:
        index = self.factors_to_index(factors)
        order = np.argsort(index)  # sorted reads are sequential on a memmap
        raw = np.asarray(self.array[index[order]])
        x = torch.from_numpy(raw[np.argsort(order)].copy())
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # (N, C, 64, 64)
        x = self.to_unit(x).to(device or "cpu")
        if self.resolution != self.native:
            x = F.avg_pool2d(x, self.native // self.resolution)  # area average: antialiased downsampling
        return x

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0


@FILE_LOADERS.register("dsprites")
class DSpritesFile(NpzGroundTruth):
    """dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz: `imgs` uint8 (737280, 64, 64) in {0, 1} and
    `latents_classes` (737280, 6) whose first column (colour) is constant; rows in row-major factor order."""

    factor_names = ("shape", "scale", "orientation", "posX", "posY")
    factor_sizes = (3, 6, 40, 32, 32)
    factor_value_names = {"shape": ("square", "ellipse", "heart")}
    channels = 1
    images_key = "imgs"

    def __init__(self, *, path: str, resolution: int = 64):
        super().__init__(path=path, resolution=resolution)
        classes = npz_array(self.path, "latents_classes")
        if classes.shape != (len(self), 6):
            raise DataError(f"{self.path}: 'latents_classes' has shape {classes.shape}; expected ({len(self)}, 6)")
        probe = np.linspace(0, len(self) - 1, 97).astype(np.int64)  # rows must follow the factor grid
        if not np.array_equal(np.asarray(classes[probe])[:, 1:], self.index_to_factors(probe)):
            raise DataError(f"{self.path}: 'latents_classes' rows are not in the row-major factor order")

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()  # pixels are stored as 0/1


@DATASETS.register("mpi3d")
@FILE_LOADERS.register("mpi3d")
class MPI3D(NpzGroundTruth):
    """MPI3D (Gondal et al. 2019; toy/realistic/real .npz): `images` uint8 (1036800, 64, 64, 3) over the grid
    colour 6 x shape 6 x size 2 x camera height 3 x background 3 x horizontal axis 40 x vertical axis 40.
    No procedural generator exists: give the file with data.path."""

    factor_names = ("object_color", "object_shape", "object_size", "camera_height", "background_color",
                    "horizontal_axis", "vertical_axis")
    factor_sizes = (6, 6, 2, 3, 3, 40, 40)
    channels = 3

    def __init__(self, *, path: str | None = None, resolution: int = 64):
        if path is None:
            raise DataError("data.path: mpi3d has no procedural generator; give the path of mpi3d_*.npz")
        super().__init__(path=path, resolution=resolution)
