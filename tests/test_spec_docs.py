"""docs/spec.md is generated from the schema (tools/gen_spec_docs.py) and must stay in step with it."""
from __future__ import annotations

import importlib.util
import re
import typing
from pathlib import Path

import attrs
import pytest
import yaml

from causalrep.spec.convert import Kinded
from causalrep.spec.schema import Spec

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "gen_spec_docs.py"
DOC = ROOT / "docs" / "spec.md"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("gen_spec_docs", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tool) -> str:
    return tool.generate()


# ------------------------------------------------------------------------ helpers (independent of the tool)
def _spec_classes(tp) -> list[type]:
    """The attrs classes a type hint mentions (through unions, lists and mappings)."""
    if isinstance(tp, type) and attrs.has(tp):
        return [tp]
    return [c for arg in typing.get_args(tp) for c in _spec_classes(arg)]


def _is_kinded_base(cls: type) -> bool:
    return issubclass(cls, Kinded) and getattr(cls, "KIND", None) is None


def _expected_tables(path: str, cls: type):
    """(section path, kind or None, class) for every spec class reachable from `cls` at `path`,
    through every registered kind, derived from attrs.fields."""
    if _is_kinded_base(cls):
        items = [(kind, sub) for kind, sub in cls.KINDS.items()]
    else:
        items = [(None, cls)]
    for kind, sub in items:
        yield path, kind, sub
        hints = typing.get_type_hints(sub)
        for f in attrs.fields(sub):
            for nested in _spec_classes(hints[f.name]):
                yield from _expected_tables(f"{path}.{f.name}", nested)


def _split(text: str, level: int) -> dict[str, str]:
    """Heading text -> body for the headings of one level (a body runs to the next heading of that level
    or higher)."""
    marks = "#" * level
    out: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^(#+) (.*)$", line)
        if m and len(m.group(1)) <= level:
            current = m.group(2).strip() if len(m.group(1)) == level else None
            if current is not None:
                assert current not in out, f"duplicate heading {marks} {current}"
                out[current] = ""
            continue
        if current is not None:
            out[current] += line + "\n"
    return out


def _has_row(body: str, key: str) -> bool:
    return re.search(rf"^\| `{re.escape(key)}` \|", body, re.M) is not None


# ------------------------------------------------------------------------ (a) the doc is up to date
def test_doc_matches_generator(generated):
    assert DOC.is_file(), "docs/spec.md is missing: run make docs"
    assert DOC.read_text() == generated, "docs/spec.md is out of date: run make docs"


def test_check_flag(tool, tmp_path, capsys):
    out = tmp_path / "spec.md"
    out.write_text(tool.generate())
    assert tool.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("| `steps` |", "| `stepz` |"))
    assert tool.main(["--check", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "is out of date: run make docs" in err
    assert "-| `stepz` |" in err and "+| `steps` |" in err  # a unified diff
    assert tool.main(["--out", str(out)]) == 0
    assert tool.main(["--check", "--out", str(out)]) == 0


def test_generation_is_deterministic(tool, generated):
    assert tool.generate() == generated


def test_stale_example_fails_generation(tool, monkeypatch):
    bad = dict(tool.EXAMPLES)
    bad[("graph", "chain")] = [("stale", "graph:\n  kind: chain\n  nodez: 3\n")]
    monkeypatch.setattr(tool, "EXAMPLES", bad)
    with pytest.raises(RuntimeError, match="graph"):
        tool.generate()


# ------------------------------------------------------------------------ (b) every key is documented
def test_every_top_level_key_has_a_row_and_a_section(generated):
    h2 = _split(generated, 2)
    top = h2["Top-level keys"]
    for f in attrs.fields(Spec):
        assert re.search(rf"^\| \[`{f.name}`\]", top, re.M), f"top-level key {f.name} missing from the summary"
        assert f"`{f.name}`" in h2, f"no section for top-level key {f.name}"


def test_every_key_of_every_kind_in_its_section(generated):
    h2 = _split(generated, 2)
    hints = typing.get_type_hints(Spec)
    checked = 0
    for f in attrs.fields(Spec):
        section = h2[f"`{f.name}`"]
        classes = _spec_classes(hints[f.name])
        if not classes:  # a scalar top-level key: its own row
            assert _has_row(section, f.name)
            checked += 1
            continue
        for path, kind, cls in _expected_tables(f.name, classes[0]):
            assert f"`{path}`" in h2, f"no section for {path}"
            body = h2[f"`{path}`"]
            if kind is not None:
                h3 = _split(body, 3)
                heading = f"`{path}` kind `{kind}`"
                assert heading in h3, f"no subsection for {path} kind {kind}"
                body = h3[heading]
                assert _has_row(body, "kind"), f"{path} kind {kind}: no `kind` row"
                if cls.__doc__:
                    assert " ".join(cls.__doc__.split()) in body, f"{path} kind {kind}: docstring missing"
                assert "```yaml" in body, f"{path} kind {kind}: no YAML example"
            for field in attrs.fields(cls):
                assert _has_row(body, field.name), f"{path}{f' kind {kind}' if kind else ''}: key {field.name} " \
                                                   f"is not documented"
                help_text = field.metadata.get("help", "").replace("|", "\\|")
                assert help_text in body
                checked += 1
    assert checked > 30


# ------------------------------------------------------------------------ (c) the YAML examples parse
def test_yaml_examples_parse():
    text = DOC.read_text()
    blocks = re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S)
    assert blocks, "docs/spec.md has no ```yaml examples"
    for block in blocks:
        data = yaml.safe_load(block)
        assert isinstance(data, dict) and data, f"YAML example is empty or not a mapping:\n{block}"
