"""Property-based tests of `python -m causalrep.run --check` (in process): on any spec file, override or file
in place of a spec it either accepts the spec (exit 0, `ok: ...`) or exits 2 with at most 5 lines on stderr
naming the key path or file, never a traceback; nothing is trained or written. The inputs are derived from the
schema (tests/fuzz/fuzzing.py) and the shipped specs."""
from __future__ import annotations

import os

import attrs
import pytest
import yaml

pytest.importorskip("hypothesis")  # the dev extra installs it (make venv)

from hypothesis import example, given
from hypothesis import strategies as st

from causalrep.spec import dump_spec, load_spec
from causalrep.spec.convert import to_dict

from fuzzing import (EXTREMES, HUGE_TEXT, NON_FINITE, ODD_TEXT, ROOT, assert_clean, del_in, get_in,
                     is_kinded_base, is_numeric, leaf_types, members, out_of_range_strategy, run_cli,
                     section_classes, set_in, shown, spec_keys, value_strategy, wrap_number,
                     wrong_type_strategy, write_yaml)

SPECS = sorted(p for p in (ROOT / "specs").glob("*.yaml"))
BASES = {p.stem: load_spec(p) for p in SPECS}  # every shipped spec, resolved: the valid starting points
TREES = {name: to_dict(spec) for name, spec in BASES.items()}
KEYS = {name: spec_keys(spec) for name, spec in BASES.items()}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A scratch folder for the generated files; and no Experiment may start (nothing is trained or written)."""
    import causalrep.experiment

    def refuse(*args, **kwargs):
        raise AssertionError("--check started an experiment")

    before = sorted(os.listdir(ROOT))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(causalrep.experiment.Experiment, "__init__", refuse)
        yield tmp_path_factory.mktemp("fuzz")
    assert sorted(os.listdir(ROOT)) == before, "--check wrote into the working directory"


# ------------------------------------------------------------------------ one key of a valid spec, mutated
MUTATIONS = ("in_range", "wrong_type", "out_of_range", "extreme", "non_finite", "unknown_key", "missing_key",
             "kind", "huge_string", "unicode")


@st.composite
def mutated_specs(draw):
    """(plain spec data, what was done, the key path the error must name or None, whether it must fail)."""
    name = draw(st.sampled_from(sorted(BASES)))
    tree, keys = TREES[name], KEYS[name]
    how = draw(st.sampled_from(MUTATIONS))
    numeric = [k for k in keys if is_numeric(k.hint)]
    if how == "in_range":
        k = draw(st.sampled_from([k for k in keys if not section_classes(k.hint)]))
        return set_in(tree, k.path, draw(value_strategy(k.hint, k.field))), how, None, False
    if how == "wrong_type":
        k = draw(st.sampled_from(keys))
        return set_in(tree, k.path, draw(wrong_type_strategy(k.hint))), how, k.path, True
    if how == "out_of_range":
        k = draw(st.sampled_from(numeric))
        return set_in(tree, k.path, draw(out_of_range_strategy(k.field.metadata["range"], k.hint))), how, k.path, True
    if how in ("extreme", "non_finite"):
        k = draw(st.sampled_from(numeric))
        n = draw(st.sampled_from(EXTREMES if how == "extreme" else NON_FINITE))
        return set_in(tree, k.path, wrap_number(k.hint, n)), how, k.path, how == "non_finite"
    sections = [""] + [k.path for k in keys if section_classes(k.hint) and get_in(tree, k.path) is not None]
    if how == "unknown_key":
        where = draw(st.sampled_from(sections))
        section = get_in(tree, where) if where else tree
        key = draw(st.one_of(ODD_TEXT, HUGE_TEXT, st.integers(), st.just("kind")).filter(
            lambda k: k not in section and k != "base" and (k != "kind" or where == "")))
        data = set_in(tree, where, {**section, key: 1}) if where else {**tree, key: 1}
        return data, how, shown(where) if where else None, True
    if how == "missing_key":
        required = [k.path for k in keys if k.field.default is attrs.NOTHING]
        kinded = [k.path for k in keys if any(is_kinded_base(c) for c in members(k.hint)) and get_in(tree, k.path)]
        path = draw(st.sampled_from(required + [f"{s}.kind" for s in kinded]))
        return del_in(tree, path), how, path, True
    if how == "kind":
        kinded = [k for k in keys if any(is_kinded_base(c) for c in members(k.hint)) and get_in(tree, k.path)]
        k = draw(st.sampled_from(kinded))
        base = next(c for c in members(k.hint) if is_kinded_base(c))
        kind = draw(st.one_of(st.sampled_from(base.KINDS.names()), ODD_TEXT))
        return set_in(tree, f"{k.path}.kind", kind), how, None, False
    # huge or odd strings in a key that takes strings
    texts = [k for k in keys if str in leaf_types(k.hint) and not k.field.metadata.get("choices")]
    k = draw(st.sampled_from(texts))
    text = draw(HUGE_TEXT if how == "huge_string" else ODD_TEXT)
    listy = all(k2 is not str for k2 in members(k.hint)) and str in leaf_types(k.hint)
    return set_in(tree, k.path, [text] if listy else text), how, None, False


@given(mutated_specs(), st.booleans())
@example(({**TREES["quickstart"], "train": {**TREES["quickstart"]["train"], "lr": -1.0}}, "out_of_range",
          "train.lr", True), True)
@example(({**TREES["quickstart"], "train": {**TREES["quickstart"]["train"], "batch_size": 0}}, "out_of_range",
          "train.batch_size", True), False)
@example(({**TREES["quickstart"], "data": {**TREES["quickstart"]["data"], "resolution": 30}}, "in_range",
          None, False), True)
def test_check_on_a_spec_with_one_key_mutated(work, case, allow_unicode):
    data, how, where, must_fail = case
    path = write_yaml(work / "spec.yaml", data, allow_unicode=allow_unicode)
    rc, out, err = run_cli("--check", str(path))
    line = assert_clean(rc, out, err, where=(where, str(path)) if where else ())
    if must_fail:
        assert rc == 2, f"{how} at {where} was accepted"
        assert where is None or line.startswith(f"error: {where}") or str(path) in line, line
    if rc == 0:  # an accepted spec round-trips: load -> dump -> load gives an equal object
        spec = load_spec(path)
        again = work / "again.yaml"
        again.write_text(dump_spec(spec))
        assert load_spec(again) == spec


# ------------------------------------------------------------------------ --set overrides
def override_strategy(keys) -> st.SearchStrategy[str]:
    paths = [k.path for k in keys]
    key = st.one_of(st.sampled_from(paths), st.sampled_from(paths).map(lambda p: p + ".x"), ODD_TEXT,
                    st.just(""), st.just("a..b"))
    k_by_path = {k.path: k for k in keys}

    def value_for(p):
        k = k_by_path.get(p)
        options = [ODD_TEXT, st.sampled_from(["[1", "{a: *x}", "!!python/object/apply:os.system [ls]", "&a [*a]",
                                             "[" * 100 + "]" * 100, ".nan", "1e999", "-1", "0", "null", "{}"])]
        if k is not None and not section_classes(k.hint):
            options.append(value_strategy(k.hint, k.field).map(
                lambda v: yaml.safe_dump(v, default_flow_style=True, width=10 ** 9).strip().removesuffix("\n...")))
        return st.one_of(options)

    return key.flatmap(lambda p: st.one_of(value_for(p).map(lambda v: f"{p}={v}"), st.just(p)))


@st.composite
def overridden_specs(draw):
    name = draw(st.sampled_from(sorted(BASES)))
    sets = draw(st.lists(override_strategy(KEYS[name]), min_size=1, max_size=3))
    return name, sets


@given(overridden_specs(), st.booleans())
@example(("quickstart", ["train.lr=-1"]), True)
@example(("quickstart", ["description=" + "[" * 5000 + "]" * 5000]), True)
@example(("quickstart", ["-x"]), False)
def test_check_with_random_overrides(work, case, glued):
    name, sets = case
    args = [a for s in sets for a in ((f"--set={s}",) if glued else ("--set", s))]
    rc, out, err = run_cli("--check", str(SPECS[[p.stem for p in SPECS].index(name)]), *args)
    assert_clean(rc, out, err)


# ------------------------------------------------------------------------ files that are not specs
@given(st.one_of(st.binary(max_size=4096),
                 st.binary(min_size=1, max_size=64).map(lambda b: b"name: x\ndata: {name: dsprites}\n" + b + b"\xff"),
                 st.sampled_from([b"\x00" * 100, b"\xff\xfe" + "name: x".encode("utf-16-le"), b"\xef\xbb\xbf",
                                  b"name: x\x00\n", bytes(range(256)), b"\x1b[31mred\x1b[0m: 1\n"])),
       st.booleans())
def test_random_bytes_in_place_of_a_file(work, raw, as_base):
    junk = work / "junk.bin"
    junk.write_bytes(raw)
    path = junk
    if as_base:  # the bytes are the base: file of a valid spec
        path = write_yaml(work / "child.yaml", {"base": "junk.bin", **TREES["quickstart"]})
    rc, out, err = run_cli("--check", str(path))
    assert_clean(rc, out, err)
    if rc == 2 and not as_base:
        assert str(junk) in err or err.startswith("error: ") and ": " in err, err


def test_the_three_traceback_classes_are_one_line_errors(work):
    binary = work / "binary.yaml"
    binary.write_bytes(b"name: x\n\x89PNG\r\n\x1a\n\x00\xff")
    rc, _, err = run_cli("--check", str(binary))
    assert rc == 2 and err == f"error: {binary}: not a text file: invalid UTF-8 at byte 8\n"
    quickstart = str(ROOT / "specs" / "quickstart.yaml")
    rc, _, err = run_cli("--check", quickstart, "--set", "train.lr=-1.0")
    assert rc == 2 and err == "error: train.lr: expected a number > 0, got -1.0\n"
    deep = work / "deep.yaml"
    deep.write_text("name: x\ndescription: " + "[" * 100_000 + "]" * 100_000 + "\n")
    rc, _, err = run_cli("--check", str(deep))
    assert rc == 2 and err == f"error: {deep}: invalid YAML (line 2, column 77): nested more than 64 levels deep\n"


# ------------------------------------------------------------------------ deep nesting, anchors, tags
@st.composite
def deep_documents(draw):
    depth = draw(st.integers(1, 3000))
    style = draw(st.sampled_from(["flow_list", "flow_map", "block_map", "block_list", "mixed"]))
    if style == "flow_list":
        value = "[" * depth + "1" + "]" * depth
    elif style == "flow_map":
        value = "{a: " * depth + "1" + "}" * depth
    elif style == "mixed":
        value = "[{a: " * depth + "1" + "}]" * depth
    else:
        depth = min(depth, 400)  # block indentation grows by two spaces a level
        lines = [("  " * i) + ("a:" if style == "block_map" else "-") for i in range(depth)]
        value = "\n" + "\n".join(lines) + " 1"
    key = draw(st.sampled_from(["description", "data", "model", "train.betas", "zzz"]))
    text = yaml.safe_dump({k: v for k, v in TREES["quickstart"].items() if k != key.split(".")[0]}, sort_keys=False)
    return text + f"{key.split('.')[0]}: {value}\n", depth


@given(deep_documents())
def test_deeply_nested_documents(work, case):
    text, depth = case
    path = work / "deep.yaml"
    path.write_text(text)
    rc, out, err = run_cli("--check", str(path))
    assert_clean(rc, out, err)
    if depth > 64:
        assert rc == 2 and str(path) in err and "nested more than 64 levels deep" in err, err


TAGGED = ["!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system", "!!binary aGVsbG8=",
          "!!set {a, b}", "!!omap [{a: 1}, {b: 2}]", "!!pairs [[a, 1]]", "!!timestamp 2001-12-14", "!foo bar",
          "!!float .nan", "!!float '1e999'", "!!int 0x1F", "!!str 12", "!!null ''", "!!bool yes", "*nowhere",
          "&x 3", "&x [*x]", "&y {a: *y}", "!!merge <<", "{<<: [1, 2]}", "{<<: *nowhere}", "!<tag:yaml.org,2002:str> a",
          "!!int 99999999999999999999999999", "!!float 1_000.5", "0b101", "0o17", "1:20", "=", "? complex key"]


@st.composite
def tagged_documents(draw):
    name = draw(st.sampled_from(sorted(BASES)))
    tree, keys = TREES[name], KEYS[name]
    k = draw(st.sampled_from(keys))
    snippet = draw(st.sampled_from(TAGGED))
    marker = "__FUZZ_MARKER__"
    text = yaml.safe_dump(set_in(tree, k.path, marker), sort_keys=False)
    if draw(st.booleans()):  # move a whole section behind an anchor: defined in an extra key, used by alias
        section = draw(st.sampled_from([s for s in tree if isinstance(tree[s], dict)]))
        body = yaml.safe_dump(tree[section], default_flow_style=True, width=10 ** 9).strip()
        text = text.replace(f"\n{section}:", f"\n{section}: *sec\nx-old-{section}:", 1)
        text = f"x-anchor: &sec {body}\n" + text if draw(st.booleans()) else text + f"x-anchor: &sec {body}\n"
    return text.replace(marker, snippet, 1)


@given(tagged_documents())
@example("name: &n x\ndata: {name: *n}\nmodel: {kind: ae, latent_dim: 4}\nx: &a [*a]\n")
@example("name: x\nmodel: &m {kind: ae, latent_dim: 4, encoder: *m}\ndata: {name: dsprites}\n")
def test_anchors_aliases_and_tags(work, text):
    path = work / "tagged.yaml"
    path.write_text(text)
    rc, out, err = run_cli("--check", str(path))
    assert_clean(rc, out, err)
    if "python/" in text:
        assert rc == 2 and "invalid YAML" in err


# ------------------------------------------------------------------------ base: chains, cycles, missing files
BASE_NAMES = st.one_of(st.integers(0, 4).map(lambda i: f"f{i}.yaml"),
                       st.sampled_from(["nowhere.yaml", "", ".", "/dev/zero", "/", "a\x00b", "x" * 300, "../..",
                                        "f0.yaml/"]),
                       st.integers(), st.none(), st.just({"a": 1}))


@given(st.lists(st.one_of(BASE_NAMES, st.lists(BASE_NAMES, max_size=3)), min_size=1, max_size=4), st.booleans())
@example(["f1.yaml", "f0.yaml"], True)
@example(["f0.yaml"], False)
@example([["f1.yaml", "f2.yaml"], "f2.yaml", "nowhere.yaml"], True)
def test_base_chains_cycles_and_missing_files(work, bases, split):
    folder = work / "bases"
    folder.mkdir(exist_ok=True)
    for f in folder.iterdir():
        f.unlink()
    tree = TREES["quickstart"]
    for i, b in enumerate(bases):
        # either every file is a whole spec, or the spec is split over the files (the root only names it)
        data = dict(tree) if not split or i == len(bases) - 1 else {"description": f"file {i}"}
        if b is not None:
            data = {"base": b, **data}
        write_yaml(folder / f"f{i}.yaml", data)
    root = folder / "f0.yaml"
    rc, out, err = run_cli("--check", str(root))
    line = assert_clean(rc, out, err)
    refs = [b if isinstance(b, list) else [b] for b in bases]
    files = {f"f{i}.yaml": i for i in range(len(bases))}
    if all(isinstance(r, str) and r in files for rs in refs for r in rs):  # all bases are the files: a cycle is named
        seen, cyclic = set(), False

        def visit(i, stack):
            nonlocal cyclic
            for r in refs[i]:
                j = files[r]
                cyclic |= j in stack
                if j not in stack and j not in seen:
                    visit(j, stack | {j})
            seen.add(i)

        visit(0, {0})
        assert (rc == 2 and "inheritance cycle" in line) == cyclic, line
