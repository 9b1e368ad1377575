"""Load a spec: YAML (safe_load only) -> `base:` inheritance with deep merge -> `--set` overrides -> Spec."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from ..errors import SpecError
from .convert import from_dict, to_dict
from .schema import Spec


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


def _read_yaml(path: Path, where: str) -> dict:
    if not path.is_file():
        raise SpecError(where, f"spec file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpecError("", f"{path}: invalid YAML{pos}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError("", f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_tree(path: str | Path, _stack: tuple[Path, ...] = (), _where: str = "") -> dict:
    """The merged plain data of a spec file and its `base:` chain (paths relative to each file)."""
    path = Path(path).resolve()
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
        raise SpecError(f"{path.name}: base", f"expected a file name or a list of them, got {bases!r}")
    merged: dict = {}
    for b in bases:
        merged = deep_merge(merged, load_tree(path.parent / b, (*_stack, path), f"{path.name}: base"))
    return deep_merge(merged, data)


def apply_override(data: dict, override: str) -> dict:
    """Apply one `a.b.c=value` (value parsed as YAML) to plain spec data, returning a new dict."""
    if "=" not in override:
        raise SpecError("--set", f"expected KEY.PATH=VALUE, got {override!r}")
    key, _, raw = override.partition("=")
    keys = key.strip().split(".")
    if not all(keys):
        raise SpecError("--set", f"bad key path {key!r} in {override!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise SpecError(f"--set {key}", f"value {raw!r} is not valid YAML") from None
    out = dict(data)
    node = out
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            raise SpecError(".".join(keys[: i + 1]), f"--set {key}: cannot set a key inside {child!r}")
        node[k] = dict(child)
        node = node[k]
    node[keys[-1]] = value
    return out


def load_spec(path: str | Path | None = None, overrides: Iterable[str] = (), *, data: dict | None = None,
              check: bool = True) -> Spec:
    """Load and validate a spec file (or plain `data`), applying `--set` overrides in order.

    With `check`, cross-section rules (graph vs latent_dim, dataset names, ...) are checked too,
    by building the latent graph; every problem is a SpecError naming the key path.
    """
    tree: dict[str, Any] = load_tree(path) if path is not None else dict(data or {})
    for ov in overrides:
        tree = apply_override(tree, ov)
    spec = from_dict(Spec, tree)
    if check:
        from ..build import validate_spec  # the builder owns the cross-section rules

        validate_spec(spec)
    return spec


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML (what a run folder's spec.yaml holds; load_spec reads it back)."""
    return yaml.safe_dump(to_dict(spec), sort_keys=False)
