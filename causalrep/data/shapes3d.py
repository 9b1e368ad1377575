"""3D Shapes (Burgess & Kim 2018): the original 480,000-image grid, ray-cast per geometry and recoloured per hue."""
from __future__ import annotations

import colorsys
import hashlib
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import DataError
from .base import DATASETS, FILE_LOADERS, GroundTruthDataset

# Factor values as in the original file's `labels` (hue = fraction of the HSV circle, orientation in degrees).
HUES = np.linspace(0.0, 0.9, 10)
SCALES = np.linspace(0.75, 1.25, 8)
SHAPES = ("cube", "cylinder", "sphere", "capsule")  # the original's index order
ORIENTATIONS = np.linspace(-30.0, 30.0, 15)
VALUES = (HUES, HUES, HUES, SCALES, np.arange(4.0), ORIENTATIONS)
SATURATION, VALUE = 0.85, 1.0  # saturated, bright colours like the original
HUE_RGB = torch.tensor([colorsys.hsv_to_rgb(h, SATURATION, VALUE) for h in HUES], dtype=torch.float32)  # (10, 3)

FLOOR, WALL, OBJECT = 0, 1, 2  # surface ids; the palette of an image is (floor, wall, object hue) in this order
CANVAS, SS = 64, 2  # native resolution and supersampling per axis: buffers are GRID×GRID sub-pixels
GRID = CANVAS * SS
GEOMETRY = (8, 4, 15)  # (scale, shape, orientation): the only factors that move pixels
CACHE_NAME = "shapes3d_geometry_v1.h5"
CHUNK = 4096  # images per step: 4096 × 3 × 64² float32 ≈ 200 MB

# Scene, world frame: y up, floor y = 0, object on the vertical axis through the origin; two walls meet in a
# corner behind it at ±45° to the view axis, like the original room. Orientation orbits the camera about that
# axis (= turns object, room and light together), so it changes every shape's image, spheres included, and
# moves the room corner, as in the original. At 0° the view is head-on and the geometry mirror-symmetric.
CAMERA = (0.0, 2.2, 4.6)  # pinhole position at orientation 0
LOOK_AT = (0.0, 0.7, 0.0)
FOV_DEG = 35.0  # full field of view (square image)
CORNER_Z = -2.6  # walls: x + z = CORNER_Z and −x + z = CORNER_Z (they meet at x = 0, z = CORNER_Z)
LIGHT = (-0.6, 1.6, 1.0)  # directional light (towards the light), front-left-above: shadow falls back-right
AMBIENT = 0.5  # shade = AMBIENT + (1 − AMBIENT)·max(n·l, 0)·visible
EPS = 1e-4
# Room planes n·p = offset with unit normals n: floor, left wall (x + z = CORNER_Z), right wall (−x + z = CORNER_Z).
PLANES = torch.tensor([[0.0, 1, 0], [1, 0, 1], [-1, 0, 1]]) / torch.tensor([1.0, 2**0.5, 2**0.5])[:, None]  # (3, 3)
OFFSETS = torch.tensor([0.0, CORNER_Z, CORNER_Z]) / torch.tensor([1.0, 2**0.5, 2**0.5])  # (3,)


def _scene_rays(theta_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins (B, 1, 3) and unit directions (B, GRID², 3) of every sub-pixel's ray for B orientations."""
    cam, target = torch.tensor(CAMERA), torch.tensor(LOOK_AT)
    fwd = F.normalize(target - cam, dim=0)
    right = F.normalize(torch.linalg.cross(fwd, torch.tensor([0.0, 1.0, 0.0])), dim=0)
    up = torch.linalg.cross(right, fwd)
    # Sub-pixel centres in [-1, 1], exactly antisymmetric about the centre (multiples of 1/GRID).
    s = (torch.arange(GRID, dtype=torch.float32) + 0.5) / GRID * 2 - 1
    half = np.tan(np.radians(FOV_DEG) / 2)
    v, u = torch.meshgrid(-s * half, s * half, indexing="ij")  # (GRID, GRID): row 0 is the top
    d = F.normalize(fwd + u[..., None] * right + v[..., None] * up, dim=-1).reshape(-1, 3)  # (P, 3)
    # The camera orbits by −θ (rotation R_y(−θ), CCW seen from above for +θ): the scene turns by +θ.
    a = torch.deg2rad(-theta_deg.float())
    c, sn, z, o = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    rot = torch.stack([torch.stack([c, z, sn], -1), torch.stack([z, o, z], -1), torch.stack([-sn, z, c], -1)], -2)
    return (rot @ cam)[:, None, :], d @ rot.transpose(1, 2)  # (B, 3, 3) rotations applied row-wise


# Analytic ray–primitive hits on (B, P | 1, 3) origins o and (B, P, 3) unit directions d; shape sizes are (B, 1).
# Each returns t (B, P) (inf on a miss or behind the origin) and the outward normal (B, P, 3).
def _box(o, d, h):  # axis-aligned cube of half side h standing on the floor: slab method
    oc = o - torch.stack([torch.zeros_like(h), h, torch.zeros_like(h)], -1)
    inv = 1.0 / torch.where(d.abs() < 1e-9, 1e-9, d)  # no 0/0 for axis-parallel rays
    t1, t2 = (-h[..., None] - oc) * inv, (h[..., None] - oc) * inv
    tnear, axis = torch.minimum(t1, t2).max(-1)
    tfar = torch.maximum(t1, t2).min(-1).values
    t = torch.where((tnear <= tfar) & (tnear > EPS), tnear, torch.inf)
    return t, F.one_hot(axis, 3).float() * -torch.sign(d)


def _tube(o, d, r, y0, y1):  # side of the vertical cylinder x² + z² = r², y0 ≤ y ≤ y1
    a = (d[..., 0] ** 2 + d[..., 2] ** 2).clamp_min(1e-12)
    b = o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2]
    c = o[..., 0] ** 2 + o[..., 2] ** 2 - r * r
    disc = b * b - a * c
    t = (-b - disc.clamp_min(0).sqrt()) / a
    p = o + t[..., None] * d
    ok = (disc >= 0) & (t > EPS) & (p[..., 1] >= y0) & (p[..., 1] <= y1)
    return torch.where(ok, t, torch.inf), p * torch.tensor([1.0, 0.0, 1.0]) / r[..., None]


def _disc(o, d, r, y):  # horizontal top cap of radius r at height y
    t = (y - o[..., 1]) / torch.where(d[..., 1].abs() < 1e-9, 1e-9, d[..., 1])
    p = o + t[..., None] * d
    ok = (t > EPS) & (p[..., 0] ** 2 + p[..., 2] ** 2 <= r * r)
    return torch.where(ok, t, torch.inf), torch.tensor([0.0, 1.0, 0.0]).expand_as(p)


def _ball(o, d, r, y):  # sphere of radius r centred at (0, y, 0)
    oc = o - torch.stack([torch.zeros_like(y), y, torch.zeros_like(y)], -1)
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - r * r)
    t = -b - disc.clamp_min(0).sqrt()
    return torch.where((disc >= 0) & (t > EPS), t, torch.inf), (oc + t[..., None] * d) / r[..., None]


def _object(o, d, shape: int, s):
    """First hit (t (B, P), normal (B, P, 3)) of the shape at scale s (B, 1): min over its primitives' hits."""
    if shape == 0:  # cube, side s
        return _box(o, d, 0.5 * s)
    if shape == 1:  # cylinder, radius 0.5 s, height s (its bottom cap rests on the floor: never seen)
        hits = [_tube(o, d, 0.5 * s, 0 * s, s), _disc(o, d, 0.5 * s, s)]
    elif shape == 2:  # sphere, radius 0.5 s
        return _ball(o, d, 0.5 * s, 0.5 * s)
    else:  # capsule: radius 0.3 s around a vertical segment of length 0.6 s (height 1.2 s); the union's
        r = 0.3 * s  # first hit is the min over tube and end-balls (the tube's caps lie inside the balls)
        hits = [_tube(o, d, r, r, r + 0.6 * s), _ball(o, d, r, r), _ball(o, d, r, r + 0.6 * s)]
    t, k = torch.stack([h[0] for h in hits]).min(0)  # (B, P): nearest of the K primitives' hits
    normals = torch.stack([h[1] for h in hits])  # (K, B, P, 3)
    return t, normals.gather(0, k[None, ..., None].expand(1, *k.shape, 3))[0]


def _render_geometry(shape: int, s: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Surface ids (B, GRID, GRID) uint8 and shade (B, GRID, GRID) uint8 (·/255) for B (scale, orientation)."""
    o, d = _scene_rays(theta)
    s = s.float()[:, None]  # (B, 1)
    light = F.normalize(torch.tensor(LIGHT), dim=0)
    # Room = {y ≥ 0} ∩ in front of both walls, seen from inside: the visible surface is the nearest exit.
    dn = d @ PLANES.T  # (B, P, 3 planes)
    tp = torch.where(dn < 0, (OFFSETS - o @ PLANES.T) / dn.clamp_max(-1e-9), 1e3)  # exits only; 1e3: none
    t_room, k = tp.min(-1)  # (B, P); k = 0 floor, 1 or 2 a wall
    t_obj, n_obj = _object(o, d, shape, s)
    on_obj = t_obj < t_room
    ids = torch.where(on_obj, OBJECT, torch.where(k == 0, FLOOR, WALL))
    normal = torch.where(on_obj[..., None], n_obj, PLANES[k])
    # Hard shadow: a room point is dark where a ray towards the light hits the object (convex objects shade
    # their own far side through n·l < 0, so only room points need shadow rays).
    p = o + torch.where(on_obj, t_obj, t_room)[..., None] * d + EPS * 10 * normal
    shadowed = torch.isfinite(_object(p, light.expand_as(p), shape, s)[0]) & ~on_obj
    shade = AMBIENT + (1 - AMBIENT) * (normal @ light).clamp_min(0) * (~shadowed)  # (B, P) in [AMBIENT, 1]
    return ids.to(torch.uint8).view(-1, GRID, GRID), (shade * 255).round().to(torch.uint8).view(-1, GRID, GRID)


def build_geometry(progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All 480 geometry buffers: ids and shade, each (8, 4, 15, GRID, GRID) uint8, row-major like the factors."""
    ids, shade = np.empty((2, *GEOMETRY, GRID, GRID), np.uint8)  # two contiguous views
    # The ops are small (≈ 250k elements) and memory-bound: one thread is as fast on an idle CPU and ~5× faster
    # on a busy one, where OpenMP threads wait on a descheduled peer at every op.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # one step per (scale, shape): its 15 orientations as one batch (15 × 16384 rays)
        for i, j in tqdm([(i, j) for i in range(8) for j in range(4)], desc="shapes3d geometry", disable=not progress):
            a, b = _render_geometry(j, torch.full((15,), float(SCALES[i])), torch.as_tensor(ORIENTATIONS))
            ids[i, j], shade[i, j] = a.numpy(), b.numpy()
    finally:
        torch.set_num_threads(threads)
    return ids, shade


def _checksum(ids: np.ndarray, shade: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids).tobytes() + np.ascontiguousarray(shade).tobytes()).hexdigest()


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached buffers, or None (with a warning unless the file is simply absent) if unusable."""
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            if not bool(f.attrs.get("complete", False)):
                raise ValueError("it is incomplete (no complete=True attribute)")
            ids, shade = f["ids"][()], f["shade"][()]
            if ids.shape != (*GEOMETRY, GRID, GRID) or shade.shape != ids.shape:
                raise ValueError(f"its buffers have shape {ids.shape}, expected {(*GEOMETRY, GRID, GRID)}")
            if _checksum(ids, shade) != f.attrs.get("sha256"):
                raise ValueError("its sha256 checksum does not match")
        return ids, shade
    except (OSError, KeyError, ValueError) as e:
        warnings.warn(f"shapes3d: geometry cache {path} is unusable ({e}); rebuilding it", RuntimeWarning)
        return None


def _write_cache(path: Path, ids: np.ndarray, shade: np.ndarray) -> None:
    """Write to a temporary file, mark it complete last, then rename: readers never see a partial file."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(tmp, "w") as f:
            f.create_dataset("ids", data=ids, compression="gzip", compression_opts=1)
            f.create_dataset("shade", data=shade, compression="gzip", compression_opts=1)
            f.attrs["sha256"] = _checksum(ids, shade)
            f.attrs["complete"] = True
        os.replace(tmp, path)
    except OSError as e:  # unwritable cache dir: keep the in-memory buffers, rebuild next time
        tmp.unlink(missing_ok=True)
        warnings.warn(f"shapes3d: could not write geometry cache {path} ({e})", RuntimeWarning)


@DATASETS.register("shapes3d")
@FILE_LOADERS.register("shapes3d")
class Shapes3D(GroundTruthDataset):
    """3D Shapes, 480,000 RGB images. Procedural by default: geometry buffers (surface id, shade per sub-pixel)
    are ray-cast once per (scale, shape, orientation), cached in `cache_dir` and coloured on the fly. With
    `path`, images come from a 3dshapes.h5 file; one with N < 480,000 rows holds a subset, and flat indices are
    then its row numbers (for the full file in the original order they are the row-major factor indices).
    """

    factor_names = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    factor_sizes = (10, 10, 10, 8, 4, 15)
    factor_value_names = {"shape": SHAPES}
    channels = 3

    def __init__(self, *, resolution: int = 64, path: str | None = None, cache_dir: str | None = None):
        allowed = (8, 16, 32, 64)
        if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool) or resolution not in allowed:
            raise DataError(f"shapes3d: resolution {resolution!r} is not supported; allowed: 8, 16, 32, 64")
        self.resolution = int(resolution)
        cache_dir = cache_dir or os.environ.get("CAUSALREP_DATA") or Path.home() / ".cache" / "causalrep"
        self.cache_path = Path(cache_dir) / CACHE_NAME
        self.path, self._file, self._geometry, self._w = path, None, None, {}  # _w: colour weights per resolution
        self._factors = self._rows = None  # file only: (N, 6) factor indices per row; flat factor index -> row
        if path is not None:
            self._open_file()

    def _open_file(self) -> h5py.File:
        if self._file is None:
            if not os.path.isfile(self.path):
                raise DataError(f"shapes3d: file {self.path} does not exist")
            try:
                self._file = h5py.File(self.path, "r")  # kept open: images are read lazily
            except OSError as e:
                raise DataError(f"shapes3d: file {self.path} is not a readable HDF5 file ({e})") from None
            for name in ("images", "labels"):
                if name not in self._file:
                    raise DataError(f"shapes3d: file {self.path} has no dataset {name!r} (needs images, labels)")
            img, lab = self._file["images"], self._file["labels"]
            if img.ndim != 4 or img.shape[1:] != (64, 64, 3) or img.dtype != np.uint8:
                raise DataError(f"shapes3d: {self.path}: 'images' is {img.dtype} {img.shape}, not uint8 (N, 64, 64, 3)")
            if lab.shape != (img.shape[0], 6):
                raise DataError(f"shapes3d: {self.path}: 'labels' has shape {lab.shape}, not ({img.shape[0]}, 6)")
        if self._factors is None:
            self._index_labels(self._file["labels"][()])
        return self._file

    def _index_labels(self, labels: np.ndarray) -> None:
        """Label values -> factor indices (nearest grid value) and the factor -> row lookup table."""
        cols = []
        for k, grid in enumerate(VALUES):
            idx = np.abs(labels[:, k, None] - grid[None]).argmin(1)  # (N,)
            if (np.abs(grid[idx] - labels[:, k]) > 1e-3 * max(1.0, np.ptp(grid))).any():
                raise DataError(f"shapes3d: file {self.path}: labels of {self.factor_names[k]} are off the grid")
            cols.append(idx)
        self._factors = np.stack(cols, 1).astype(np.int64)  # (N, 6)
        # A dense table over the 480,000 factor tuples (3.8 MB): vectorised look-ups; -1 = not in the file.
        self._rows = np.full(super().__len__(), -1, np.int64)
        self._rows[super().factors_to_index(self._factors)] = np.arange(len(self._factors))

    def __getstate__(self):  # h5py handles do not pickle (DataLoader workers): reopen lazily
        return {**self.__dict__, "_file": None, "_geometry": None, "_w": {}}  # buffers: reloaded from the cache

    def __len__(self) -> int:
        return super().__len__() if self.path is None else len(self._factors)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        # With a file, only rows present in it (uniform over rows: uniform factors for the full file).
        return super().sample_factors(n, rng) if self.path is None else self._factors[rng.integers(0, len(self), n)]

    def index_to_factors(self, index: np.ndarray) -> np.ndarray:
        return super().index_to_factors(index) if self.path is None else self._factors[np.asarray(index, np.int64)]

    def factors_to_index(self, factors: np.ndarray) -> np.ndarray:
        factors = self._check(factors)
        rows = super().factors_to_index(factors) if self.path is None else self._rows[super().factors_to_index(factors)]
        if (rows < 0).any():  # file only: a factor tuple without a row
            missing = factors[np.argmax(rows < 0)].tolist()
            raise DataError(f"shapes3d: file {self.path} has no image for factors {missing} (+{(rows < 0).sum() - 1})")
        return rows

    def _check(self, factors: np.ndarray) -> np.ndarray:
        factors = np.asarray(factors, dtype=np.int64)
        if factors.ndim != 2 or factors.shape[1] != 6:
            raise DataError(f"shapes3d: factors must have shape (N, 6); got {factors.shape}")
        if (factors < 0).any() or (factors >= np.asarray(self.factor_sizes)).any():
            raise DataError(f"shapes3d: factor indices out of range; sizes are {self.factor_sizes}")
        return factors

    def geometry(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, shade): (480, GRID, GRID) uint8 each, indexed by the row-major (scale, shape, orientation)."""
        if self._geometry is None:
            buffers = _read_cache(self.cache_path)
            if buffers is None:
                buffers = build_geometry()
                _write_cache(self.cache_path, *buffers)
            self._geometry = tuple(torch.from_numpy(b.reshape(-1, GRID, GRID)) for b in buffers)
        return self._geometry

    def surface_ids(self, factors: np.ndarray) -> torch.Tensor:
        """(N, GRID, GRID) uint8 sub-pixel surface ids (FLOOR, WALL, OBJECT) of procedural images."""
        return self.geometry()[0][np.ravel_multi_index(tuple(self._check(factors)[:, 3:].T), GEOMETRY)]

    def _weights(self, res: int) -> torch.Tensor:
        """(480, 3 surfaces, res, res) float32: per pixel, the mean over its sub-pixels of shade · [id = surface]."""
        if res not in self._w:
            ids, shade = self.geometry()
            shade = shade.float().div(255)[:, None]  # (480, 1, GRID, GRID); one surface at a time: 30 MB temps
            self._w[res] = torch.cat([F.avg_pool2d((ids[:, None] == k) * shade, GRID // res) for k in range(3)], 1)
        return self._w[res]

    def _colour(self, f: np.ndarray, device: torch.device, res: int) -> torch.Tensor:
        """(n, 3, res, res) float32. Colouring is linear: the sub-pixel mean of palette[id] · shade equals
        Σ_surface palette[surface] · weight[surface], so a batch costs one gather and a (3×3)·(3×res²) bmm."""
        w = self._weights(res)[np.ravel_multi_index(tuple(f[:, 3:].T), GEOMETRY)].to(device)  # (n, 3, res, res)
        palette = HUE_RGB.to(device)[torch.as_tensor(f[:, :3], device=device)]  # (n, 3 surfaces, 3 rgb)
        return torch.bmm(palette.transpose(1, 2), w.flatten(2)).view(len(f), 3, res, res)

    def _read(self, f: np.ndarray, device: torch.device) -> torch.Tensor:
        """(n, 3, 64, 64) float32 from the file; h5py fancy indexing needs sorted, unique rows."""
        rows, inverse = np.unique(self.factors_to_index(f), return_inverse=True)
        data = torch.from_numpy(self._open_file()["images"][rows])[torch.as_tensor(inverse.reshape(-1))]
        return data.to(device).permute(0, 3, 1, 2).float() / 255

    def _images(self, f: np.ndarray, device: torch.device, res: int) -> torch.Tensor:
        """(n, 3, res, res) float32 for checked factors f."""
        return self._colour(f, device, res) if self.path is None else F.avg_pool2d(self._read(f, device), CANVAS // res)

    def images(self, factors: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
        """(N, 3, R, R) float32 in [0, 1] on `device` (default CPU) for (N, 6) factor indices."""
        factors = self._check(factors)
        device = torch.device("cpu") if device is None else torch.device(device)
        out = torch.empty(len(factors), 3, self.resolution, self.resolution, device=device)
        for start in range(0, len(factors), CHUNK):
            out[start:start + CHUNK] = self._images(factors[start:start + CHUNK], device, self.resolution)
        return out

    def write_h5(self, path: str, index: np.ndarray | None = None) -> None:
        """Write images at 64×64 in the original 3dshapes.h5 layout for flat indices (default: all)."""
        index = np.arange(len(self)) if index is None else np.asarray(index, np.int64)
        with h5py.File(path, "w") as f:
            images = f.create_dataset("images", (len(index), 64, 64, 3), np.uint8, chunks=True)
            labels = f.create_dataset("labels", (len(index), 6), np.float64)
            for start in tqdm(range(0, len(index), CHUNK), desc="shapes3d write_h5"):
                fac = self.index_to_factors(index[start:start + CHUNK])
                img = self._images(fac, torch.device("cpu"), CANVAS)  # (n, 3, 64, 64)
                images[start:start + len(fac)] = (img.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
                labels[start:start + len(fac)] = np.stack([VALUES[k][fac[:, k]] for k in range(6)], 1)
