"""Errors a user can act on: each names what was wrong, where, and what is allowed."""
import contextlib
import re
import sys
import warnings

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(text: str, limit: int = 1000) -> str:
    """`text` safe to print as (part of) one line: control characters, line separators and lone surrogates
    escaped, and at most `limit` characters."""
    text = _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CausalrepError(Exception):
    """Base class for every error causalrep raises on purpose (the CLI prints it as one line)."""

    exit_code = 1


class SpecError(CausalrepError, ValueError):
    """A spec (YAML file, override or cross-field rule) is invalid; `path` is the key path."""

    exit_code = 2

    def __init__(self, path: str, message: str):
        self.path = one_line(path, 300)
        self.message = one_line(message)
        super().__init__(f"{self.path}: {self.message}" if self.path else self.message)


class DataError(CausalrepError, ValueError):
    """A dataset file is missing or malformed, or a tensor has the wrong shape."""

    exit_code = 2


class TrainingError(CausalrepError, RuntimeError):
    """Training stopped (e.g. a non-finite loss, naming the step and the term); the last good checkpoint is kept."""

    exit_code = 2


class CheckpointError(CausalrepError):
    """A checkpoint file cannot be written (e.g. no space left) or read back: missing, truncated or corrupted
    (`corrupt`: a resume falls back to the previous checkpoint), or refused (it carries pickled objects)."""

    exit_code = 2

    def __init__(self, path, message: str, *, corrupt: bool = False):
        self.path = one_line(path, 300)
        self.message = one_line(message)
        self.corrupt = corrupt
        super().__init__(f"checkpoint {self.path}: {self.message}")


class CausalrepWarning(UserWarning):
    """Something went wrong and the run goes on (e.g. Aim is off, a corrupted checkpoint was skipped);
    the CLI prints it as one line, `warning: ...`."""


@contextlib.contextmanager
def one_line_warnings():
    """For the CLIs: a CausalrepWarning shows as `warning: ...` on one line of stderr (no source location);
    other warnings as Python shows them. warnings.catch_warnings restores showwarning afterwards."""
    with warnings.catch_warnings():
        default = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, CausalrepWarning):
                return default(message, category, filename, lineno, file, line)
            out = file or sys.stderr
            text = f"warning: {one_line(message)}"
            enc = getattr(out, "encoding", None) or "utf-8"
            try:
                text.encode(enc)
            except (UnicodeEncodeError, LookupError):
                text = text.encode("ascii", "backslashreplace").decode("ascii")
            print(text, file=out)

        warnings.showwarning = show
        yield
