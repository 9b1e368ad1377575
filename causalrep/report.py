"""Report of a finished run: metrics.json, report.md, reconstructions, traversals and sample grids as PNGs."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torchvision.utils import save_image

from .data.base import GroundTruthDataset, Split
from .errors import SpecError
from .figures import axis_labels, labelled_grid, line_plot, matrix_heatmap
from .generate import sample_images
from .graph.draw import draw_graph
from .models.base import LatentModel
from .models.trainable import Trainable
from .track.base import Tracker, read_jsonl


@torch.no_grad()
def write_report(*, model: Trainable, dataset: GroundTruthDataset, split: Split, run_dir: str | Path,
                 metrics: dict[str, Any], tracker: Tracker | None = None, step: int = 0, n_images: int = 8,
                 traversal_steps: int = 9, sampling: tuple[str, ...] = ("hybrid",), seed: int = 0,
                 baseline: Baseline | None = None) -> dict[str, Path]:
    """Write the labelled PNG grids (also to the tracker as images), report.md and, last, metrics.json into run_dir:
    metrics.json marks a finished run (a sweep skips it), so it appears only once everything else is written."""
    run_dir = Path(run_dir)
    device = next(model.parameters()).device
    model.eval()
    files: dict[str, Path] = {}

    index = split.val[:n_images]
    x = dataset.images_at(index).to(device)
    grids: dict[str, torch.Tensor] = {}
    if model.can("reconstruct"):  # an image-to-image model (the ICM committee) has no latent code to decode
        # reconstructions.png: row 1 the validation images, row 2 their reconstructions
        grids["reconstructions"] = labelled_grid(
            torch.stack([x, model.reconstruct(x)]), row_labels=["input", "reconstruction"],
            col_labels=[f"image {i + 1}\nidx {int(v)}" for i, v in enumerate(index)])
        # traversal_<node>.png: one row per image, one column per value of the node (its stored 5-95% range);
        # traversals.png: the first image's row of every node, to see at a glance which factor each node moves
        per_node, first, ranges = {}, [], []
        for node in model.graph.nodes:
            t = model.traverse(x[:4], node, traversal_steps)  # (4, steps, C, H, W)
            values = traversal_values(model, node, traversal_steps).cpu()  # (steps, dim): what traverse set
            per_node[f"traversal_{node}"] = labelled_grid(
                t, row_labels=[f"image {i + 1}" for i in range(t.shape[0])],
                col_labels=[_value_label(v) for v in values], title=f"traversal of {node}")
            first.append(t[0])
            ranges.append(f"{node}\n{_fmt(values[0, 0])} to {_fmt(values[-1, 0])}" if values.shape[1] == 1
                          else f"{node}\n({values.shape[1]} dims)")
        steps = torch.linspace(0, 1, traversal_steps)
        grids["traversals"] = labelled_grid(torch.stack(first), row_labels=ranges,
                                            col_labels=[f"{100 * float(v):.0f}%" for v in steps],
                                            title="traversals (image 1)")
        grids.update(per_node)
        gen = torch.Generator().manual_seed(seed)
        for method in sampling:
            if method == "prior" and not model.can("prior"):
                continue
            s = sample_images(model, 64, method, gen)  # (64, C, H, W) -> an 8 x 8 grid
            grids[f"samples_{method}"] = labelled_grid(s.view(8, 8, *s.shape[1:]), title=f"{method} samples")
        if getattr(model, "learned_graph", None) is None:  # a learned graph: the model draws it (learned_graph.png)
            grids["graph"] = draw_graph(model.graph.nx)  # the latent SCM of `graph:`, networkx's circular layout
    curves = curve_series(run_dir / "metrics.jsonl")
    if curves:  # evaluate.every: the disentanglement curves over training
        grids["curves"] = line_plot(curves, title="disentanglement on validation images")
    grids.update(model.report_images(x))  # model-specific figures (attention maps, adjacency, committee)
    for name, value in metrics.items():  # matrix-valued metrics (the ICM win proportions) as heat maps
        if _is_matrix(value):
            grids[name] = matrix_heatmap(torch.tensor(value, dtype=torch.float32), rows=metrics.get(f"{name}_rows"),
                                         cols=metrics.get(f"{name}_cols"), title=name.replace("_", " "))
    for name, grid in grids.items():
        path = run_dir / f"{name}.png"
        save_image(grid, path)
        files[name] = path
        if tracker is not None:
            tracker.log_image(name, grid, step=step, context="report")
    factors = dataset.factor_table()  # your own data: how each factor was made discrete for the metrics
    if factors:
        files["factors"] = write_json_atomic(run_dir / "factors.json", factors)
    files["report"] = run_dir / "report.md"
    files["report"].write_text(markdown(metrics, files, title=run_dir.parent.name + " / " + run_dir.name,
                                        baseline=baseline, factors=factors))
    files["metrics"] = write_json_atomic(run_dir / "metrics.json", metrics)
    return files


# the curve keys drawn in curves.png, with their legend names (the scores in [0, 1] of evaluate.every_metrics)
CURVE_LEGEND = {"dci_disentanglement": "DCI-d", "dci_completeness": "DCI-c", "mig": "MIG", "sap": "SAP",
                "irs": "IRS", "modexp_modularity": "modularity"}


def curve_series(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """The disentanglement curves a run logged (context "curve" of its metrics.jsonl), by legend name, each as
    (step, value) sorted by step; a step logged twice (a resumed run repeating it) keeps its last value."""
    path = Path(path)
    if not path.exists():
        return {}
    points: dict[str, dict[int, float]] = {}
    for rec in read_jsonl(path):
        if rec.get("context") == "curve" and rec["name"] in CURVE_LEGEND and isinstance(rec["value"], float):
            points.setdefault(rec["name"], {})[int(rec["step"])] = rec["value"]
    return {CURVE_LEGEND[k]: sorted(points[k].items()) for k in CURVE_LEGEND if k in points}


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """`data` as JSON into `path` through a temporary file in the same folder and os.replace, atomic on POSIX
    (rename(2)): a process killed meanwhile leaves the old file or none, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(json.dumps(data, indent=2, sort_keys=True))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def traversal_values(model: LatentModel, node: str, steps: int = 9) -> torch.Tensor:
    """The (steps, dim) values model.traverse(x, node, steps) gives `node`: a linear sweep over node_range
    (its stored latents' 5-95% quantiles), computed exactly as LatentModel.traverse does."""
    low, high = model.node_range(node)
    t = torch.linspace(0, 1, steps, device=low.device)[:, None]
    return low[None] + t * (high - low)[None]


def _fmt(v: Any) -> str:
    return f"{float(v):.2g}"


def _value_label(v: torch.Tensor, max_lines: int = 4) -> str:
    """A node value (dim,) as a column label: one line per dim, the first max_lines - 1 and a count past that."""
    if v.numel() <= max_lines:
        return "\n".join(_fmt(a) for a in v)
    return "\n".join([*(_fmt(a) for a in v[:max_lines - 1]), f"+{v.numel() - max_lines + 1} dims"])


def _is_matrix(value: Any) -> bool:
    """A non-empty list of equally long, non-empty lists of numbers (e.g. the ICM win proportions)."""
    return (isinstance(value, list) and len(value) > 0 and all(isinstance(r, list) and r for r in value)
            and len({len(r) for r in value}) == 1
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for r in value for v in r))


def _matrix_table(name: str, matrix: list, metrics: dict[str, Any]) -> list[str]:
    rows = axis_labels(metrics.get(f"{name}_rows"), len(matrix))
    cols = axis_labels(metrics.get(f"{name}_cols"), len(matrix[0]))
    lines = ["", f"## {name.replace('_', ' ')}", "", "| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r, values in zip(rows, matrix):
        lines.append(f"| {r} | " + " | ".join(f"{v:.3g}" for v in values) + " |")
    return lines


@attrs.frozen
class Baseline:
    """The mean metrics of the finished runs under a folder (evaluate.baseline), for the report's comparison."""

    path: Path
    runs: int
    means: dict[str, float]

    @property
    def label(self) -> str:
        return f"{self.path} ({self.runs} run{'s' if self.runs != 1 else ''})"


def read_baseline(path: str | Path | None) -> Baseline | None:
    """Mean of every numeric metric over the metrics.json files under `path`; None for no path. A folder that
    does not exist or holds no runs is a SpecError naming evaluate.baseline and the folder."""
    if path is None:
        return None
    root = Path(path)
    files = sorted(root.rglob("metrics.json")) if root.is_dir() else []
    if not files:
        raise SpecError("evaluate.baseline", f"no finished runs (metrics.json) under {root} (relative to "
                                             f"{Path.cwd()})")
    values: dict[str, list[float]] = {}
    for f in files:
        for k, v in json.loads(f.read_text()).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                values.setdefault(k, []).append(float(v))
    return Baseline(path=root, runs=len(files), means={k: float(np.mean(v)) for k, v in values.items()})


def _value(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, (float, np.floating)) else str(v)


def factor_lines(factors: list[dict]) -> list[str]:
    """report.md's table of how each factor was made discrete (GroundTruthDataset.factor_table)."""
    lines = ["", "## factors", "", "Continuous factors are cut into equal-width bins for the metrics "
             "(disentanglement_lib's histogram discretiser); a factor with at most that many distinct values keeps "
             "each value as its own index.", "",
             "| factor | distinct values | treated as | indices | bin edges / values |", "|---|---|---|---|---|"]
    for f in factors:
        if f["kind"] == "binned":
            how = f"{f['bins']} equal-width bins"
            detail = ", ".join(f"{e:.4g}" for e in f["edges"])
            if f["empty_bins"]:
                detail += f" (empty, no index: bins {', '.join(str(b + 1) for b in f['empty_bins'])})"
        else:
            how = f["kind"]
            detail = ", ".join(v if isinstance(v, str) else f"{v:.6g}" for v in f["values"])
        lines.append(f"| {f['factor']} | {f['distinct']} | {how} | {f['size']} | {detail} |")
    return lines


def markdown(metrics: dict[str, Any], files: dict[str, Path], title: str, baseline: Baseline | None = None,
             factors: list[dict] | None = None) -> str:
    """report.md: the metric table (with the baseline's mean beside each metric it has), matrices as their own
    tables, how the factors were discretised (your own data), then every grid, linked relative to the run folder."""
    lines = [f"# {title}", ""]
    if baseline is not None:
        lines += [f"Beside each metric: the mean of {baseline.label}, trained with the same budget.", "",
                  "| metric | value | baseline |", "|---|---|---|"]
    else:
        lines += ["| metric | value |", "|---|---|"]
    matrices = {k: v for k, v in metrics.items() if _is_matrix(v)}
    for k, v in sorted(metrics.items()):
        if k in matrices:
            continue
        row = f"| {k} | {_value(v)} |"
        if baseline is not None:
            row += f" {_value(baseline.means[k]) if k in baseline.means else '–'} |"
        lines.append(row)
    for k, v in sorted(matrices.items()):
        lines += _matrix_table(k, v, metrics)
    if factors:
        lines += factor_lines(factors)
    for name, path in files.items():
        if path.suffix == ".png":
            lines += ["", f"## {name.replace('_', ' ')}", "", f"![{name}]({path.name})"]
    return "\n".join(lines) + "\n"


def summary(metrics: dict[str, Any], baseline: Baseline | None = None) -> str:
    """One line per metric, for the terminal; with a baseline, its mean in a second column."""
    width = max((len(k) for k in metrics), default=0)
    rows = [(k, _value(v)) for k, v in sorted(metrics.items())]
    if baseline is None:
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
    vw = max((len(v) for _, v in rows), default=5)
    head = f"  {'metric':<{width}}  {'value':>{vw}}  baseline: {baseline.label}"
    return "\n".join([head] + [f"  {k:<{width}}  {v:>{vw}}  {_value(baseline.means[k]) if k in baseline.means else '–'}"
                                for k, v in rows])
