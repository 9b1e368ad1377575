"""Errors a user can act on: each names what was wrong, where, and what is allowed."""


class CausalrepError(Exception):
    """Base class for every error causalrep raises on purpose (the CLI prints it as one line)."""

    exit_code = 1


class SpecError(CausalrepError, ValueError):
    """A spec (YAML file, override or cross-field rule) is invalid; `path` is the key path."""

    exit_code = 2

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class DataError(CausalrepError, ValueError):
    """A dataset file is missing or malformed, or a tensor has the wrong shape."""

    exit_code = 2


class TrainingError(CausalrepError, RuntimeError):
    """Training stopped (e.g. a non-finite loss); the last good checkpoint is kept."""

    exit_code = 1
