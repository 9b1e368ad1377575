"""The model registry is the only one: every spec kind has a class with its own from_spec in its own file,
build.py dispatches without naming kinds, and a model's default graph is declared by its class."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import causalrep.build
import causalrep.models
from causalrep.build import build_graph, build_model, model_kinds
from causalrep.errors import SpecError
from causalrep.models.base import MODELS, LatentModel, Trainable, register_model
from causalrep.spec.schema import ModelSpec

from conftest import tiny_spec

BUILD = Path(inspect.getsourcefile(causalrep.build))
MODELS_DIR = Path(inspect.getsourcefile(causalrep.models)).parent


def test_every_spec_kind_has_a_registered_model_class_with_its_own_from_spec():
    assert sorted(MODELS.names()) == sorted(ModelSpec.KINDS.names()) == model_kinds()
    for kind in ModelSpec.KINDS.names():
        cls = MODELS.get(kind)
        assert issubclass(cls, Trainable) and kind in cls.kinds
        assert isinstance(vars(cls).get("from_spec"), classmethod), f"{cls.__name__} inherits from_spec"
        # one model = one file: the class and its from_spec live together
        assert inspect.getsourcefile(cls.from_spec) == inspect.getsourcefile(cls)


def test_vae_and_bvae_share_one_class():
    assert MODELS.get("vae") is MODELS.get("bvae") and MODELS.get("vae").kinds == ("vae", "bvae")
    assert build_model(tiny_spec("bvae")).beta == 2.0 and build_model(tiny_spec("vae")).beta == 1.0


def _string_constants(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


def test_build_py_names_no_model_kind_and_imports_at_the_top():
    source = BUILD.read_text()
    named = sorted(k for k in model_kinds() if k in _string_constants(BUILD) or f'"{k}"' in source or f"'{k}'" in source)
    assert not named, f"build.py dispatches on model kind names: {named}"
    for gone in ("BUILDERS", "STRUCTURAL_KINDS", "E402"):
        assert gone not in source
    tree = ast.parse(source)
    top = {id(n) for n in tree.body}
    late = [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in top]
    assert not late, f"imports inside functions in build.py at lines {late}"


def test_models_never_import_the_builder_or_the_experiment():
    for path in sorted(MODELS_DIR.glob("*.py")):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom) and n.level:
                assert n.module is None or n.module.split(".")[0] not in ("build", "experiment"), \
                    f"{path.name}:{n.lineno} imports ..{n.module}"


def test_default_graphs_are_declared_by_the_model_classes():
    chain = sorted(k for k in model_kinds() if MODELS.get(k).default_graph == "chain")
    assert chain == ["asae", "sae"]  # the structural decoders' SAE-D ordering (001 sec 2, 000 sec 3)
    for kind in ("ae", "vae", "sae", "asae", "wae"):
        spec = tiny_spec(kind)
        assert spec.graph is None and build_graph(spec).kind == MODELS.get(kind).default_graph


def test_build_graph_reads_the_class_declaration(monkeypatch):
    spec = tiny_spec("ae")
    assert build_graph(spec).kind == "independent"
    monkeypatch.setattr(MODELS.get("ae"), "default_graph", "chain")
    graph = build_graph(spec)
    assert graph.kind == "chain" and len(graph.nodes) == spec.model.latent_dim


def test_a_spec_kind_without_a_model_class_fails_loudly(monkeypatch):
    spec = tiny_spec("wae")
    monkeypatch.delitem(MODELS._items, "wae")
    with pytest.raises(LookupError, match="without a registered model class.*wae"):
        model_kinds()
    with pytest.raises(SpecError, match=r"^model\.kind: no model class for 'wae'; allowed: .*\bae\b"):
        build_model(spec)
    with pytest.raises(SpecError, match=r"^model\.kind: "):
        causalrep.build.validate_spec(spec)


def test_register_model_refuses_what_it_cannot_register():
    class NoFromSpec(LatentModel):
        pass

    class Fine(LatentModel):
        @classmethod
        def from_spec(cls, spec, graph, ctx):
            return cls(graph=graph)

    with pytest.raises(TypeError, match="from_spec"):
        register_model("no_from_spec")(NoFromSpec)
    with pytest.raises(KeyError, match="'ae'"):
        register_model("not_a_kind_yet", "ae")(Fine)
    with pytest.raises(ValueError, match="default_graph"):
        register_model("not_a_kind_yet", default_graph="dag")
    with pytest.raises(ValueError):
        register_model()
    assert "no_from_spec" not in MODELS and "not_a_kind_yet" not in MODELS  # nothing half-registered
