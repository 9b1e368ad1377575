"""Spec loading: schema errors name the key path; base inheritance; overrides."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from causalrep.errors import SpecError
from causalrep.spec import dump_spec, load_spec
from causalrep.spec.schema import ChainGraphSpec, SAESpec

from conftest import tiny_data


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(text))
    return p


GOOD = """
name: s
data: {name: dsprites, resolution: 32}
graph: {kind: chain, nodes: 3}
model:
  kind: sae
  latent_dim: 6
  encoder: {kind: conv, blocks: 6, channels: 16}
  decoder: {kind: structural, blocks: 6, channels: 16}
train: {steps: 10, lr: 5e-4}
"""


def test_good_spec_types_and_defaults(tmp_path):
    spec = load_spec(write(tmp_path, "s.yaml", GOOD))
    assert isinstance(spec.model, SAESpec) and isinstance(spec.graph, ChainGraphSpec)
    assert spec.train.lr == 5e-4  # PyYAML reads "5e-4" as a string; the float field accepts it
    assert spec.train.batch_size == 128 and spec.train.betas == (0.9, 0.999)  # 001 A.2.2 defaults
    assert spec.model.decoder.mechanism_hidden == (64, 64, 64)  # A.2.1: three hidden layers


def test_dump_and_reload_is_identity(tmp_path):
    spec = load_spec(write(tmp_path, "s.yaml", GOOD))
    again = load_spec(write(tmp_path, "r.yaml", dump_spec(spec)))
    assert again == spec


@pytest.mark.parametrize("override, path, words", [
    (["model.decoder.blocks=twelve"], "model.decoder.blocks", "expected int, got 'twelve'"),
    (["model.decoder.colour=red"], "model.decoder.colour", "unknown key for kind 'structural'"),
    (["bogus=1"], "bogus", "unknown key"),
    (["train.loss=l1"], "train.loss", "'l1' is not allowed; allowed: bce, mse"),
    (["model.kind=transformer"], "model.kind", "unknown kind 'transformer'"),
    (["graph.nodes=4"], "graph.nodes", "4 nodes do not split model.latent_dim=6 evenly"),
    (["data.name=mnist"], "data.name", "unknown dataset 'mnist'"),
    (["train.steps=0"], "train.steps", "expected an int in [1, 1e9], got 0"),
    (["train.lr=-1"], "train.lr", "expected a number > 0, got -1.0"),
    (["train.lr=.nan"], "train.lr", "expected a finite number, got nan"),
    (["train.lr=1e999"], "train.lr", "expected a finite number, got '1e999'"),
    (["train.betas=[0.9, 1.0]"], "train.betas[1]", "expected a number in [0, 1), got 1.0"),
    (["data.split=[0.7, -0.1, 0.4]"], "data.split[1]", "expected a number in [0, 1], got -0.1"),
    (["graph.node_dim=0"], "graph.node_dim", "expected an int in [1, 4096], got 0"),
    (["seed=-1"], "seed", "expected an int in [0, 4294967295], got -1"),
    (["data.split=[0.5, 0.5, 0.5]"], "data.split", "summing to 1"),
    (["train.lr=fast"], "train.lr", "expected float, got 'fast'"),
    (["data.resolution=4"], "data.resolution", "expected an int in [8, 512], got 4"),
    (["name=../up"], "name", "expected a folder name"),  # run folders are OUT/NAME/...: never outside OUT
    (["name=a/b"], "name", "expected a folder name"),
    (["name=.hidden"], "name", "expected a folder name"),
    ([f"name={'x' * 201}"], "name", "at most 200 characters"),
    (["data.resolution=30"], "model.encoder.blocks", "6 blocks pool/upsample 2 times, which does not divide"),
])
def test_errors_name_the_key_path(tmp_path, override, path, words):
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, "s.yaml", GOOD), override)
    assert info.value.path == path
    assert words in str(info.value)
    assert str(info.value).startswith(path + ": ")
    assert "\n" not in str(info.value)  # one line


def test_cycle_is_rejected_with_the_cycle_printed(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(data=tiny_data("sae", 3, {"kind": "dag", "nodes": ["a", "b", "c"],
                                             "edges": [["a", "b"], ["b", "c"], ["c", "a"]]}))
    assert info.value.path == "graph.edges"
    assert "cycle: a -> b -> c -> a" in str(info.value)


def test_dag_edge_to_unknown_node(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec(data=tiny_data("sae", 2, {"kind": "dag", "nodes": ["a", "b"], "edges": [["a", "z"]]}))
    assert info.value.path == "graph.edges[0]" and "unknown node 'z'" in str(info.value)


def test_missing_required_key():
    data = tiny_data("sae")
    del data["model"]["latent_dim"]
    with pytest.raises(SpecError) as info:
        load_spec(data=data)
    assert info.value.path == "model.latent_dim" and "missing required key" in str(info.value)


def test_base_inheritance_deep_merges_relative_to_the_file(tmp_path):
    (tmp_path / "bases").mkdir()
    write(tmp_path / "bases", "common.yaml", """
        seed: 3
        data: {name: dsprites, resolution: 32}
        train: {steps: 7, batch_size: 16}
    """)
    child = write(tmp_path, "child.yaml", """
        base: bases/common.yaml
        name: child
        model: {kind: ae, latent_dim: 4, encoder: {kind: conv, blocks: 3}, decoder: {kind: conv, blocks: 3}}
        train: {steps: 9}
    """)
    spec = load_spec(child)
    assert (spec.seed, spec.train.steps, spec.train.batch_size, spec.data.resolution) == (3, 9, 16, 32)


def test_base_section_with_a_new_kind_is_replaced_not_merged(tmp_path):
    write(tmp_path, "b.yaml", """
        name: b
        data: {name: dsprites, resolution: 32}
        model: {kind: bvae, latent_dim: 4, beta: 4.0, encoder: {kind: conv, blocks: 3}, decoder: {kind: conv, blocks: 3}}
    """)
    child = write(tmp_path, "c.yaml", """
        base: b.yaml
        model: {kind: ae, latent_dim: 4, encoder: {kind: conv, blocks: 3}, decoder: {kind: conv, blocks: 3}}
    """)
    assert load_spec(child).model.KIND == "ae"  # bvae's `beta` did not leak into the ae section


def test_missing_base(tmp_path):
    child = write(tmp_path, "c.yaml", "base: nowhere.yaml\nname: c\n")
    with pytest.raises(SpecError) as info:
        load_spec(child)
    assert info.value.path == "c.yaml: base" and "nowhere.yaml" in str(info.value)


def test_base_cycle(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "a.yaml")
    assert "inheritance cycle: a.yaml -> b.yaml -> a.yaml" in str(info.value)


@pytest.mark.parametrize("override, words", [
    ("train.steps", "expected KEY.PATH=VALUE"),
    ("train..steps=3", "bad key path"),
    ("train.steps=[1", "not valid YAML"),
])
def test_bad_override(tmp_path, override, words):
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, "s.yaml", GOOD), [override])
    assert words in str(info.value)


def test_override_is_yaml_typed(tmp_path):
    spec = load_spec(write(tmp_path, "s.yaml", GOOD), ["train.betas=[0.5, 0.9]", "evaluate.sampling=[prior]",
                                                       "track.repo=null"])
    assert spec.train.betas == (0.5, 0.9) and spec.evaluate.sampling == ("prior",) and spec.track.repo is None


def test_safe_load_only(tmp_path):
    p = write(tmp_path, "s.yaml", GOOD + "description: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError) as info:
        load_spec(p)
    assert "invalid YAML" in str(info.value)
