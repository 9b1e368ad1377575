"""Load a spec: YAML (safe_load only) -> `base:` inheritance with deep merge -> `--set` overrides -> Spec."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from ..errors import SpecError
from .convert import describe, from_dict, to_dict
from .schema import Spec

# Cross-section rules (graph vs latent_dim, dataset and metric names, ...) need the registries of the layers above
# the spec (datasets, models, metrics), which this package must not import: the builder registers its rules here
# (build.validate_spec, when causalrep is imported) and load_spec(check=True) runs them.
_CHECKS: list[Callable[[Spec], None]] = []


def register_check(fn: Callable[[Spec], None]) -> Callable[[Spec], None]:
    """Run fn(spec), which raises SpecError naming the key path, in every load_spec(check=True); a decorator."""
    if fn not in _CHECKS:
        _CHECKS.append(fn)
    return fn


# Relative file paths in a spec file mean "beside this file", in --set overrides and plain data "in the working
# directory". Which keys hold paths depends on the dataset (data.images is a folder for `folder`, an HDF5 key for
# `hdf5`), known only above the spec: the builder registers fn(tree, folder) -> tree (build.resolve_paths), and
# load_spec runs it on the file's tree with the file's folder, then on the final tree with the working directory,
# so the Spec (and a run folder's spec.yaml) holds absolute paths.
_RESOLVERS: list[Callable[[dict, Path], dict]] = []


def register_resolver(fn: Callable[[dict, Path], dict]) -> Callable[[dict, Path], dict]:
    """Make fn(tree, folder) -> tree turn the relative paths of plain spec data absolute; a decorator."""
    if fn not in _RESOLVERS:
        _RESOLVERS.append(fn)
    return fn


def _resolve(tree: dict, folder: Path) -> dict:
    for fn in _RESOLVERS:
        tree = fn(tree, folder)
    return tree


def deep_merge(base: dict, child: dict) -> dict:
    """child over base; mappings merge key by key, except that a section whose `kind`
    changes is replaced whole (the base's kind-specific keys would not fit the new kind)."""
    out = dict(base)
    for key, value in child.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and old.get("kind", value.get("kind")) == value.get(
                "kind", old.get("kind")):
            out[key] = deep_merge(old, value)
        else:
            out[key] = value
    return out


MAX_DEPTH = 64  # nesting levels a spec document may have (real specs use under 8)
MAX_BYTES = 1 << 20  # the largest spec file read (real specs are a few kB)
MAX_BASES = 32  # levels of `base:` files (real specs use one or two)


class _TooDeep(yaml.YAMLError):
    def __init__(self, what: str, mark):
        self.problem, self.problem_mark = what, mark


class SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses documents nested deeper than MAX_DEPTH (they would exhaust Python's
    recursion) and aliases that refer to a node from inside it (a cyclic document)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._open: list = []  # anchors of the nodes being composed, outermost first

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise _TooDeep(f"alias *{event.anchor} refers to its own anchor (a cyclic document)",
                               event.start_mark)
            return super().compose_node(parent, index)
        if len(self._open) >= MAX_DEPTH:
            raise _TooDeep(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self._open.append(getattr(event, "anchor", None))
        try:
            return super().compose_node(parent, index)
        finally:
            self._open.pop()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: where (line, column) and what."""
    mark = getattr(exc, "problem_mark", None)
    pos = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    return pos + ": " + str(getattr(exc, "problem", None) or getattr(exc, "reason", None) or type(exc).__name__)


def parse_yaml(text: str, path: str, what: str) -> Any:
    """yaml.safe_load of `text` with SpecLoader's depth and cycle limits; a failure is SpecError(path, what + where
    and why), e.g. what = "specs/x.yaml: invalid YAML" or "value '[' is not valid YAML"."""
    try:
        return yaml.load(text, Loader=SpecLoader)  # noqa: S506 (a SafeLoader: plain data only)
    except yaml.YAMLError as exc:
        raise SpecError(path, f"{what}{_yaml_problem(exc)}") from None
    except RecursionError:  # a backstop: SpecLoader's depth limit keeps documents well inside the stack
        raise SpecError(path, f"{what}: nested too deeply") from None


def _read_yaml(path: Path, where: str) -> dict:
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte, ...
        found = False
    if not found:
        raise SpecError(where, f"spec file not found: {path}")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SpecError("", f"{path}: cannot read the spec file: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise SpecError("", f"{path}: not a spec file: larger than {MAX_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError("", f"{path}: not a text file: invalid UTF-8 at byte {exc.start}") from None
    data = parse_yaml(text, "", f"{path}: invalid YAML")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError("", f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_tree(path: str | Path, _stack: tuple[Path, ...] = (), _where: str = "") -> dict:
    """The merged plain data of a spec file and its `base:` chain (paths relative to each file)."""
    try:
        path = Path(path).resolve()
    except (OSError, ValueError):  # a NUL byte, a name the file system refuses
        raise SpecError(_where, f"spec file not found: {describe(str(path))}") from None
    if len(_stack) >= MAX_BASES:
        raise SpecError(f"{_stack[-1].name}: base", f"more than {MAX_BASES} levels of base: files")
    if path in _stack:
        chain = " -> ".join(p.name for p in (*_stack, path))
        raise SpecError(f"{_stack[-1].name}: base", f"inheritance cycle: {chain}")
    data = _read_yaml(path, _where or str(path))
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise SpecError(f"{path.name}: base", f"expected a file name or a list of them, got {describe(bases)}")
    merged: dict = {}
    for b in bases:
        merged = deep_merge(merged, load_tree(path.parent / b, (*_stack, path), f"{path.name}: base"))
    return deep_merge(merged, data)


def apply_override(data: dict, override: str) -> dict:
    """Apply one `a.b.c=value` (value parsed as YAML) to plain spec data, returning a new dict."""
    if "=" not in override:
        raise SpecError("--set", f"expected KEY.PATH=VALUE, got {describe(override)}")
    key, _, raw = override.partition("=")
    keys = key.strip().split(".")
    if not all(keys):
        raise SpecError("--set", f"bad key path {describe(key)} in {describe(override)}")
    value = parse_yaml(raw, f"--set {key}", f"value {describe(raw)} is not valid YAML") if raw.strip() else ""
    out = dict(data)
    node = out
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            raise SpecError(".".join(keys[: i + 1]), f"--set {key}: cannot set a key inside {describe(child)}")
        node[k] = dict(child)
        node = node[k]
    node[keys[-1]] = value
    return out


def load_spec(path: str | Path | None = None, overrides: Iterable[str] = (), *, data: dict | None = None,
              check: bool = True) -> Spec:
    """Load and validate a spec file (or plain `data`), applying `--set` overrides in order.

    Relative file paths in `data:` are made absolute (the spec file's folder, else the working directory).
    With `check`, cross-section rules (graph vs latent_dim, dataset names, ...) are checked too, by the
    functions registered with register_check (build.validate_spec, which builds the latent graph); every
    problem is a SpecError naming the key path.
    """
    tree: dict[str, Any] = load_tree(path) if path is not None else dict(data or {})
    if path is not None:
        tree = _resolve(tree, Path(path).resolve().parent)  # load_tree read it, so the path resolves
    for ov in overrides:
        tree = apply_override(tree, ov)
    tree = _resolve(tree, Path.cwd())
    spec = from_dict(Spec, tree)
    if check:
        if not _CHECKS:  # importing causalrep imports causalrep.build, which registers them: never in practice
            raise RuntimeError("load_spec(check=True): no cross-section checks are registered (causalrep.build "
                               "registers validate_spec when causalrep is imported)")
        for fn in _CHECKS:
            fn(spec)
    return spec


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML (what a run folder's spec.yaml holds; load_spec reads it back)."""
    return yaml.safe_dump(to_dict(spec), sort_keys=False)
