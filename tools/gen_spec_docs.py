"""Generate docs/spec.md, the spec reference, from the attrs schemas in causalrep/spec/schema.py and (its
"Sweep files" section) causalrep/spec/sweep.py.

    python tools/gen_spec_docs.py --out docs/spec.md     # write it (`make docs`)
    python tools/gen_spec_docs.py --check                # exit 1 (with a diff) if docs/spec.md is stale

Every table is derived from the schema (attrs fields, their `help`/`choices` metadata, defaults and the
`KINDS` registries of the polymorphic sections); only the prose and the YAML examples are written here,
and every example is parsed with `yaml.safe_load` and converted with `from_dict` while generating, so an
example that no longer fits the schema fails generation instead of going stale.
"""
from __future__ import annotations

import argparse
import difflib
import inspect
import re
import shlex
import sys
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python tools/gen_spec_docs.py` puts tools/ first on sys.path, not the repo
    sys.path.insert(0, str(ROOT))

import attrs  # noqa: E402
import yaml  # noqa: E402

from causalrep.errors import SpecError  # noqa: E402
from causalrep.spec.convert import MAX_ITEMS, Kinded, _type_name, from_dict, to_dict  # noqa: E402
from causalrep.spec.load import MAX_BASES, MAX_BYTES, MAX_DEPTH, apply_override, deep_merge  # noqa: E402
from causalrep.spec.schema import Spec  # noqa: E402
from causalrep.spec.sweep import EXTENSION_PREFIX, SweepSpec  # noqa: E402

DEFAULT_OUT = "docs/spec.md"
STALE_MESSAGE = "is out of date: run make docs"

# ------------------------------------------------------------------------------------------------ examples
# YAML examples, keyed by (section path, kind). Each one is written as it would appear in a spec file
# (nested under its section's keys) and is validated by `_check_example` below. A registered kind with no
# entry here gets an example generated from its defaults when it has no required keys; otherwise
# generation fails and asks for one to be added.
EXAMPLES: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("data.perturbation", "pattern"): [
        ("002 sec 4 with s tied to a ground-truth factor: the pattern slides with dSprites' posX index.",
         """\
data:
  name: dsprites
  perturbation:
    kind: pattern
    epsilon: 0.1
    factor: posX
"""),
        ("002 sec 4.1: s is the least-noisy latent of a trained beta-VAE run (pass its run folder).",
         """\
data:
  name: shapes3d
  perturbation: {kind: pattern, epsilon: 0.1, run: runs/bvae/2026-11-22T10-00-00, scale: 10.0}
"""),
    ],
    ("data.perturbation", "uniform"): [
        ("The control of 002 sec 5.3: uniform noise of the same magnitude.",
         """\
data:
  name: shapes3d
  perturbation: {kind: uniform, epsilon: 0.1}
"""),
    ],
    ("graph", "chain"): [
        ("SAE-6: six nodes u1 -> u2 -> ... -> u6; with `model.latent_dim: 12` each node gets 2 dims.",
         """\
graph:
  kind: chain
  nodes: 6
"""),
    ],
    ("graph", "dag"): [
        ("The pendulum: the pendulum angle and the light angle cause the shadow's position and length "
         "(4 nodes; with `model.latent_dim: 8` each node gets 2 dims).",
         """\
graph:
  kind: dag
  nodes: [pendulum_angle, light_angle, shadow_position, shadow_length]
  edges:
    - [pendulum_angle, shadow_position]
    - [pendulum_angle, shadow_length]
    - [light_angle, shadow_position]
    - [light_angle, shadow_length]
"""),
        ("Per-node sizes: `node_dims` overrides `node_dim` for the nodes it names (dims must add up to "
         "`model.latent_dim`, here 1 + 1 + 2 + 2 = 6).",
         """\
graph:
  kind: dag
  nodes: [pendulum_angle, light_angle, shadow_position, shadow_length]
  edges: [[pendulum_angle, shadow_position], [pendulum_angle, shadow_length],
          [light_angle, shadow_position], [light_angle, shadow_length]]
  node_dim: 1
  node_dims: {shadow_position: 2, shadow_length: 2}
"""),
        ("The dataset's own ground-truth graph (give either this or `nodes`/`edges`, not both).",
         """\
graph:
  kind: dag
  from_dataset: true
"""),
    ],
    ("graph", "learned"): [
        ("A CausalVAE-style learned adjacency over the pendulum's four variables, with one edge known and "
         "one ruled out.",
         """\
graph:
  kind: learned
  nodes: [pendulum_angle, light_angle, shadow_position, shadow_length]
  prior_edges: [[light_angle, shadow_position]]
  forbidden_edges: [[shadow_length, pendulum_angle]]
  dag_weight: 1.0
  sparsity: 0.01
  threshold: 0.3
"""),
    ],
    ("graph", "experts"): [
        ("Five competing mechanisms with winner-take-all assignment.",
         """\
graph:
  kind: experts
  experts: 5
  assignment: wta
"""),
    ],
    ("model", "ae"): [
        ("The paper's AE baseline (specs/ae.yaml).",
         """\
model:
  kind: ae
  latent_dim: 12
  encoder: {kind: conv, blocks: 12, channels: 64}
  decoder: {kind: conv, blocks: 12, channels: 64}
"""),
    ],
    ("model", "vae"): [
        ("A VAE; `beta: 1.0` is the plain ELBO.",
         """\
model:
  kind: vae
  latent_dim: 12
  beta: 1.0
"""),
    ],
    ("model", "bvae"): [
        ("The paper's beta-VAE baseline (specs/bvae.yaml).",
         """\
model:
  kind: bvae
  latent_dim: 12
  beta: 2.0
  encoder: {kind: conv, blocks: 12, channels: 64}
  decoder: {kind: conv, blocks: 12, channels: 64}
"""),
    ],
    ("model", "causalvae"): [
        ("CausalVAE on the pendulum (specs/causalvae_pendulum.yaml): 4 concepts x 4 dims, pair it with a "
         "`learned` graph whose nodes are the dataset's label names.",
         """\
graph:
  kind: learned
  nodes: [pendulum_angle, light_angle, shadow_position, shadow_length]
  node_dim: 4
  sparsity: 0.02
model:
  kind: causalvae
  latent_dim: 16
  graph_from: labels
"""),
    ],
    ("model", "sae"): [
        ("SAE-6 (specs/sae6.yaml): pair it with `graph: {kind: chain, nodes: 6}`.",
         """\
model:
  kind: sae
  latent_dim: 12
  encoder: {kind: conv, blocks: 12, channels: 64}
  decoder: {kind: structural, blocks: 12, channels: 64, mechanism_hidden: [64, 64, 64]}
"""),
    ],
    ("model", "wae"): [
        ("The paper's WAE baseline (specs/wae.yaml): lam = 10, IMQ kernel with C = 2 * 12 * 1.",
         """\
model:
  kind: wae
  latent_dim: 12
  lam: 10.0
  kernel_scale: 1.0
"""),
    ],
    ("model", "btcvae"): [
        ("beta-TC-VAE (specs/btcvae.yaml); `dataset_size: null` counts the train split.",
         """\
model:
  kind: btcvae
  latent_dim: 12
  alpha: 1.0
  beta: 6.0
  gamma: 1.0
  dataset_size: null
"""),
    ],
    ("model", "factorvae"): [
        ("FactorVAE (specs/factorvae.yaml) with Kim & Mnih's 6 x 1000 discriminator.",
         """\
model:
  kind: factorvae
  latent_dim: 12
  gamma: 10.0
  discriminator_hidden: [1000, 1000, 1000, 1000, 1000, 1000]
  discriminator_lr: 1.0e-4
"""),
    ],
    ("model", "laddervae"): [
        ("Ladder VAE (specs/laddervae.yaml): three stochastic layers of 4 dims, 10k warm-up steps.",
         """\
model:
  kind: laddervae
  latent_dim: 12
  layer_dims: [4, 4, 4]
  warmup_steps: 10000
  rung_width: 128
"""),
    ],
    ("model", "adaae"): [
        ("AdaAE-12 (specs/adaae12.yaml): the SAE-12 decoder with every Str-Tfm layer reading all 12 dims; "
         "no `graph:` (each latent dim is its own variable, 001 sec 3.1).",
         """\
model:
  kind: adaae
  latent_dim: 12
  layers: 12
  encoder: {kind: conv, blocks: 12, channels: 64, hidden: [128]}
  decoder: {kind: structural, blocks: 12, channels: 64, mechanism_hidden: [64, 64, 64]}
"""),
    ],
    ("model", "vlae"): [
        ("VLAE-12 (specs/vlae12.yaml): 12 rungs of one latent dim each.",
         """\
model:
  kind: vlae
  latent_dim: 12
  rungs: 12
  beta: 1.0
  rung_hidden: [32, 32, 32]
  encoder: {kind: conv, blocks: 12, channels: 64}
  decoder: {kind: conv, blocks: 12, channels: 64}
"""),
    ],
    ("model", "asae"): [
        ("6-ASAE (specs/asae6.yaml): six heads over overlapping 4x4 patches, two latent dims each, and the "
         "K = 12 structural decoder.",
         """\
model:
  kind: asae
  latent_dim: 12
  heads: 6
  encoder: {kind: attention, patch: 4, stride: 2, embed_dim: 384, hidden: [256], head_hidden: [64, 64, 64]}
  decoder: {kind: structural, blocks: 12, channels: 64, mechanism_hidden: [64, 64, 64]}
"""),
    ],
    ("model", "icm"): [
        ("The ICM committee of specs/icm_digits.yaml (004 Table 1 and appendix B); it needs "
         "`graph: {kind: experts, experts: 10}` (one expert per node) and `data: {name: icm_digits}`.",
         """\
model:
  kind: icm
  expert_layers: 7
  expert_channels: 32
  discriminator_channels: [[16, 16, 16], [32, 32], [64, 64]]
  discriminator_hidden: 1024
  discriminator_fakes: all
  init_iters: 500
  init_mse: 0.002
"""),
    ],
    ("model.encoder", "conv"): [
        ("A smaller backbone with a two-layer MLP head.",
         """\
model:
  encoder: {kind: conv, blocks: 6, channels: 32, hidden: [256, 128], groups: 8}
"""),
    ],
    ("model.decoder", "conv"): [
        ("A smaller hourglass decoder.",
         """\
model:
  decoder: {kind: conv, blocks: 6, channels: 32, hidden: [256]}
"""),
    ],
    ("model.decoder", "structural"): [
        ("The quickstart's structural decoder.",
         """\
model:
  decoder: {kind: structural, blocks: 6, channels: 32, mechanism_hidden: [32, 32, 32]}
"""),
    ],
}

# a complete spec, annotated (validated as a whole with from_dict(Spec, ...))
COMPLETE_EXAMPLE = """\
# specs/quickstart.yaml-like: a CPU-sized SAE-6 on procedural dSprites at 32x32
name: quickstart
seed: 0
description: SAE-6 on dSprites, small enough for a CPU
data: {name: dsprites, resolution: 32, split: [0.7, 0.1, 0.2]}
graph: {kind: chain, nodes: 6}          # 6 nodes x 1 dim = model.latent_dim
model:
  kind: sae
  latent_dim: 6
  encoder: {kind: conv, blocks: 6, channels: 32}
  decoder: {kind: structural, blocks: 6, channels: 32, mechanism_hidden: [32, 32, 32]}
train: {steps: 600, batch_size: 64, lr: 5.0e-4, loss: bce, checkpoint_every: 300, val_every: 300}
evaluate: {metrics: [reconstruction], sampling: [hybrid], val_samples: 1024}
track: {kind: jsonl}
"""

# the smallest valid spec; its fully resolved form (every default filled in) is printed in the doc
MINIMAL_EXAMPLE = """\
name: demo
data: {name: dsprites}
model: {kind: sae, latent_dim: 12}
"""

# `base:` inheritance: a shared base file and a child naming it (merged and validated while generating)
BASE_EXAMPLE = """\
# specs/base/paper_64.yaml: not a spec on its own (no name, no model)
seed: 0
data: {name: shapes3d, resolution: 64}
train: {steps: 100000, batch_size: 128, lr: 5.0e-4, checkpoint_every: 5000}
"""
CHILD_EXAMPLE = """\
# specs/sae6.yaml
base: base/paper_64.yaml          # relative to this file; a list of files is allowed too
name: sae6
graph: {kind: chain, nodes: 6}
model: {kind: sae, latent_dim: 12}
train: {steps: 20000}             # deep merge: the other train keys come from the base
"""

# `--set` overrides, applied to the merged base/child example above and validated while generating
SET_EXAMPLE = ["train.steps=200", "graph.nodes=4", "evaluate.sampling=[hybrid, prior]", "train.threads=null",
               "description=a quick check"]

# error examples: (description, plain spec data); each must raise a SpecError, printed as the CLI prints it
_VALID = {"name": "demo", "data": {"name": "dsprites"}, "model": {"kind": "sae", "latent_dim": 12}}
ERROR_EXAMPLES: list[tuple[str, dict]] = [
    ("a value of the wrong type", {**_VALID, "model": {"kind": "sae", "latent_dim": 12,
                                                       "encoder": {"kind": "conv", "blocks": "twelve"}}}),
    ("an unknown kind", {**_VALID, "graph": {"kind": "tree", "nodes": 3}}),
    ("a key the kind does not have (a typo)", {**_VALID, "model": {"kind": "ae", "latent_dims": 12}}),
    ("a value outside the allowed ones", {**_VALID, "train": {"loss": "l1"}}),
    ("a missing required key", {"name": "demo", "data": {"name": "dsprites"}, "model": {"kind": "vae"}}),
    ("a number outside its key's range", {**_VALID, "train": {"lr": -1.0}}),
    ("a number outside its key's range, in a list", {**_VALID, "data": {"name": "dsprites", "split": [0.8, -0.1, 0.3]}}),
    ("a number that is not finite", {**_VALID, "train": {"lr": float("nan")}}),
]

# a sweep file on a Slurm GPU cluster (validated as a whole with from_dict(SweepSpec, ...))
SWEEP_EXAMPLE = """\
# 001 sec 3.2 in a sweep: two models x 3 seeds, pre-trained without the ball, then the decoder alone on all
name: extrapolation
base: ../base/paper_64.yaml                  # relative to the sweep file
models:
  sae12: {graph: {kind: chain, nodes: 12}, model: {kind: sae, latent_dim: 12}}
  ae: {graph: null, model: {kind: ae, latent_dim: 12}}
seeds: [0, 1, 2]
overrides: {evaluate.metrics: [reconstruction]}
stages:
  - {name: neither, overrides: {data.exclude: {shape: [sphere]}, train.steps: 80000}}
  - {name: decoder, overrides: {train.init_from: "@neither", train.trainable: decoder, train.steps: 20000}}
heldout:
  ball: {include: {shape: [sphere]}}
launcher: slurm
slurm: {partition: gpu, gpus_per_task: 1, cpus_per_task: 8, mem: 64G, time_min: 720, array_parallelism: 6,
        sbatch: {account: proj42}}
"""
SWEEP_FILE = "specs/sweeps/x.yaml"  # how the error examples name the sweep file
_SWEEP = {"name": "x", "specs": ["../sae12.yaml"]}
SWEEP_ERROR_EXAMPLES: list[tuple[str, dict]] = [
    ("a seed that is not an int", {**_SWEEP, "seeds": [0, 1, "a"]}),
    ("an override key that is not a key path", {**_SWEEP, "overrides": {"train steps": 300}}),
    ("a stage referring to a later one", {**_SWEEP, "stages": [
        {"name": "enc", "overrides": {"train.init_from": "@pre"}}, {"name": "pre"}]}),
    ("a Slurm setting of the wrong form", {**_SWEEP, "launcher": "slurm", "slurm": {"mem": "64 GB"}}),
]


# ------------------------------------------------------------------------------------------------ helpers
def _doc(cls: type) -> str:
    """A class's own docstring (not inherited), as one paragraph."""
    doc = cls.__dict__.get("__doc__")
    return " ".join(inspect.cleandoc(doc).split()) if doc else ""


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")) if text else ""


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading text."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _yaml_inline(value: Any) -> str:
    """A value as it would be written in a spec, in YAML flow style on one line."""
    text = yaml.safe_dump(to_dict(value), default_flow_style=True, sort_keys=False, width=10 ** 6).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")].strip()
    return text


def _code(text: str) -> str:
    return f"`{text}`"


def _is_kinded_base(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Kinded) and getattr(tp, "KIND", None) is None


def _spec_classes(tp: Any) -> list[type]:
    """The attrs classes mentioned in a type hint (through unions, lists, mappings)."""
    if isinstance(tp, type) and attrs.has(tp):
        return [tp]
    out: list[type] = []
    for arg in typing.get_args(tp):
        out += _spec_classes(arg)
    return out


def _leaf_types(tp: Any) -> list:
    """The scalar types a type hint bottoms out in (through unions, lists and mappings' values)."""
    args = typing.get_args(tp)
    if not args:
        return [tp]
    if typing.get_origin(tp) is dict:
        args = args[1:]
    return [leaf for a in args for leaf in _leaf_types(a)]


class Doc:
    """Builds the markdown: sections are discovered by walking the schema from `Spec`."""

    def __init__(self):
        # path -> (class, [(owner path, owner kind, field)]): every nested spec section, in discovery order
        self.sections: dict[str, tuple[type, list[tuple[str, str | None, attrs.Attribute]]]] = {}

    # ---------------------------------------------------------------- types, defaults, allowed values
    @staticmethod
    def anchor(path: str) -> str:
        """The anchor of a section's heading, from its key path."""
        return _anchor(path)

    def type_text(self, tp: Any, path: str) -> str:
        if tp is type(None):
            return "`null`"
        if _is_kinded_base(tp):
            return f"one of the [`{path}` kinds](#{self.anchor(path)}) below"
        if isinstance(tp, type) and attrs.has(tp):
            return f"mapping (see [`{path}`](#{self.anchor(path)}))"
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            return " or ".join(self.type_text(a, path) for a in args)
        if origin in (list, tuple):
            return f"list of {self.type_text(args[0], path)}"
        if origin is dict:
            return f"mapping of {self.type_text(args[0], path)} to {self.type_text(args[1], path)}"
        return _type_name(tp)

    @staticmethod
    def default_text(f: attrs.Attribute) -> str:
        default = f.default
        if default is attrs.NOTHING:
            return "**required**"
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            if default.takes_self:
                return "computed"
            default = default.factory()
        return _code(_yaml_inline(default))

    @staticmethod
    def allowed_text(f: attrs.Attribute, tp: Any) -> str:
        rng = f.metadata.get("range")
        if rng is not None:  # a numeric key's valid range (schema.py `range=`), applying to each number in it
            text = _code(rng.text)
            members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
            if any(m in (int, float) for m in members):  # a number itself (or, in a union, a list of names)
                return text if str not in _leaf_types(tp) else f"{text} (as a number)"
            return f"each number {text}" if str in _leaf_types(tp) else f"each {text}"
        pattern = f.metadata.get("pattern")
        if pattern is not None:  # a string key's declared form (schema.py `pattern=`)
            return pattern.phrase
        keys = f.metadata.get("keys")
        if keys is not None:  # a mapping's keys' declared form (`keys=`)
            return f"keys: {keys.phrase}"
        choices = f.metadata.get("choices")
        if choices is not None:
            values = ", ".join(_code(_yaml_inline(c)) for c in choices)
            listy = typing.get_origin(tp) in (list, tuple)
            return f"each of {values}" if listy else values
        kinded = [c for c in _spec_classes(tp) if _is_kinded_base(c)]
        if kinded:
            return "kind: " + ", ".join(_code(k) for k in kinded[0].KINDS.names())
        if tp is bool:
            return "`true`, `false`"
        return ""

    # ---------------------------------------------------------------- tables
    def table(self, cls: type, path: str, kind: str | None = None) -> list[str]:
        """The key table of one spec class; `path` is its section's key path ('' for the top level)."""
        lines = ["| key | type | default | allowed values | description |", "|---|---|---|---|---|"]
        if kind is not None:
            lines.append(f"| `kind` | str | **required** | {_code(kind)} | selects this kind |")
        hints = typing.get_type_hints(cls)
        for f in attrs.fields(cls):
            tp = hints[f.name]
            sub = f"{path}.{f.name}" if path else f.name
            for c in _spec_classes(tp):
                self.note_section(sub, c, (path, kind), f)
            row = [_code(f.name), self.type_text(tp, sub), self.default_text(f), self.allowed_text(f, tp),
                   f.metadata.get("help", "")]
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        return lines

    def note_section(self, path: str, cls: type, owner: tuple[str, str | None], f: attrs.Attribute) -> None:
        if path in self.sections:
            known, owners = self.sections[path]
            if known is not cls:
                raise RuntimeError(f"{path}: two spec classes ({known.__name__}, {cls.__name__}) share one key "
                                   f"path; teach tools/gen_spec_docs.py to document both")
            owners.append((*owner, f))
        else:
            self.sections[path] = (cls, [(*owner, f)])

    # ---------------------------------------------------------------- examples
    @staticmethod
    def check_example(text: str, path: str, cls: type) -> dict:
        """Parse an example with yaml.safe_load and convert its section with from_dict, or fail loudly."""
        try:
            data = yaml.safe_load(text)
            node = data
            for key in path.split("."):
                node = node[key]
            from_dict(cls, node, path)
            return node
        except (yaml.YAMLError, KeyError, TypeError, AttributeError, SpecError) as exc:
            raise RuntimeError(f"tools/gen_spec_docs.py: the YAML example for {path} is stale or invalid: "
                               f"{exc}\n{text}") from None

    def examples(self, path: str, base: type, kind: str, cls: type) -> list[tuple[str, str]]:
        found = EXAMPLES.get((path, kind))
        if found is None:
            required = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING]
            if required:
                raise RuntimeError(f"tools/gen_spec_docs.py: {path} kind {kind!r} has required keys "
                                   f"({', '.join(required)}) and no YAML example; add one to EXAMPLES")
            data: Any = to_dict(cls())
            for key in reversed(path.split(".")):
                data = {key: data}
            found = [("Every key at its default.", yaml.safe_dump(data, sort_keys=False,
                                                                  default_flow_style=None))]
        for _, text in found:
            node = self.check_example(text, path, base)
            if node.get("kind") != kind:
                raise RuntimeError(f"tools/gen_spec_docs.py: an example of {path} kind {kind!r} "
                                   f"has kind {node.get('kind')!r}")
        return found

    # ---------------------------------------------------------------- sections
    def top_section(self, f: attrs.Attribute, tp: Any) -> list[str]:
        """The section of one top-level key of Spec."""
        name = f.name
        out = [f"## `{name}`", ""]
        out += [f"{_sentence(f.metadata.get('help', ''))} Type: {self.type_text(tp, name)}; default: "
                f"{self.default_text(f)}.", ""]
        classes = _spec_classes(tp)
        if not classes:
            out += ["| key | type | default | allowed values | description |", "|---|---|---|---|---|"]
            row = [_code(name), self.type_text(tp, name), self.default_text(f), self.allowed_text(f, tp),
                   f.metadata.get("help", "")]
            out += ["| " + " | ".join(_cell(c) for c in row) + " |", ""]
            return out
        out += self.section_body(name, classes[0])
        return out

    def section_body(self, path: str, cls: type) -> list[str]:
        out: list[str] = []
        if _is_kinded_base(cls):
            if _doc(cls):
                out += [_doc(cls), ""]
            names = cls.KINDS.names()
            out += [f"`{path}` is polymorphic: its `kind` key picks one of "
                    + ", ".join(f"[`{k}`](#{_anchor(self.kind_heading(path, k))})" for k in names)
                    + ", and each kind has its own keys (a key of another kind is an error). When a `base:` "
                      "file sets a different kind, this section is replaced whole rather than merged.", ""]
            for kind, sub in cls.KINDS.items():
                out += [f"### {self.kind_heading(path, kind)}", ""]
                if _doc(sub):
                    out += [_doc(sub), ""]
                out += self.table(sub, path, kind)
                out.append("")
                for caption, text in self.examples(path, cls, kind, sub):
                    out += [f"Example: {caption}", "", "```yaml", text.rstrip("\n"), "```", ""]
        else:
            if _doc(cls):
                out += [_doc(cls), ""]
            out += self.table(cls, path)
            out.append("")
        return out

    @staticmethod
    def kind_heading(path: str, kind: str) -> str:
        return f"`{path}` kind `{kind}`"

    def nested_section(self, path: str) -> list[str]:
        cls, owners = self.sections[path]
        key = path.rsplit(".", 1)[-1]
        out = [f"## `{path}`", ""]
        helps = sorted({f.metadata.get("help", "") for _, _, f in owners})
        users = sorted({(o, k) for o, k, _ in owners}, key=lambda u: (u[0], u[1] or ""))
        names = [f"[`{o}` kind `{k}`](#{_anchor(self.kind_heading(o, k))})" if k else f"[`{o}`](#{_anchor(o)})"
                 for o, k in users]
        out += [f"The `{key}` key of {', '.join(names)}: {'; '.join(helps)}. Its default depends on where it "
                f"appears (see that table). When a spec gives this section, `kind` is required (unless a "
                f"`base:` file already sets it) and the keys left out take the defaults of that kind.", ""]
        out += self.section_body(path, cls)
        return out

    # ---------------------------------------------------------------- the whole document
    def render(self) -> str:
        hints = typing.get_type_hints(Spec)
        top = list(attrs.fields(Spec))
        # every top-level section, then (right after its parent) the nested ones it mentions
        bodies: list[tuple[str, list[str], list[str]]] = []  # (path, lines, kind headings)
        done: set[str] = set()

        def add_nested(prefix: str):
            for path in list(self.sections):
                if path in done or not path.startswith(prefix + "."):
                    continue
                done.add(path)
                lines = self.nested_section(path)
                bodies.append((path, lines, self._kinds_of(path)))
                add_nested(path)

        for f in top:
            lines = self.top_section(f, hints[f.name])
            done.add(f.name)
            bodies.append((f.name, lines, self._kinds_of(f.name)))
            add_nested(f.name)
        missing = [p for p in self.sections if p not in done]
        if missing:
            raise RuntimeError(f"sections not placed: {missing}")

        out = [
            "# Experiment spec reference",
            "",
            "<!-- Generated by tools/gen_spec_docs.py from causalrep/spec/schema.py. Do not edit by hand: "
            "run `make docs`. -->",
            "",
            "## Contents",
            "",
        ]
        intro_titles = ["What a spec is", "How a spec is loaded", "Inheritance with `base:`",
                        "Overrides with `--set`", "Errors", "Checking a spec without training", "A complete example",
                        "Every default", "Top-level keys"]
        out += [f"- [{t}](#{_anchor(t)})" for t in intro_titles]
        out.append("- Sections")
        for path, _, kinds in bodies:
            out.append(f"  - [`{path}`](#{_anchor(path)})")
            out += [f"    - [`{k}`](#{_anchor(self.kind_heading(path, k))})" for k in kinds]
        sweep = SweepDoc()
        sweep_lines = sweep.render_section()
        out.append(f"- [{SweepDoc.TITLE}](#{_anchor(SweepDoc.TITLE)})")
        out += [f"  - [{h}](#{_anchor(h)})" for h in sweep.headings]
        out.append("")
        out += self.intro()
        out += ["## Top-level keys", "", _doc(Spec), ""]
        out += ["| key | type | default | allowed values | description |", "|---|---|---|---|---|"]
        for f in top:
            tp = hints[f.name]
            row = [f"[`{f.name}`](#{_anchor(f.name)})", self.type_text(tp, f.name), self.default_text(f),
                   self.allowed_text(f, tp), f.metadata.get("help", "")]
            out.append("| " + " | ".join(_cell(c) for c in row) + " |")
        out.append("")
        for _, lines, _ in bodies:
            out += lines
        out += sweep_lines
        return "\n".join(out).rstrip("\n") + "\n"

    def _kinds_of(self, path: str) -> list[str]:
        if path in self.sections:
            cls = self.sections[path][0]
        else:
            classes = _spec_classes(typing.get_type_hints(Spec)[path])
            cls = classes[0] if classes else None
        return cls.KINDS.names() if cls is not None and _is_kinded_base(cls) else []

    # ---------------------------------------------------------------- prose
    def intro(self) -> list[str]:
        # the complete example, the minimal one and the inheritance pair must all convert
        complete = yaml.safe_load(COMPLETE_EXAMPLE)
        from_dict(Spec, complete)
        minimal = from_dict(Spec, yaml.safe_load(MINIMAL_EXAMPLE))
        child = yaml.safe_load(CHILD_EXAMPLE)
        child.pop("base")
        merged = deep_merge(yaml.safe_load(BASE_EXAMPLE), child)
        merged_spec = from_dict(Spec, merged)
        if merged_spec.train.batch_size != 128 or merged_spec.train.steps != 20000:
            raise RuntimeError("tools/gen_spec_docs.py: the base/child example no longer merges as described")
        for override in SET_EXAMPLE:
            merged = apply_override(merged, override)
        from_dict(Spec, merged)
        errors = []
        for what, data in ERROR_EXAMPLES:
            try:
                from_dict(Spec, data)
            except SpecError as exc:
                errors.append((what, f"error: {exc}"))
            else:
                raise RuntimeError(f"tools/gen_spec_docs.py: the error example {what!r} no longer fails")
        out = [
            "## What a spec is",
            "",
            "A spec is one YAML file that describes one experiment end to end: the dataset (`data`), the latent "
            "causal graph (`graph`), the model (`model`), training (`train`), evaluation and the report "
            "(`evaluate`) and experiment tracking (`track`). It is run with",
            "",
            "```sh",
            "python -m causalrep.run specs/quickstart.yaml [--set KEY=VALUE ...] [--out runs] [--device cpu|cuda]",
            "```",
            "",
            "or loaded in Python with `causalrep.load_spec(path, overrides)`. The file is converted into the "
            "frozen attrs classes of `causalrep/spec/schema.py`, which are the single source of truth: this "
            "page is generated from them (`make docs`, checked by `tests/test_spec_docs.py`), so every key, "
            "type, default and allowed value below is what the code accepts. Unknown keys are errors, never "
            "silently ignored. The resolved spec (after inheritance and overrides, with every default filled "
            "in) is written to each run folder as `spec.yaml` and loads back unchanged.",
            "",
            "Polymorphic sections (`graph`, `model`, `model.encoder`, `model.decoder`) have a `kind` key that "
            "picks a registered kind, and each kind has its own keys; they are listed kind by kind below.",
            "",
            "## How a spec is loaded",
            "",
            "1. The file is read with `yaml.safe_load` only: plain YAML data (mappings, lists, strings, "
            "numbers, booleans, `null`, anchors), never Python tags or objects. PyYAML follows YAML 1.1, so "
            "`yes`/`no`/`on`/`off` are booleans and `5e-4` (no dot) is read as a string; float keys accept "
            "it anyway, but `5.0e-4` is the safe spelling. A spec file must be UTF-8 text of at most "
            f"{MAX_BYTES // 1024} KiB, nested at most {MAX_DEPTH} levels deep, with no alias inside its own "
            f"anchor (a cyclic document) and at most {MAX_BASES} levels of `base:` files.",
            "2. `base:` files are loaded recursively and deep-merged under the file (see below).",
            "3. `--set` overrides are applied in order.",
            "4. The merged data is converted section by section into the schema classes: types are checked, "
            "allowed values enforced, defaults filled in. Every numeric key has a valid range, shown in the "
            "allowed values column of its table (`> 0`: positive, `[0, 1]`: from 0 to 1 inclusive, `[0, 1)`: "
            "1 excluded, `[1, 1e9]`: an int from 1 to 10^9); it applies to each number of a list or mapping "
            "(`each [0, 1]`). Floats must be finite: `.nan`, `.inf` and numbers beyond a float's range are "
            f"refused. Lists hold at most {MAX_ITEMS} items.",
            "5. Rules that span sections are checked by `causalrep.build.validate_spec` (for example: "
            "`data.name` must be a registered dataset, `data.resolution` a power of two, the graph's node dims "
            "must add up to `model.latent_dim`, conv `channels` must be divisible by `groups`).",
            "",
            "## Inheritance with `base:`",
            "",
            "A spec may name one base file (`base: file.yaml`) or a list of them (`base: [a.yaml, b.yaml]`). "
            "Paths are relative to the file that names them, and a base may itself have a base. A base need "
            "not be a complete spec: `specs/base/paper_64.yaml` holds the shared paper settings and has no "
            "`name` or `model`.",
            "",
            "```yaml",
            BASE_EXAMPLE.rstrip("\n"),
            "```",
            "",
            "```yaml",
            CHILD_EXAMPLE.rstrip("\n"),
            "```",
            "",
            "Merging rules:",
            "",
            "- **Deep merge**: mappings merge key by key, the child over the base; later bases in a list "
            "override earlier ones, and the file itself overrides all of its bases. Above, the child gets "
            "`train.batch_size: 128` from the base and its own `train.steps: 20000`.",
            "- **Lists and scalars are replaced whole** (a child's `split: [0.8, 0.1, 0.1]` replaces the base's "
            "list, it is not appended to it).",
            "- **A section whose `kind` changes is replaced whole**: if the base has `model: {kind: sae, ...}` "
            "and the child `model: {kind: vae, latent_dim: 12}`, none of the base's `sae` keys are kept (they "
            "would not fit the new kind).",
            "- **Cycles are rejected**: a file that (directly or through other bases) names itself fails with "
            "an `inheritance cycle: a.yaml -> b.yaml -> a.yaml` error.",
            "",
            "## Overrides with `--set`",
            "",
            "`--set KEY.PATH=VALUE` (repeatable, applied in order after inheritance) sets one key; the value "
            "is parsed with `yaml.safe_load`, so it is typed as it would be in the file:",
            "",
            "```sh",
            "python -m causalrep.run specs/sae6.yaml \\",
            *[f"    --set {shlex.quote(o)}" + (" \\" if i < len(SET_EXAMPLE) - 1 else "")
              for i, o in enumerate(SET_EXAMPLE)],
            "```",
            "",
            "Intermediate sections are created when missing (`--set graph.kind=chain --set graph.nodes=4`), "
            "and a whole section can be given as a flow mapping (`--set 'graph={kind: chain, nodes: 4}'`). "
            "Quote values that contain spaces or brackets for the shell.",
            "",
            "## Errors",
            "",
            "Every problem in a spec (bad YAML, a wrong type, an unknown key or kind, a value outside the "
            "allowed ones, a missing required key, a cross-section rule) raises `causalrep.SpecError`, whose "
            "message starts with the key path of the offending value. The CLI prints it on one line as "
            "`error: ...` and exits with status 2. For example (these messages are produced by the code while "
            "this page is generated):",
            "",
        ]
        for what, msg in errors:
            out += [f"- {what}:", "", "  ```text", f"  {msg}", "  ```", ""]
        out += [
            "## Checking a spec without training",
            "",
            "```sh",
            "python -m causalrep.run --check specs/sae12.yaml [--set KEY=VALUE ...]",
            "```",
            "",
            "loads the spec as a run would (steps 1 to 5 above), then builds what can be built without "
            "training: the dataset at `data.resolution` (each dataset renders a few sizes, e.g. 8 to 64 for "
            "dSprites and 3D-Shapes, 32, 64 or 96 for the pendulum, and names them when the size is not one "
            "of them), the split with its `include`/`exclude` filters, `evaluate.baseline` and "
            "`train.init_from` (they must exist), and the model, on PyTorch's meta device (no memory is "
            "allocated, whatever its size). It prints `ok: SPEC (KIND, N params; DATASET, M images)` and exits "
            "with status 0, or prints the one-line error and exits with status 2. Nothing is trained and "
            "nothing is written (no run folder).",
            "",
            "The property-based tests in `tests/fuzz/` (Hypothesis) generate specs from this schema (valid "
            "ones, and ones with a key mutated: a wrong type, a number out of range or not finite, an unknown "
            "or missing key, a huge or unicode string), random `--set` overrides, random bytes in place of a "
            "file and YAML documents with deep nesting, anchors, tags and `base:` cycles, and check that "
            "`--check` either accepts each one or exits with status 2 and at most 5 lines naming the key path "
            "or file, never a traceback, and that a valid spec loads, dumps and loads back equal. The test "
            "suite runs a short profile (under a minute); before a release, run the long one (10,000 examples "
            "per property): `CAUSALREP_FUZZ_PROFILE=long python -m pytest tests/fuzz`.",
            "",
            "## A complete example",
            "",
            "```yaml",
            COMPLETE_EXAMPLE.rstrip("\n"),
            "```",
            "",
            "## Every default",
            "",
            "The smallest valid spec names the experiment, the dataset and the model:",
            "",
            "```yaml",
            MINIMAL_EXAMPLE.rstrip("\n"),
            "```",
            "",
            "Resolved, with every default filled in (what the run folder's `spec.yaml` would hold):",
            "",
            "```yaml",
            yaml.safe_dump(to_dict(minimal), sort_keys=False, default_flow_style=None, width=100).rstrip("\n"),
            "```",
            "",
        ]
        return out


class SweepDoc(Doc):
    """The "Sweep files" section: SweepSpec's table and one table per nested section (stages, heldout, slurm),
    each under a heading `Sweep <key>` (its anchor sweep-<key>: the spec's own sections keep theirs)."""

    TITLE = "Sweep files"

    def __init__(self):
        super().__init__()
        self.headings: list[str] = []

    @staticmethod
    def anchor(path: str) -> str:
        return _anchor(SweepDoc.heading(path))

    @staticmethod
    def heading(path: str) -> str:
        return f"Sweep `{path}`"

    def render_section(self) -> list[str]:
        example = from_dict(SweepSpec, yaml.safe_load(SWEEP_EXAMPLE))
        if example.launcher != "slurm" or example.stages[1].overrides["train.init_from"] != "@neither":
            raise RuntimeError("tools/gen_spec_docs.py: the sweep example no longer reads as described")
        errors = []
        for what, data in SWEEP_ERROR_EXAMPLES:
            try:
                from_dict(SweepSpec, data)
            except SpecError as exc:  # the sweep loader prefixes the file, as here
                errors.append((what, f"error: {SWEEP_FILE}: {exc}"))
            else:
                raise RuntimeError(f"tools/gen_spec_docs.py: the sweep error example {what!r} no longer fails")
        out = [
            f"## {self.TITLE}",
            "",
            "A sweep file (`python -m causalrep.sweep SWEEP [--out DIR] [--dry-run]`; docs/sweeps.md explains how "
            "it expands into runs, how they are launched and resumed) is validated like a spec, against the frozen "
            "attrs classes of `causalrep/spec/sweep.py` (this section is generated from them): unknown keys, wrong "
            "types, numbers outside their range and names that are not folder names are errors that name the file "
            "and the key path, exit code 2, before anything trains. Top-level keys starting with "
            f"`{EXTENSION_PREFIX}` are ignored: they hold YAML anchors that models refer to. The spec keys inside a "
            "sweep (a `models:` entry, `overrides`, `grid`, a stage's `overrides`) are validated with each run's "
            "spec, as a spec file and `--set` would be (the sections above).",
            "",
            "```yaml",
            SWEEP_EXAMPLE.rstrip("\n"),
            "```",
            "",
            "Errors (produced by the code while this page is generated):",
            "",
        ]
        for what, msg in errors:
            out += [f"- {what}:", "", "  ```text", f"  {msg}", "  ```", ""]
        self.headings.append("Sweep keys")
        out += ["### Sweep keys", "", _doc(SweepSpec), ""] + self.table(SweepSpec, "") + [""]
        hints = typing.get_type_hints(SweepSpec)
        for f in attrs.fields(SweepSpec):
            for cls in _spec_classes(hints[f.name]):
                heading = self.heading(f.name)
                self.headings.append(heading)
                out += [f"### {heading}", "", f"{_sentence(f.metadata.get('help', ''))} {_doc(cls)}", ""]
                out += self.table(cls, f.name) + [""]
        return out


def generate() -> str:
    """The full text of docs/spec.md (deterministic: no timestamps, kinds sorted)."""
    return Doc().render()


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate docs/spec.md from the spec schema.")
    p.add_argument("--out", help=f"the markdown file to write or check (default: {DEFAULT_OUT} in the repo)")
    p.add_argument("--check", action="store_true", help="exit 1 if the file differs from the generated text")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else ROOT / DEFAULT_OUT
    text = generate()
    if args.check:
        current = out.read_text() if out.is_file() else ""
        if current == text:
            return 0
        print(f"{_display(out)} {STALE_MESSAGE}", file=sys.stderr)
        diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(), f"{_display(out)} (current)",
                                         f"{_display(out)} (generated)", lineterm="", n=1))
        limit = 40
        sys.stderr.write("\n".join(diff[:limit]) + "\n")
        if len(diff) > limit:
            sys.stderr.write(f"... ({len(diff) - limit} more diff lines)\n")
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {_display(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
