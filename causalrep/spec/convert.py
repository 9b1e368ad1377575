"""Typed conversion of plain YAML data into frozen attrs spec classes, with key-path errors."""
from __future__ import annotations

import math
import re
import types
import typing
from typing import Any

import attrs

from ..errors import SpecError, one_line
from ..registry import Registry

MAX_ITEMS = 1024  # the longest list a spec key takes (layer widths, node names, edges, factor values)


@attrs.frozen
class Range:
    """The valid values of a numeric key, written as an interval: "> 0", ">= 1", "[0, 1]", "(0, 1]", "[1, 1e9]".

    It applies to every number in the key's value (each item of a list, each value of a mapping); `null`,
    strings and booleans are not numbers and are left to the key's type. Bounds may be written as ints or
    floats ("1e9"); the text is shown as written in errors and in docs/spec.md.
    """

    text: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    _ONE_SIDED = re.compile(r"^(>=|<=|>|<)\s*(\S+)$")
    _INTERVAL = re.compile(r"^([\[(])\s*([^,\s]+)\s*,\s*([^,\s\])]+)\s*([\])])$")

    @classmethod
    def parse(cls, text: str) -> "Range":
        text = " ".join(text.split())
        try:
            m = cls._ONE_SIDED.match(text)
            if m:
                op, x = m.group(1), float(m.group(2))
                if op.startswith(">"):
                    return cls(text, lo=x, lo_open=op == ">")
                return cls(text, hi=x, hi_open=op == "<")
            m = cls._INTERVAL.match(text)
            if m:
                lo, hi = float(m.group(2)), float(m.group(3))
                if lo <= hi:
                    return cls(text, lo=lo, hi=hi, lo_open=m.group(1) == "(", hi_open=m.group(4) == ")")
        except ValueError:
            pass
        raise ValueError(f"bad range {text!r}: write '> 0', '>= 1', '[0, 1]', '(0, 1]' or '[1, 1e9]'")

    def __contains__(self, v: float) -> bool:
        if isinstance(v, float) and not math.isfinite(v):  # ints are compared exactly, however large
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True

    @property
    def phrase(self) -> str:
        """How an error names the range: "> 0", "in [0, 1]"."""
        return self.text if self.text[0] in "<>" else f"in {self.text}"

    def check(self, value: Any, path: str) -> None:
        """Raise SpecError(path-of-the-number, ...) for the first number in `value` outside the range."""
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return
        if isinstance(value, (int, float)):
            if value not in self:
                what = "an int" if isinstance(value, int) else "a number"
                raise SpecError(path, f"expected {what} {self.phrase}, got {describe(value)}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self.check(v, f"{path}[{i}]")
        elif isinstance(value, dict):
            for k, v in value.items():
                self.check(v, f"{path}.{key_text(k)}")


def _validator(rule: "Range | Pattern | KeyPattern"):
    """An attrs validator holding a directly constructed spec class to the rule (a Range, Pattern or KeyPattern)
    too."""
    def validate(instance, attribute, value):
        try:
            rule.check(value, attribute.name)
        except SpecError as exc:
            raise ValueError(str(exc)) from None

    return validate


class Pattern:
    """A string key's valid form: a regular expression the whole string must match (re.fullmatch), and the
    words an error and docs/spec.md use for it."""

    def __init__(self, regex: str, phrase: str):
        self.regex, self.phrase, self._re = regex, phrase, re.compile(regex)

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, str) and not self._re.fullmatch(value):
            raise SpecError(path, f"expected {self.phrase}, got {describe(value)}")


class KeyPattern:
    """A mapping key's valid form (`keys=` of a field): every key of the mapping must match the Pattern; an error
    names the key's own path (e.g. `overrides.'train..lr': expected a dotted key path ...`)."""

    def __init__(self, pattern: Pattern):
        self.pattern, self.phrase = pattern, pattern.phrase

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k in value:
                self.pattern.check(k, f"{path}.{key_text(k)}")


def spec_field(default: Any = attrs.NOTHING, *, help: str, choices: tuple | None = None, range: str | None = None,
               pattern: Pattern | None = None, keys: Pattern | None = None):
    """An attrs field carrying its documentation (`help`), allowed values (`choices`) and, for a numeric key,
    its valid range (`range`, an interval such as "> 0" or "[0, 1]"; see Range), or for a string key its
    valid form (`pattern`), or for a mapping the valid form of its keys (`keys`)."""
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple (or attrs.Factory) for a mutable default")
    rng = Range.parse(range) if range is not None else None
    key_rule = KeyPattern(keys) if keys is not None else None
    validators = [_validator(rule) for rule in (rng, pattern, key_rule) if rule is not None]
    return attrs.field(default=default, metadata={"help": help, "choices": choices, "range": rng, "pattern": pattern,
                                                  "keys": key_rule},
                       validator=validators or None)


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
    if tp is Any:
        return "any value"
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
    """A value as an error message shows it: short, on one line."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        return f"an int of {len(str(abs(value)))} digits"
    return one_line(repr(value), 80)


def key_text(key: Any) -> str:
    """A mapping key as a key path shows it (odd or long keys quoted and shortened, never over lines)."""
    if isinstance(key, str) and key.isprintable() and 0 < len(key) <= 64 and "." not in key:
        return key
    return one_line(repr(key), 64)


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
        if len(value) > MAX_ITEMS:
            raise SpecError(path, f"expected at most {MAX_ITEMS} items, got {len(value)}")
        return tuple(convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(path, f"expected {_type_name(tp)}, got {describe(value)}")
        if len(value) > MAX_ITEMS:
            raise SpecError(path, f"expected at most {MAX_ITEMS} keys, got {len(value)}")
        return {convert(args[0], k, path): convert(args[1], v, f"{path}.{key_text(k)}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and len(value) <= 64:  # PyYAML reads `5e-4` (no dot) as a string (YAML 1.1)
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            try:
                number = float(number)
            except OverflowError:  # an int beyond float's range
                number = math.inf
            if not math.isfinite(number):
                raise SpecError(path, f"expected a finite number, got {describe(value)}")
            return number
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
        if not isinstance(kind, str) or kind not in cls.KINDS:
            raise SpecError(kpath, f"unknown kind {describe(kind)}; allowed: {', '.join(cls.KINDS.names())}")
        cls = cls.KINDS.get(kind)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    allowed = [*fields] + (["kind"] if issubclass(cls, Kinded) else [])
    kwargs = {}
    for key, value in data.items():
        kp = f"{path}.{key_text(key)}" if path else key_text(key)
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
                    raise SpecError(kp, f"{describe(v)} is not allowed; allowed: {', '.join(map(str, choices))}")
        rng = fields[key].metadata.get("range")
        if rng is not None:
            rng.check(val, kp)
        pattern = fields[key].metadata.get("pattern")
        if pattern is not None:
            pattern.check(val, kp)
        key_rule = fields[key].metadata.get("keys")
        if key_rule is not None:
            key_rule.check(val, kp)
        kwargs[key] = val
    for name, f in fields.items():
        if name not in kwargs and f.default is attrs.NOTHING:
            kp = f"{path}.{name}" if path else name
            raise SpecError(kp, f"missing required key ({_type_name(hints[name])}): {f.metadata.get('help', '')}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # a validator's "key: ..." (or "key[1].sub: ...") names the key path
        key, sep, rest = str(exc).partition(": ")
        if sep and re.split(r"[.\[]", key, maxsplit=1)[0] in fields:
            raise SpecError(f"{path}.{key}" if path else key, rest) from None
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
