"""Trainable parameters of every spec in specs/: a table, docs/models.md (--markdown) and, last, a JSON line."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from causalrep.build import build_dataset, build_graph, build_model  # noqa: E402
from causalrep.spec import load_spec  # noqa: E402


def source(path: Path) -> str:
    """The spec's first comment sentence: where the model comes from (every shipped spec cites it)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    text = " ".join(lines)
    m = re.match(r"(.+?[.:])(\s|$)", text)
    return (m.group(1) if m else text).rstrip(":.")


def count(path: Path) -> dict:
    spec = load_spec(path)
    dataset = build_dataset(spec)  # procedural datasets are lazy: building one renders nothing
    graph = build_graph(spec, dataset.true_graph)
    model = build_model(spec, dataset, graph)
    aux = {id(p) for ps in model.aux_parameter_groups().values() for p in ps}
    main = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in aux)
    extra = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) in aux)
    return {"spec": path.stem, "model": spec.model.KIND, "graph": graph.kind, "nodes": len(graph.nodes),
            "data": f"{spec.data.name} {spec.data.resolution}px", "params": main, "aux_params": extra,
            "source": source(path)}


# how a new model kind is added (docs/models.md ends with it)
ADDING_A_MODEL = """\
## Adding a model

One model kind = one file in `causalrep/models/` (its spec class may live in the same file) and one spec in
`specs/`; the registry, the builder, the spec reference and the contract tests pick it up:

1. The spec class: frozen attrs, registered with `@register_kind(ModelSpec, "mykind")` (the built-in ones are in
   `causalrep/spec/schema.py`), with a `help=` text per key (docs/spec.md is generated from them).
2. The model class, decorated with `@register_model("mykind")` (`models/trainable.py`, the only model registry;
   several kinds may share a class, as `@register_model("vae", "bvae")`; `default_graph="chain"` gives a spec
   without `graph:` a chain over latent_dim nodes, as the structural decoders do, otherwise independent dims). It
   subclasses `LatentModel` (an autoencoder: encode/decode, do(), counterfactuals) or, for a model that does not
   reconstruct, `Trainable` (what the trainer needs: forward -> ModelOutput, `validation_error` and the name it is
   logged under, hooks that receive a read-only `FitContext`, `find_unused_parameters` for DDP). It declares what
   it supports (`supports`: reconstruct, hybrid, prior, do_noise, do_value, do_mechanism; the contract test runs
   each capability's test over the kinds that declare it). Its `__init__` takes plain keyword arguments; its
   `from_spec(cls, spec, graph, ctx)` classmethod is the one place its spec is read: it raises a `SpecError`
   naming the key path for what the model cannot build and calls `cls(...)`. `ctx` (`BuildContext`) carries the
   data's `channels`, the `dataset` and `train_size()`; shared readers (`conv_common`, `conv_decoder`, graph-kind
   checks) are in `models/_spec_args.py`.
3. Import the file in `causalrep/models/__init__.py` (registration can then never silently not happen).

A worked example: an autoencoder with an L1 penalty on its code (tests/models/test_adding_a_model.py runs this
block as `causalrep/models/sparse_ae.py` would, then the whole contract test over it):

```python
import attrs
import torch

from causalrep.models.ae import AE
from causalrep.models.base import ModelOutput, reconstruction_loss, register_model
from causalrep.models._spec_args import conv_common, conv_decoder
from causalrep.spec.convert import register_kind, spec_field as field
from causalrep.spec.schema import AESpec, ModelSpec


@register_kind(ModelSpec, "sparse_ae")
@attrs.frozen(kw_only=True)
class SparseAESpec(AESpec):
    \"\"\"Autoencoder with an L1 penalty on the code: loss = recon + l1 * sum_i |u_i|.\"\"\"

    l1: float = field(0.01, range=">= 0", help="weight of the code's L1 norm")


@register_model("sparse_ae")
class SparseAE(AE):
    \"\"\"AE whose code is pushed towards few active dimensions (the reconstruction plus l1 * ||u||_1).\"\"\"

    @classmethod
    def from_spec(cls, spec, graph, ctx):
        return cls(**conv_common(spec, graph, ctx.channels), **conv_decoder(spec.model), l1=spec.model.l1)

    def __init__(self, *, l1: float = 0.01, **kw):
        super().__init__(**kw)
        self.l1 = l1

    def forward(self, x: torch.Tensor) -> ModelOutput:
        u = self.encode(x)
        rec = reconstruction_loss(self.decode_logits(u), x, self.recon_loss)
        sparsity = u.abs().sum(1).mean()
        return ModelOutput(loss=rec + self.l1 * sparsity, recon=rec, l1=sparsity)
```

and its spec, e.g. `specs/sparse_ae.yaml`: `base: ae.yaml` with `model: {kind: sparse_ae, l1: 0.01}`.

`causalrep/build.py` only dispatches (`build_model` seeds torch with `spec.seed`, then calls the registered
class's `from_spec`); `model_kinds()` fails when a spec kind has no model class. Add the spec's golden values
(`python tools/make_golden.py --spec NAME`), then regenerate docs/spec.md (`make docs`) and this page.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--markdown", help="also write this Markdown table (docs/models.md)")
    args = p.parse_args(argv)
    rows = [count(f) for f in sorted((ROOT / "specs").glob("*.yaml"))]
    print(f"{'spec':<12} {'model':<10} {'graph':<12} {'params':>10} {'aux':>10}")
    for r in rows:
        print(f"{r['spec']:<12} {r['model']:<10} {r['graph'] + ' ' + str(r['nodes']):<12} {r['params']:>10,} "
              f"{r['aux_params']:>10,}")
    if args.markdown:
        md = ["# Models", "", "Every spec in `specs/`, built by `python tools/count_params.py --markdown docs/models.md`",
              "(counts come from the built models, not typed). 001 appendix A.2.1: the paper's 3D-Shapes models have",
              "approximately 1-1.2M trainable parameters. `aux` counts parameter groups trained by their own optimiser",
              "(FactorVAE's discriminator), which are not part of the autoencoder.", "",
              "| spec | model | graph (nodes) | data | parameters | aux | source |", "|---|---|---|---|---:|---:|---|"]
        for r in rows:
            md.append(f"| [`{r['spec']}`](../specs/{r['spec']}.yaml) | `{r['model']}` | {r['graph']} ({r['nodes']}) | "
                      f"{r['data']} | {r['params']:,} | {r['aux_params']:,} | {r['source']} |")
        md += ["", *ADDING_A_MODEL.splitlines()]
        Path(args.markdown).write_text("\n".join(md) + "\n")
    print(json.dumps({r["spec"]: r["params"] for r in rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
