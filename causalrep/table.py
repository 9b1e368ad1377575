"""Tables of finished runs in the papers' form: one row per model, mean ± std over seeds (001 Table 1, Table 3).

    python -m causalrep.table runs/smoke                    # -> runs/smoke/table.md and table.csv
    python -m causalrep.table runs/t1 --metrics table1      # DCI-d, IRS, MIG, SAP, ModExp, DCI-c
    python -m causalrep.table runs/extrap --metrics heldout_ball_mse_x1000 --columns stage   # 001 Table 3
    python -m causalrep.table results/table1_cpu   # its table.yaml: row order, paper figures, notes (docs/results.md)

A run folder is any folder holding spec.yaml and metrics.json (a sweep's or a plain run's). Runs are
grouped by their spec's name (a sweep names a run model[-grid][-stage] and puts the seed in the folder).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import attrs
import yaml

from .errors import CausalrepError

# 001 Table 1's columns and names (DCI-d/c: Eastwood & Williams; ModExp: Ridgeway & Mozer's modularity)
TABLE1 = {"dci_disentanglement": "DCI-d", "irs": "IRS", "mig": "MIG", "sap": "SAP", "modexp_modularity": "ModExp",
          "dci_completeness": "DCI-c"}
SKIP = {"step"}  # bookkeeping, not a metric
# column names of the results tables (table.yaml layouts): Table 1's and the other metrics the tables report
NAMES = {**TABLE1, "dci_informativeness_test": "DCI-i (test acc.)", "val_recon_error": "recon. BCE / image",
         "modexp_explicitness_test": "Explicitness", "fid_hybrid_random_conv": "FID hybrid",
         "fid_prior_random_conv": "FID prior", "fid_structured_random_conv": "FID structured",
         "fid_recon_random_conv": "FID recon.", "shd": "SHD", "learned_edges": "edges", "mic": "MIC", "tic": "TIC",
         "one_to_one": "one expert per mechanism", "accuracy_after": "accuracy after",
         "accuracy_before": "accuracy before", "min_winner_share": "min winner share",
         "distinct_winners": "distinct winners", "accuracy_ceiling": "classifier ceiling"}


@attrs.frozen
class RunRecord:
    path: Path
    group: str  # table row: the spec's name
    model: str  # without the stage (sweep.json), for --columns stage
    stage: str | None
    stage_index: int  # the stage's position in the sweep (column order of --columns stage)
    seed: int
    metrics: dict[str, Any]


@attrs.frozen
class Cell:
    mean: float
    std: float  # sample standard deviation (n - 1); nan for a single run
    n: int
    values: tuple[float, ...]


def find_runs(paths: list[str | Path]) -> list[Path]:
    """The run folders under each path (a path may itself be one); sorted, without duplicates."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise CausalrepError(f"no such run folder or directory: {p}")
        if (p / "metrics.json").is_file() and (p / "spec.yaml").is_file():
            found.append(p)
        else:
            found += sorted(m.parent for m in p.rglob("metrics.json") if (m.parent / "spec.yaml").is_file())
    if not found:
        raise CausalrepError(f"no finished runs (folders with spec.yaml and metrics.json) under {', '.join(map(str, paths))}")
    return sorted(set(found))


def read_run(path: Path) -> RunRecord:
    """A run's metrics.json, its spec's name and seed, and (for a sweep's runs) model and stage from sweep.json."""
    spec = yaml.safe_load((path / "spec.yaml").read_text()) or {}
    metrics = json.loads((path / "metrics.json").read_text())
    info = json.loads((path / "sweep.json").read_text()) if (path / "sweep.json").is_file() else {}
    group = str(spec.get("name", path.parent.name))
    stage = info.get("stage")
    model = group[: -len(stage) - 1] if stage and group.endswith(f"-{stage}") else group
    return RunRecord(path=path, group=group, model=model, stage=stage, stage_index=int(info.get("stage_index", 0)),
                     seed=int(spec.get("seed", 0)), metrics=metrics)


def numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def choose_metrics(records: list[RunRecord], wanted: list[str] | None) -> list[str]:
    """--metrics: names, 'table1' (001 Table 1's six) or 'all'/None (every numeric metric, Table 1's first)."""
    present: list[str] = []
    for r in records:
        present += [k for k, v in r.metrics.items() if numeric(v) and k not in SKIP and k not in present]
    if not wanted or wanted == ["all"]:
        return [k for k in TABLE1 if k in present] + sorted(k for k in present if k not in TABLE1)
    names = [m for w in wanted for m in (TABLE1 if w == "table1" else [w])]
    missing = [m for m in names if m not in present]
    if missing:
        raise CausalrepError(f"--metrics: no run has {', '.join(missing)}; the runs have: {', '.join(sorted(present))}")
    return names


def summarise(values: list[float]) -> Cell:
    n = len(values)
    mean = math.fsum(values) / n if n else math.nan
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return Cell(mean=mean, std=std, n=n, values=tuple(values))


def aggregate(records: list[RunRecord], metrics: list[str], columns: str = "metrics"):
    """rows -> column -> Cell. columns='metrics': rows are groups, one column per metric; columns='stage':
    rows are models, one column per stage, for the single metric."""
    rows: dict[str, dict[str, list[float]]] = {}
    order = sorted(records, key=lambda r: (r.group, r.seed, str(r.path)))
    if columns == "stage":
        if len(metrics) != 1:
            raise CausalrepError(f"--columns stage tabulates one metric; got {len(metrics)}: {', '.join(metrics)}")
        if any(r.stage is None for r in records):
            raise CausalrepError("--columns stage needs runs of a sweep with stages (their sweep.json names the stage)")
        stages = sorted({r.stage for r in records}, key=lambda s: min(r.stage_index for r in records if r.stage == s))
        for r in order:
            if numeric(r.metrics.get(metrics[0])):
                rows.setdefault(r.model, {}).setdefault(r.stage, []).append(float(r.metrics[metrics[0]]))
        cols = stages
    else:
        for r in order:
            row = rows.setdefault(r.group, {})
            for m in metrics:
                if numeric(r.metrics.get(m)):
                    row.setdefault(m, []).append(float(r.metrics[m]))
        cols = metrics
    return {g: {c: summarise(v.get(c, [])) for c in cols} for g, v in rows.items()}, cols


def runs_per_row(table: dict[str, dict[str, Cell]]) -> dict[str, int]:
    return {g: max((c.n for c in cells.values()), default=0) for g, cells in table.items()}


def fmt(cell: Cell, digits: int) -> str:
    if cell.n == 0:
        return "–"
    text = f"{cell.mean:.{digits}f}"
    return text if cell.n == 1 else f"{text} ± {cell.std:.{digits}f}"


LAYOUT_KEYS = ("title", "intro", "runs", "metrics", "columns", "rows", "labels", "paper", "paper_label", "digits",
               "notes")


@attrs.frozen
class Layout:
    """A results folder's table.yaml: how its table is printed in docs/results.md.

    title / intro: the heading and a paragraph above the table; metrics, columns, digits: as the CLI's;
    rows: row order (groups not listed follow, sorted) and labels: group -> printed name; paper: group ->
    {column: the paper's figure} (or a string such as "–"), printed in a column "<col> (<paper_label>)"
    after each column that has any; notes: lines printed under the table (command, data, estimator);
    runs: folders of the runs, relative to the table.yaml (default: its own folder), so a second table can
    be made of the same runs (claim b's FIDs of claim a's runs).
    """

    title: str | None = None
    intro: str | None = None
    runs: tuple[str, ...] = ()
    metrics: tuple[str, ...] | None = None
    columns: str = "metrics"
    rows: tuple[str, ...] = ()
    labels: dict[str, str] = attrs.Factory(dict)
    paper: dict[str, dict[str, Any]] = attrs.Factory(dict)
    paper_label: str = "paper"
    digits: int = 3
    notes: tuple[str, ...] = ()


def read_layout(folder: Path) -> Layout | None:
    """FOLDER/table.yaml as a Layout, or None when there is none; unknown keys name the file and key."""
    path = Path(folder) / "table.yaml"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise CausalrepError(f"{path}: expected a mapping of {', '.join(LAYOUT_KEYS)}")
    unknown = sorted(set(data) - set(LAYOUT_KEYS))
    if unknown:
        raise CausalrepError(f"{path}: unknown key {unknown[0]!r}; valid: {', '.join(LAYOUT_KEYS)}")
    for key in ("metrics", "rows", "notes", "runs"):
        if key in data:
            data[key] = tuple(data[key])
    return Layout(**data)


def order_rows(table: dict[str, dict[str, Cell]], first: tuple[str, ...]) -> dict[str, dict[str, Cell]]:
    """Rows listed in `first` in that order (those with runs), then the others sorted."""
    return {g: table[g] for g in [*[g for g in first if g in table], *sorted(g for g in table if g not in first)]}


def paper_cell(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if numeric(value) else ("–" if value is None else str(value))


def markdown_layout(table: dict[str, dict[str, Cell]], cols: list[str], layout: Layout, *, metric: str | None) -> str:
    """The table as docs/results.md prints it: heading, intro, rows in the layout's order with the paper's
    figure after each column it gives, then the notes."""
    table = order_rows(table, layout.rows)
    with_paper = [c for c in cols if any(c in layout.paper.get(g, {}) for g in table)]
    head, align = [], []
    for c in cols:
        head.append(NAMES.get(c, c))
        align.append("---:")
        if c in with_paper:
            head.append(f"{NAMES.get(c, c)} ({layout.paper_label})")
            align.append("---:")
    what = f"{metric}, " if metric else ""
    lines = [f"### {layout.title or 'runs'}", ""]
    if layout.intro:
        lines += [layout.intro.strip(), ""]
    lines += [f"{what}mean ± sample standard deviation over the runs (seeds) of each row", "",
              "| model | runs | " + " | ".join(head) + " |", "|---|---:|" + "|".join(align) + "|"]
    counts = runs_per_row(table)
    for g, cells in table.items():
        out = []
        for c in cols:
            out.append(fmt(cells[c], layout.digits))
            if c in with_paper:
                out.append(paper_cell(layout.paper.get(g, {}).get(c), layout.digits))
        lines.append(f"| {layout.labels.get(g, g)} | {counts[g]} | " + " | ".join(out) + " |")
    if layout.notes:
        lines += [""] + [n.rstrip() for n in layout.notes]
    return "\n".join(lines) + "\n"


def markdown(table: dict[str, dict[str, Cell]], cols: list[str], *, title: str, digits: int = 3,
             metric: str | None = None) -> str:
    """The table as Markdown: `| model | runs | DCI-d | ... |` with mean ± std cells."""
    head = [TABLE1.get(c, c) for c in cols]
    what = f"{metric}, " if metric else ""
    lines = [f"# {title}", "", f"{what}mean ± sample standard deviation over the runs (seeds) of each row", "",
             "| model | runs | " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(cols)]
    counts = runs_per_row(table)
    for g, cells in table.items():
        lines.append(f"| {g} | {counts[g]} | " + " | ".join(fmt(cells[c], digits) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, table: dict[str, dict[str, Cell]], cols: list[str]) -> None:
    """model, runs, then <column>_mean and <column>_std for every column (full precision; std nan for one run)."""
    counts = runs_per_row(table)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "runs", *[f"{c}_{s}" for c in cols for s in ("mean", "std")]])
        for g, cells in table.items():
            w.writerow([g, counts[g], *[repr(getattr(cells[c], s)) for c in cols for s in ("mean", "std")]])


def splice_docs(path: Path, source: str, text: str) -> None:
    """Replace the table between '<!-- table SOURCE -->' and the next '<!-- /table -->' in the Markdown file
    `path` by `text` (the markers stay, so the next run finds them); CausalrepError if they are missing."""
    if not path.is_file():
        raise CausalrepError(f"--docs: no such file: {path}")
    doc = path.read_text()
    begin = f"<!-- table {Path(source).as_posix().rstrip('/')} -->\n"
    start = doc.find(begin)
    end = doc.find("<!-- /table -->", start + len(begin)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise CausalrepError(f"--docs: {path} has no '{begin.strip()}' ... '<!-- /table -->' block; add the two "
                             "marker lines where the table belongs")
    path.write_text(doc[:start + len(begin)] + text + doc[end:])


def main(argv=None, prog: str = "python -m causalrep.table") -> int:
    p = argparse.ArgumentParser(prog=prog,
                                description="Tabulate finished runs: model x metric, mean ± std over seeds.")
    p.add_argument("runs", nargs="+", help="run folders, or directories searched for them (e.g. a sweep's --out)")
    p.add_argument("--metrics", help="comma-separated metric names, 'table1' (001 Table 1) or 'all' (default; "
                                     "a results folder's table.yaml may name them)")
    p.add_argument("--columns", choices=("metrics", "stage"), default=None,
                   help="metrics: one column per metric; stage: one column per sweep stage for a single metric "
                        "(001 Table 3: neither / encoder / decoder / both)")
    p.add_argument("--out", help="folder for table.md and table.csv (default: the first RUNS argument)")
    p.add_argument("--digits", type=int, default=None, help="decimals in table.md (default 3, as in 001)")
    p.add_argument("--docs", help="a Markdown file (e.g. docs/results.md) in which to replace the text between "
                                  "'<!-- table RUNS -->' and '<!-- /table -->' by the new table")
    args = p.parse_args(argv)
    try:
        layout = read_layout(Path(args.runs[0]))  # a results folder's table.yaml (docs/results.md's tables)
        sources = [str(Path(args.runs[0]) / r) for r in layout.runs] if layout and layout.runs else args.runs
        records = [read_run(r) for r in find_runs(sources)]
        wanted = args.metrics.split(",") if args.metrics else (list(layout.metrics) if layout and layout.metrics
                                                                else None)
        columns = args.columns or (layout.columns if layout else "metrics")
        metrics = choose_metrics(records, wanted)
        table, cols = aggregate(records, metrics, columns)
        out = Path(args.out or args.runs[0])
        out.mkdir(parents=True, exist_ok=True)
        metric = metrics[0] if columns == "stage" else None
        if layout is not None:
            if args.digits is not None:
                layout = attrs.evolve(layout, digits=args.digits)
            text = markdown_layout(table, cols, layout, metric=metric)
        else:
            title = ", ".join(sorted({json.loads((r.path / "sweep.json").read_text()).get("sweep", "")
                                      for r in records if (r.path / "sweep.json").is_file()} - {""})) or "runs"
            text = markdown(table, cols, title=title, digits=3 if args.digits is None else args.digits,
                            metric=metric)
        if args.docs:
            splice_docs(Path(args.docs), args.runs[0], text)
        (out / "table.md").write_text(text)
        write_csv(out / "table.csv", table, cols)
    except CausalrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(text + f"\nwrote {out / 'table.md'} and {out / 'table.csv'} ({len(records)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
