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

One model kind = one file in `causalrep/models/` plus its spec class; nothing else is edited:

1. `causalrep/spec/schema.py`: a frozen attrs spec class registered with `@register_kind(ModelSpec, "mykind")`.
2. `causalrep/models/mykind.py`: the model class, decorated with `@register_model("mykind")` (from
   `models/base.py`, the only model registry; several kinds may share a class, as `@register_model("vae", "bvae")`;
   `default_graph="chain"` declares that a spec without `graph:` gets a chain over latent_dim nodes, as the
   structural decoders do, otherwise independent dims). Its `__init__` takes plain keyword arguments; its
   `from_spec(cls, spec, graph, ctx)` classmethod is the one place its spec is read: it raises a `SpecError`
   naming the key path (`model.decoder.kind`, `graph.kind`, ...) for what the model cannot build and calls
   `cls(...)`. `ctx` (`BuildContext`) carries the data's `channels`, the `dataset` and `train_size()`; shared
   readers (`conv_common`, `conv_decoder`, graph-kind checks) are in `models/_spec_args.py`.
3. Import the file in `causalrep/models/__init__.py` (registration can then never silently not happen).

`causalrep/build.py` only dispatches (`build_model` seeds torch with `spec.seed`, then calls the registered
class's `from_spec`); `model_kinds()` fails when a spec kind has no model class, and the contract tests
(tests/models/test_contract.py) pick the new kind up. Add a spec in `specs/` with its golden values
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
