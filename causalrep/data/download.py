"""Download the real dSprites, 3D-Shapes and MPI3D files into the data folder (`causalrep data get NAME`).

The loaders read the original files as they are published (files.py: the dSprites and MPI3D .npz, shapes3d.py: the
3dshapes.h5), so nothing is converted: the file is fetched to DEST/<its original name> (DEST: $CAUSALREP_DATA, else
~/.cache/causalrep, the folder shapes3d.py caches its geometry in), verified, and its path is what a spec's
`data.path` takes. A download goes to DEST/<name>.part first and is renamed only once verified; an interrupted one
continues from the .part's size with an HTTP Range request (RFC 9110 sec 14.2), or starts again when the server
answers 200 (it ignored the Range) or the Content-Range does not start where the .part ends.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import attrs
import numpy as np
from tqdm.auto import tqdm

from ..errors import DataError

CHUNK = 1 << 20  # bytes per read, for the download and the checksum


@attrs.frozen
class DatasetSource:
    """Where one dataset file comes from and how the downloaded bytes are checked.

    sha256: the file's published SHA-256 (None where none is published; then git_sha1 or the .npz structure
    check below). git_sha1: the file's git blob id in the repository it is served from (SHA-1 of
    b"blob <size>\\0" + content, git's object format). size: its exact size in bytes, where published.
    npz_member / npz_shape: an .npz member whose .npy header must give this uint8 shape and whose stored size
    must be the header plus shape's bytes: the check for a file without a published checksum (MPI3D).
    """

    url: str
    sha256: str | None
    filename: str
    git_sha1: str | None = None
    size: int | None = None
    npz_member: str | None = None
    npz_shape: tuple[int, ...] | None = None
    data_name: str = ""  # the spec's data.name that loads this file


# name -> variant -> source; the first variant is the default. Tests replace entries (the URLs and hashes).
SOURCES: dict[str, dict[str, DatasetSource]] = {
    "dsprites": {
        # The official repository (github.com/deepmind/dsprites-dataset, master = commit fa310c6) serves the .npz
        # as a plain git blob (no LFS: the repository has no .gitattributes); `git ls-tree` of that commit gives
        # its blob id d98996d3... No SHA-256 of the .npz is published (tensorflow_datasets' checksums.tsv has the
        # .hdf5 only), so the blob id is the check.
        "npz": DatasetSource(
            url="https://raw.githubusercontent.com/deepmind/dsprites-dataset/master/"
                "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
            sha256=None, git_sha1="d98996d3f8ee1550e06b9d4ed78d0beb478910d5",
            filename="dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", data_name="dsprites"),
    },
    "shapes3d": {
        # URL, size and SHA-256 from tensorflow_datasets, tensorflow_datasets/datasets/shapes3d/checksums.tsv
        # (github.com/tensorflow/datasets, commit 90b66237ad09c9e5b9b1bc61b646db7b1fb0713c).
        "h5": DatasetSource(
            url="https://storage.googleapis.com/3d-shapes/3dshapes.h5",
            sha256="0a0f6ed98baff276a50f3a081a7434d788da63cb135a98189b2a5b5769be1785",
            size=267_573_662, filename="3dshapes.h5", data_name="shapes3d"),
    },
    # MPI3D (Gondal et al. 2019): the download links of the authors' README (github.com/rr-learning/
    # disentanglement_dataset, commit a7a6729 of 2025-04-17, which also replaced a corrupted mpi3d_real.npz).
    # The authors publish no checksum or exact size, so the file is checked for its structure instead: the
    # `images` member must be uint8 (1036800, 64, 64, 3) (6 colours x 6 shapes x 2 sizes x 3 heights x
    # 3 backgrounds x 40 x 40, the README's grid) and hold all of its 12,740,198,400 bytes.
    "mpi3d": {
        variant: DatasetSource(
            url=f"https://huggingface.co/datasets/waleedgondal/mpi3d/resolve/main/mpi3d_{variant}.npz",
            sha256=None, filename=f"mpi3d_{variant}.npz", npz_member="images",
            npz_shape=(1_036_800, 64, 64, 3), data_name="mpi3d")
        for variant in ("toy", "realistic", "real")
    },
}


def data_dir() -> Path:
    """$CAUSALREP_DATA, else ~/.cache/causalrep (the folder shapes3d.py caches its geometry in)."""
    return Path(os.environ.get("CAUSALREP_DATA") or Path.home() / ".cache" / "causalrep").expanduser()


def source(name: str, variant: str | None = None) -> DatasetSource:
    """The SOURCES entry for `name` and `variant` (None: the default), or a DataError listing the valid ones."""
    if name not in SOURCES:
        raise DataError(f"data get: unknown dataset {name!r}; valid names: {', '.join(sorted(SOURCES))}")
    variants = SOURCES[name]
    if variant is None:
        return next(iter(variants.values()))
    if variant not in variants:
        raise DataError(f"data get {name}: unknown --variant {variant!r}; valid: {', '.join(variants)}")
    return variants[variant]


def get(name: str, variant: str | None = None, *, dest: str | Path | None = None, url: str | None = None,
        progress: bool = True) -> Path:
    """Download dataset `name` (a SOURCES key) into `dest` (default data_dir()), verify it and return its path.
    A verified file already there is kept as it is; `url` replaces the source's URL (same checks)."""
    src = source(name, variant)
    if url is not None:
        src = attrs.evolve(src, url=url)
    dest = Path(dest).expanduser() if dest is not None else data_dir()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"data get: cannot create the folder {dest} ({exc.strerror or exc})") from None
    final = dest / src.filename
    part = dest / f"{src.filename}.part"
    if final.is_file():
        problem = check(final, src, progress)
        if problem:
            raise DataError(f"{final} is already there but {problem}; delete it and run again to download it")
        return final
    _download(src.url, part, progress)
    problem = check(part, src, progress)
    if problem:
        part.unlink(missing_ok=True)
        raise DataError(f"{final.name} from {src.url}: {problem}; the download {part} was deleted")
    os.replace(part, final)
    return final


def _download(url: str, part: Path, progress: bool) -> None:
    """Fetch `url` into `part`, continuing from part's size when it exists and the server honours Range."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # Range Not Satisfiable: the .part may already hold the whole file
            total = _content_range(exc.headers.get("Content-Range", ""))[2]
            if total == offset:
                return
            part.unlink()  # longer than the file (or the total is unknown): start again
            return _download(url, part, progress)
        raise DataError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise DataError(f"could not download {url}: {getattr(exc, 'reason', None) or exc}") from None
    with resp:
        status = getattr(resp, "status", None)  # None for file:// (urllib's FileHandler has no Range)
        start = _content_range(resp.headers.get("Content-Range", ""))[0] if status == 206 else None
        if offset and start != offset:
            offset = 0  # the server sent the whole file (or another range): restart from its first byte
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        done = offset
        with open(part, "ab" if offset else "wb") as fh, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=part.name[: -len(".part")], disable=not progress) as bar:
            try:
                while chunk := resp.read(CHUNK):
                    fh.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise DataError(f"download of {url} stopped at {done:,} bytes ({exc}); {part} is kept: run the "
                                "same command again to continue it") from None
    if total is not None and done != total:
        raise DataError(f"download of {url} stopped at {done:,} of {total:,} bytes; {part} is kept: run the same "
                        "command again to continue it")


def _content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) of a Content-Range header, `bytes 10-99/100` or `bytes */100` (RFC 9110 sec 14.4);
    None where absent or unknown."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None, None
    first, last, total = (int(g) if g and g != "*" else None for g in m.groups())
    return first, last, total


def git_blob_sha1(path: Path, progress: bool = False) -> str:
    """git's object id of the file's content: SHA-1 of b"blob <size>\\0" followed by the bytes."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    _feed(path, [h], progress)
    return h.hexdigest()


def _feed(path: Path, hashes: list, progress: bool) -> None:
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
                                      desc=f"checking {path.name}", disable=not progress) as bar:
        while chunk := fh.read(CHUNK):
            for h in hashes:
                h.update(chunk)
            bar.update(len(chunk))


def check(path: Path, src: DatasetSource, progress: bool = False) -> str | None:
    """What is wrong with the file at `path` for `src` (size, SHA-256, git blob id, .npz structure), or None."""
    size = path.stat().st_size
    if src.size is not None and size != src.size:
        return f"size mismatch: expected {src.size:,} bytes, got {size:,}"
    if src.sha256 or src.git_sha1:
        sha256 = hashlib.sha256()
        git = hashlib.sha1(b"blob %d\0" % size)
        _feed(path, [sha256, git], progress)
        if src.sha256 and sha256.hexdigest() != src.sha256.lower():
            return f"SHA-256 mismatch: expected {src.sha256.lower()}, got {sha256.hexdigest()}"
        if src.git_sha1 and git.hexdigest() != src.git_sha1.lower():
            return f"git blob SHA-1 mismatch: expected {src.git_sha1.lower()}, got {git.hexdigest()}"
    if src.npz_member is not None:
        return _npz_problem(path, src.npz_member, src.npz_shape)
    return None


def _npz_problem(path: Path, member: str, shape: tuple[int, ...] | None) -> str | None:
    """The .npz check of a file without a published checksum: `member` is a uint8 array of `shape` whose stored
    .npy is complete (its header plus all of the array's bytes, NEP 1 / numpy.lib.format)."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{member}.npy")
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version[0] == 1 else np.lib.format.read_array_header_2_0
                got_shape, _, dtype = read(fh)
                header = fh.tell()
    except KeyError:
        return f"not an MPI3D .npz: no array {member!r}"
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        return f"not a readable .npz file ({exc})"
    if dtype != np.uint8 or (shape is not None and tuple(got_shape) != tuple(shape)):
        return f"{member!r} is {dtype} {tuple(got_shape)}, expected uint8 {tuple(shape or got_shape)}"
    want = header + int(np.prod(got_shape, dtype=np.int64))
    if info.file_size != want:
        return f"{member!r} holds {info.file_size:,} bytes, expected {want:,} (the file is incomplete)"
    return None
