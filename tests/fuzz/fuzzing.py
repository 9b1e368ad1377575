"""What the fuzz tests share: Hypothesis profiles, strategies derived from the spec schema by introspection
(attrs fields, type hints, `choices`, `range` and defaults; no hand list of keys), and an in-process
`python -m causalrep.run --check` that captures what it prints.

Profiles: `quick` (the test suite's, well under a minute) and `long` (10,000 examples per property, for release
checks): CAUSALREP_FUZZ_PROFILE=long python -m pytest tests/fuzz. CAUSALREP_FUZZ_EXAMPLES=N sets the quick
profile's examples per property (default 40).
"""
from __future__ import annotations

import io
import math
import os
import re
import typing
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import attrs
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from causalrep.spec.convert import Kinded, Range, key_text, to_dict
from causalrep.spec.schema import Spec

ROOT = Path(__file__).resolve().parents[2]

settings.register_profile("quick", max_examples=int(os.environ.get("CAUSALREP_FUZZ_EXAMPLES", 40)), deadline=None,
                          derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=10_000, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = os.environ.get("CAUSALREP_FUZZ_PROFILE", "quick")
settings.load_profile(PROFILE)

# strings a user could paste into a spec: control characters, line separators, a lone surrogate, bidi
# overrides, emoji, YAML-special words
ODD_TEXT = st.one_of(
    st.text(max_size=30),
    st.text(st.sampled_from(["\x00", "\n", "\r", "\t", "\x1b", "\x85", "\u2028", "\u202e", "\ud800", "\ufeff",
                             "💥", "é", "ø", ":", "#", "&", "*", "!", "{", "[", "'", '"', "-", ".", "/", " "]),
            max_size=30),
    st.sampled_from(["yes", "no", "null", "~", "1e5", "0x1F", ".nan", "-.inf", "2001-12-14", "<<", "=", "=="]),
)
HUGE_TEXT = st.integers(10_000, 300_000).map(lambda n: "x" * n)


# ------------------------------------------------------------------------ the schema, by introspection
def is_kinded_base(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Kinded) and getattr(tp, "KIND", None) is None


def section_classes(tp: Any) -> list[type]:
    """The attrs classes a type hint holds (a kinded base stands for its registered kinds)."""
    if isinstance(tp, type) and attrs.has(tp):
        return [tp]
    return [c for a in typing.get_args(tp) for c in section_classes(a)]


def members(tp: Any) -> tuple:
    """A union's members (a plain hint is its own only member)."""
    origin = typing.get_origin(tp)
    return typing.get_args(tp) if origin is typing.Union or str(origin) == "<class 'types.UnionType'>" else (tp,)


def leaf_types(tp: Any) -> set:
    """The scalar types a hint bottoms out in (through unions, lists and mapping values)."""
    args = typing.get_args(tp)
    if not args:
        return {tp}
    if typing.get_origin(tp) is dict:
        args = args[1:]
    return {leaf for a in args for leaf in leaf_types(a)}


def is_numeric(tp: Any) -> bool:
    return bool(leaf_types(tp) & {int, float})


def all_sections() -> list[type]:
    """Every spec class reachable from Spec, through every registered kind."""
    seen: list[type] = []

    def visit(cls: type):
        subs = [sub for _, sub in cls.KINDS.items()] if is_kinded_base(cls) else [cls]
        for sub in subs:
            if sub in seen:
                continue
            seen.append(sub)
            hints = typing.get_type_hints(sub)
            for f in attrs.fields(sub):
                for c in section_classes(hints[f.name]):
                    visit(c)

    visit(Spec)
    return seen


@attrs.frozen
class Key:
    """One key of a resolved spec: its path, attrs field, type hint and the spec class that owns it."""

    path: str
    field: attrs.Attribute
    hint: Any
    owner: type


def spec_keys(spec: Any, prefix: str = "") -> list[Key]:
    """Every key of a resolved spec object (nested sections included), derived from attrs.fields."""
    out = []
    hints = typing.get_type_hints(type(spec))
    for f in attrs.fields(type(spec)):
        path = f"{prefix}.{f.name}" if prefix else f.name
        out.append(Key(path, f, hints[f.name], type(spec)))
        value = getattr(spec, f.name)
        if attrs.has(type(value)):
            out += spec_keys(value, path)
    return out


def get_in(tree: dict, path: str) -> Any:
    node = tree
    for k in path.split("."):
        node = node[k]
    return node


def set_in(tree: dict, path: str, value: Any) -> dict:
    """A copy of `tree` with the key at `path` set to `value` (a missing path is created)."""
    keys = path.split(".")
    out = dict(tree)
    node = out
    for k in keys[:-1]:
        node[k] = dict(node.get(k) or {})
        node = node[k]
    node[keys[-1]] = value
    return out


def del_in(tree: dict, path: str) -> dict:
    keys = path.split(".")
    out = set_in(tree, path, None)
    node = out
    for k in keys[:-1]:
        node = node[k]
    del node[keys[-1]]
    return out


# ------------------------------------------------------------------------ valid values, from the schema
def _int_bounds(rng: Range) -> tuple[int | None, int | None]:
    lo = hi = None
    if rng.lo is not None:
        lo = math.floor(rng.lo) + 1 if rng.lo_open or rng.lo != math.floor(rng.lo) else int(rng.lo)
    if rng.hi is not None:
        hi = math.ceil(rng.hi) - 1 if rng.hi_open or rng.hi != math.ceil(rng.hi) else int(rng.hi)
    return lo, hi


def number_strategy(tp: type, rng: Range | None) -> st.SearchStrategy:
    """Numbers of type `tp` inside the key's declared range (its bounds are drawn often)."""
    if tp is int:
        lo, hi = _int_bounds(rng) if rng else (None, None)
        return st.integers(min_value=lo, max_value=hi)
    kw = dict(allow_nan=False, allow_infinity=False)
    if rng is not None:
        kw.update(min_value=rng.lo, max_value=rng.hi, exclude_min=rng.lo_open and rng.lo is not None,
                  exclude_max=rng.hi_open and rng.hi is not None)
    return st.floats(**kw)


def value_strategy(tp: Any, f: attrs.Attribute | None = None, depth: int = 0) -> st.SearchStrategy:
    """Plain YAML data that the schema accepts for type hint `tp` under field `f`'s choices and range."""
    meta = f.metadata if f is not None else {}
    choices, rng = meta.get("choices"), meta.get("range")
    options = []
    for m in members(tp):
        origin, args = typing.get_origin(m), typing.get_args(m)
        if m is type(None):
            options.append(st.none())
        elif is_kinded_base(m) or (isinstance(m, type) and attrs.has(m)):
            options.append(section_strategy(m))
        elif origin in (list, tuple):
            options.append(st.lists(value_strategy(args[0], f, depth + 1), max_size=4))
        elif origin is dict:
            options.append(st.dictionaries(st.text(min_size=1, max_size=8), value_strategy(args[1], f, depth + 1),
                                           max_size=3))
        elif m is bool:
            options.append(st.booleans())
        elif m in (int, float):
            options.append(number_strategy(m, rng))
        elif m is str and meta.get("pattern") is not None:  # a string key with a declared form (e.g. name)
            options.append(st.from_regex(meta["pattern"].regex, fullmatch=True))
        elif m is str:
            options.append(st.sampled_from(choices) if choices else ODD_TEXT)
        else:
            raise TypeError(f"no strategy for {m!r}")
    return st.one_of(options)


def default_data(f: attrs.Attribute) -> Any:
    default = f.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()
    return to_dict(default)


def section_strategy(cls: type) -> st.SearchStrategy[dict]:
    """Plain data of one spec section; a kinded base draws one of its registered kinds."""
    if is_kinded_base(cls):
        return st.one_of([section_strategy(sub).map(lambda d, k=kind: {"kind": k, **d})
                          for kind, sub in cls.KINDS.items()])
    hints = typing.get_type_hints(cls)
    required, optional = {}, {}
    for f in attrs.fields(cls):
        values = value_strategy(hints[f.name], f)
        if f.default is attrs.NOTHING:
            required[f.name] = values
        else:  # a key left at its default half the time keeps cross-field rules (split sums to 1, ...) likely
            optional[f.name] = st.one_of(st.just(default_data(f)), values)
    return st.fixed_dictionaries(required, optional=optional)


def spec_data() -> st.SearchStrategy[dict]:
    """Plain data of a whole spec, every section and kind drawn from the schema."""
    return section_strategy(Spec)


# ------------------------------------------------------------------------ invalid values, from the schema
EXTREMES = [0, -1, 2 ** 31, 2 ** 63, -2 ** 63, 2 ** 64, 10 ** 100, 10 ** 400, 1e308, -1e308, 5e-324, -0.0]
NON_FINITE = [math.nan, math.inf, -math.inf, 10 ** 400, "1e999", "nan", "-inf"]


WRONG = [{"a": 1}, ["x"], [{"x": 1}], [[1, 2]], True, "twelve", "", 7, -2.5, None, {"kind": 3}]


def accepts(tp: Any, value: Any) -> bool:
    """Whether the schema's converter takes `value` for hint `tp` (decides which candidates are wrong types)."""
    from causalrep.errors import SpecError
    from causalrep.spec.convert import convert

    try:
        convert(tp, value, "x")
    except SpecError:
        return False
    return True


def wrong_type_strategy(tp: Any) -> st.SearchStrategy:
    """Values that are not of type `tp` at all (so the error must name this key or one inside it)."""
    return st.sampled_from([v for v in WRONG if not accepts(tp, v)])


def wrap_number(tp: Any, n: Any) -> Any:
    """`n` where hint `tp` takes a number: itself, in a list, or as a mapping's value."""
    for m in members(tp):
        if m in (int, float):
            return n
    for m in members(tp):
        origin, args = typing.get_origin(m), typing.get_args(m)
        if origin in (list, tuple) and is_numeric(args[0]):
            return [wrap_number(args[0], n)]
        if origin is dict and is_numeric(args[1]):
            return {"k": wrap_number(args[1], n)}
    raise TypeError(f"{tp!r} takes no number")


def out_of_range_strategy(rng: Range, tp: Any) -> st.SearchStrategy:
    """Numbers just outside or far outside the key's declared range, placed where the key takes numbers."""
    ints = float not in leaf_types(tp)
    step = 1 if ints else 1e-6
    bad = []
    if rng.lo is not None:
        bad += [rng.lo if rng.lo_open else rng.lo - step, rng.lo - 1000, -1e30]
    if rng.hi is not None:
        bad += [rng.hi if rng.hi_open else rng.hi + step, rng.hi * 10 + 1, 1e30]
    if ints:
        bad = [int(b) for b in bad if float(b).is_integer()]
    bad = [b for b in bad if b not in rng]
    return st.sampled_from(bad).map(lambda b: wrap_number(tp, b))


# ------------------------------------------------------------------------ the CLI, in process
def run_cli(*argv: str) -> tuple[int, str, str]:
    """python -m causalrep.run ARGV, in this process: (exit status, stdout, stderr)."""
    from causalrep.run import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


WHERE = re.compile(r"^(?:error: |python -m causalrep\.run: error: )(.+?): \S")


def assert_clean(rc: int, out: str, err: str, *, where: tuple[str, ...] = ()) -> str:
    """The CLI's contract on any input: exit 0 with an `ok:` line, or exit 2 with at most 5 lines on stderr
    whose error line names where the problem is (a key path, a file, --set); never a traceback.
    With `where`, the error must name one of those (a key path prefix or a file). Returns the error line."""
    assert "Traceback" not in out + err, err
    assert rc in (0, 2), f"exit status {rc}: {err}"
    lines = err.strip().splitlines()
    if rc == 0:
        assert out.startswith("ok: "), out
        return ""
    assert 1 <= len(lines) <= 5, f"{len(lines)} lines on stderr:\n{err}"
    line = lines[-1]
    m = WHERE.match(line)
    assert m and m.group(1).strip(), f"the error does not say where: {line!r}"
    if where:
        assert any(line.startswith(f"error: {w}") or w in line for w in where), f"expected {where} in {line!r}"
    return line


def write_yaml(path: Path, data: Any, *, allow_unicode: bool = True) -> Path:
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=allow_unicode)
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return path


def shown(path: str) -> str:
    """A key path as errors show it (odd keys quoted by key_text)."""
    return ".".join(key_text(k) for k in path.split("."))
