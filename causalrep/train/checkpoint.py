"""Atomic checkpoints holding everything an exact resume needs, the previous one kept beside the last; loaded
with weights_only=True after a CRC check, and a resume falls back to the previous one if the last is damaged."""
from __future__ import annotations

import errno
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CausalrepError, CausalrepWarning, CheckpointError, one_line

CHECKPOINT = Path("checkpoints") / "last.pt"  # a run folder's checkpoint, relative to the folder


def rng_state(data_generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "data": data_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], data_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    data_generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def previous_path(path: str | Path) -> Path:
    """Where save_checkpoint keeps the checkpoint `path` held before the last write: last.pt -> last.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def has_checkpoint(path: str | Path) -> bool:
    """`path` or the previous checkpoint beside it exists (a run folder's: run_dir / CHECKPOINT)."""
    return Path(path).is_file() or previous_path(path).is_file()


# ------------------------------------------------------------------------------------------------ writing
def _temporary(path: Path) -> Path:
    """A fresh name beside `path` for a temporary (the glob `.NAME.*.tmp`, which _remove_stale clears)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")  # os.urandom: no RNG state used


def _remove_stale(path: Path) -> None:
    """Temporaries left by a process killed while writing (SIGKILL skips every cleanup); never read as checkpoints."""
    for name in (path.name, previous_path(path).name):
        for tmp in path.parent.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """POSIX makes a rename durable (across a power loss) once its directory is fsynced; best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def _keep_as_previous(path: Path) -> None:
    """The file at `path` becomes previous_path(path) too: a hard link renamed over the old previous one, so
    `path` itself never goes missing; where hard links are not supported, a rename (path is replaced next)."""
    prev, link = previous_path(path), _temporary(previous_path(path))
    try:
        os.link(path, link)
    except OSError:
        os.replace(path, prev)
        return
    os.replace(link, prev)


def save_checkpoint(path: str | Path, payload: dict[str, Any], *, keep_previous: bool = True) -> None:
    """Write to a temporary file in the same folder, flush and fsync it, keep the file `path` held as
    previous_path(path) (keep_previous), then rename the temporary over `path`. os.replace is atomic on POSIX
    (rename(2)): a crash at any point (kill -9 included) leaves `path` either the old or the new checkpoint,
    never a part of one. An OSError (no space left, read-only disk) is a CheckpointError naming the file; the
    checkpoints already there are kept unchanged."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        tmp = _temporary(path)
        with open(tmp, "xb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the rename makes it the checkpoint
        if keep_previous and path.is_file():
            _keep_as_previous(path)
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as exc:
        code = f" [{errno.errorcode[exc.errno]}]" if exc.errno in errno.errorcode else ""
        kept = "the checkpoint already in that file is kept unchanged" if path.is_file() else \
            "no earlier checkpoint is there"
        raise CheckpointError(path, f"cannot write it: {exc.strerror or exc}{code}; {kept}") from exc
    finally:
        if tmp is not None:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass


# ------------------------------------------------------------------------------------------------ reading
def _check_archive(path: Path) -> None:
    """torch.save writes a zip archive whose every record carries a CRC-32, but torch.load does not check them
    (a flipped byte in a tensor loads silently); zipfile.testzip does. A file that is not a zip archive at all
    (a truncated one has lost its central directory at the end) is left to torch.load."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except OSError:
        raise  # the file cannot be read (permissions, I/O): not a judgement on its bytes
    except Exception as exc:  # BadZipFile, EOFError, zlib.error, ...: any of them means the bytes are damaged
        raise CheckpointError(path, f"truncated or corrupted ({type(exc).__name__}: {one_line(exc, 200)})",
                              corrupt=True) from None
    if bad is not None:
        raise CheckpointError(path, f"corrupted: record {bad!r} fails its CRC-32 check", corrupt=True)


def _refused_detail(exc: Exception) -> str | None:
    """The line of torch's weights-only error that names the object it refused, or None if none does."""
    for line in str(exc).splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return one_line(line.strip().removeprefix("WeightsUnpickler error: ").split(". Please")[0], 200)
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """One checkpoint file; CheckpointError naming it when it is missing, truncated or corrupted (`corrupt`),
    or carries pickled objects (refused: nothing in it is executed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "not found")
    try:
        _check_archive(path)
        # weights_only=True: tensors, numbers, strings and containers only; any other pickled object (a class
        # instance, a function such as os.system) is refused before it is built (torch.load docs)
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except CausalrepError:
        raise
    except pickle.UnpicklingError as exc:
        detail = _refused_detail(exc)
        # a zip archive whose CRC-32s all passed holds the bytes torch.save wrote: what the weights-only unpickler
        # refused was put there, it is no damage (in a file that is no zip archive it may be either: damaged)
        if detail is not None and zipfile.is_zipfile(path):
            raise CheckpointError(path, "refused: it carries a pickled object other than tensors, numbers, strings "
                                        f"and containers (torch.load weights_only=True; {detail}); nothing in it "
                                        "was run. Load only checkpoints you trust") from None
        raise CheckpointError(path, f"truncated or corrupted (its pickled index does not read back: "
                                    f"{detail or _last_line(exc)})", corrupt=True) from None
    except OSError as exc:
        raise CheckpointError(path, f"cannot read it: {exc.strerror or exc}") from None
    except Exception as exc:  # RuntimeError (zip reader), EOFError (an empty file), ...
        raise CheckpointError(path, f"truncated or corrupted ({_first_line(exc)})", corrupt=True) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        got = f"keys {sorted(map(str, ckpt))[:6]}" if isinstance(ckpt, dict) else f"a {type(ckpt).__name__}"
        raise CheckpointError(path, f"not a causalrep checkpoint (expected a mapping with 'model', 'optimizer', "
                                    f"'step', 'rng'; got {got})")
    return ckpt


def _first_line(exc: BaseException) -> str:
    """`Type: first sentence of the message` (torch's zip reader goes on with advice), or the type alone (an
    empty file's EOFError says nothing more)."""
    lines = str(exc).strip().splitlines()
    return one_line(f"{type(exc).__name__}: {lines[0].split('. ')[0]}" if lines else type(exc).__name__, 200)


def _last_line(exc: BaseException) -> str:
    """The cause at the end of torch's weights-only message (after its advice and the link to its docs)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "pytorch.org" not in ln]
    return one_line(lines[-1].removeprefix("WeightsUnpickler error: ") if lines else type(exc).__name__, 200)


def load_latest(path: str | Path, map_location: str | torch.device = "cpu", *,
                warn: bool = True) -> tuple[dict[str, Any], Path]:
    """The checkpoint at `path` and the file it came from; if that one is missing, truncated or corrupted, the
    previous one save_checkpoint kept beside it, with one warning naming the file skipped. CheckpointError
    when neither is good, and at once for a refused (pickled) file: that is no accident to step over."""
    path = Path(path)
    skipped: CheckpointError | None = None
    for candidate in (path, previous_path(path)):
        try:
            ckpt = load_checkpoint(candidate, map_location)
        except CheckpointError as exc:
            if not (exc.corrupt or not candidate.is_file()):
                raise
            skipped = skipped or exc
            continue
        if skipped is not None and warn:
            warnings.warn(f"{skipped}; using the previous checkpoint {candidate} "
                          f"(step {ckpt.get('step', '?')}) instead", CausalrepWarning, stacklevel=2)
        return ckpt, candidate
    assert skipped is not None
    if not skipped.corrupt:
        raise skipped  # neither file exists
    prev = previous_path(path)
    tail = f"the previous checkpoint {prev} is damaged too" if prev.is_file() else \
        f"no previous checkpoint ({prev.name}) to fall back to"
    raise CheckpointError(path, f"{skipped.message}; {tail}", corrupt=True)
