"""Property-based tests of the spec schema: every numeric key declares its range, and any spec the schema
accepts round-trips (from_dict -> to_dict -> from_dict, and load -> dump -> load through a file)."""
from __future__ import annotations

import typing

import attrs
import pytest
import yaml

pytest.importorskip("hypothesis")  # the dev extra installs it (make venv)

from hypothesis import assume, given

from causalrep.errors import SpecError
from causalrep.spec import dump_spec, load_spec
from causalrep.spec.convert import Range, from_dict, to_dict
from causalrep.spec.schema import Spec

from fuzzing import all_sections, is_numeric, number_strategy, spec_data


def test_every_numeric_key_declares_a_valid_range():
    missing, checked = [], 0
    for cls in all_sections():
        hints = typing.get_type_hints(cls)
        for f in attrs.fields(cls):
            if is_numeric(hints[f.name]):
                checked += 1
                if not isinstance(f.metadata.get("range"), Range):
                    missing.append(f"{cls.__name__}.{f.name}")
    assert checked > 80 and not missing, f"numeric keys without a range=: {', '.join(missing)}"


@pytest.mark.parametrize("text, inside, outside", [
    ("> 0", [1e-300, 5e-4, 1e300], [0, -0.0, -1, float("nan"), float("inf")]),
    (">= 1", [1, 2 ** 70], [0, 0.999]),
    ("[0, 1]", [0, 0.5, 1], [-1e-9, 1.0000001]),
    ("[0, 1)", [0, 0.999], [1, -0.1]),
    ("(0, 1]", [1e-9, 1], [0, 1.5]),
    ("[1, 1e9]", [1, 10 ** 9], [0, 10 ** 9 + 1]),
])
def test_range_syntax(text, inside, outside):
    rng = Range.parse(text)
    assert all(v in rng for v in inside) and not any(v in rng for v in outside)
    with pytest.raises(SpecError, match=rf"^k\[0\]: expected (an int|a number) "):
        rng.check([outside[0]], "k")


@pytest.mark.parametrize("bad", ["0", "> x", "[1, 0]", "(0 1)", "[0, 1", "=> 0"])
def test_bad_range_text_fails_at_definition(bad):
    with pytest.raises(ValueError, match="bad range"):
        Range.parse(bad)


def test_a_directly_built_section_is_held_to_its_ranges():
    from causalrep.spec.schema import TrainSpec

    with pytest.raises(ValueError, match=r"lr: expected a number > 0, got -1.0"):
        TrainSpec(lr=-1.0)


def test_range_strategies_stay_inside():
    from hypothesis import find

    rng = Range.parse("(0, 1]")
    assert find(number_strategy(float, rng), lambda v: v > 0.9) in rng


@given(spec_data())
def test_a_schema_valid_spec_round_trips(tmp_path_factory, data):
    try:
        spec = from_dict(Spec, data)
    except SpecError:  # a rule between keys the strategies do not know (data.split sums to 1, ...)
        assume(False)
    assert from_dict(Spec, to_dict(spec)) == spec
    assert from_dict(Spec, yaml.safe_load(dump_spec(spec))) == spec
    path = tmp_path_factory.getbasetemp() / "roundtrip.yaml"
    path.write_text(dump_spec(spec))  # what a run folder's spec.yaml holds
    assert load_spec(path, check=False) == spec  # through the file reader and its YAML limits too
