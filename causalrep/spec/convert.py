"""Typed conversion of plain YAML data into frozen attrs spec classes, with key-path errors."""
from __future__ import annotations

import types
import typing
from typing import Any

import attrs

from ..errors import SpecError
from ..registry import Registry


def spec_field(default: Any = attrs.NOTHING, *, help: str, choices: tuple | None = None):
    """An attrs field carrying its documentation (`help`) and allowed values (`choices`)."""
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple (or attrs.Factory) for a mutable default")
    return attrs.field(default=default, metadata={"help": help, "choices": choices})


class Kinded:
    """Base of a polymorphic spec section: the `kind` key picks the registered subclass."""

    KINDS: Registry  # set on each polymorphic base


def kinded_base(what: str):
    """Decorator for the base class of a polymorphic section (graph, model, encoder, ...)."""

    def deco(cls):
        cls.KINDS = Registry(what)
        return cls

    return deco


def register_kind(base, name: str):
    """Register a frozen attrs subclass as `kind: name` of the polymorphic base."""

    def deco(cls):
        cls.KIND = name
        base.KINDS.register(name)(cls)
        return cls

    return deco


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        if attrs.has(tp):
            return "mapping"
        return tp.__name__
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    return str(tp)


def describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def convert(tp: Any, value: Any, path: str) -> Any:
    """Convert `value` to type `tp`, raising SpecError(path, ...) on a mismatch."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(arg, value, path)
            except SpecError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise SpecError(path, f"expected {_type_name(tp)}, got {describe(value)}")
    if isinstance(tp, type) and attrs.has(tp):
        return from_dict(tp, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SpecError(path, f"expected {_type_name(tp)}, got {describe(value)}")
        return tuple(convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(path, f"expected {_type_name(tp)}, got {describe(value)}")
        return {convert(args[0], k, path): convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads `5e-4` (no dot) as a string (YAML 1.1 float regex)
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"spec type {tp!r} at {path} is not supported by the converter")
    raise SpecError(path, f"expected {_type_name(tp)}, got {describe(value)}")


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build the frozen attrs class `cls` from a mapping; every problem names its key path."""
    if not isinstance(data, dict):
        raise SpecError(path, f"expected a mapping, got {describe(data)}")
    if issubclass(cls, Kinded) and getattr(cls, "KIND", None) is None:
        kind = data.get("kind")
        kpath = f"{path}.kind" if path else "kind"
        if kind is None:
            raise SpecError(kpath, f"missing; allowed: {', '.join(cls.KINDS.names())}")
        if kind not in cls.KINDS:
            raise SpecError(kpath, f"unknown kind {kind!r}; allowed: {', '.join(cls.KINDS.names())}")
        cls = cls.KINDS.get(kind)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    allowed = [*fields] + (["kind"] if issubclass(cls, Kinded) else [])
    kwargs = {}
    for key, value in data.items():
        kp = f"{path}.{key}" if path else str(key)
        if key == "kind" and issubclass(cls, Kinded):
            continue
        if key not in fields:
            what = f" for kind {cls.KIND!r}" if issubclass(cls, Kinded) else ""
            raise SpecError(kp, f"unknown key{what}; allowed: {', '.join(allowed)}")
        val = convert(hints[key], value, kp)
        choices = fields[key].metadata.get("choices")
        if choices is not None:
            for v in (val if isinstance(val, tuple) else (val,)):
                if v not in choices:
                    raise SpecError(kp, f"{v!r} is not allowed; allowed: {', '.join(map(str, choices))}")
        kwargs[key] = val
    for name, f in fields.items():
        if name not in kwargs and f.default is attrs.NOTHING:
            kp = f"{path}.{name}" if path else name
            raise SpecError(kp, f"missing required key ({_type_name(hints[name])}): {f.metadata.get('help', '')}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise SpecError(path, str(exc)) from None


def to_dict(spec: Any) -> Any:
    """Plain YAML-ready data of a spec (tuples -> lists, `kind` first in polymorphic sections)."""
    if attrs.has(type(spec)):
        out = {"kind": spec.KIND} if isinstance(spec, Kinded) else {}
        for f in attrs.fields(type(spec)):
            out[f.name] = to_dict(getattr(spec, f.name))
        return out
    if isinstance(spec, (list, tuple)):
        return [to_dict(v) for v in spec]
    if isinstance(spec, dict):
        return {k: to_dict(v) for k, v in spec.items()}
    return spec
