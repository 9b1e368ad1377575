"""Intervention grids: one row per intervened node, one column per value (003 Fig. 3's layout)."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..figures import labelled_grid


def intervention_tiles(model, x: torch.Tensor, values: Mapping[str, Sequence], *, on: str = "value",
                       with_input: bool = True) -> torch.Tensor:
    """(rows, width, C, R, R) tiles: row r = model.do(x[:1], {node_r: v}) for each v in values[node_r] (short rows
    padded with white), then (with_input) a row holding the input image and its reconstruction."""
    x = x[:1]
    width = max(max(len(v) for v in values.values()), 2 if with_input else 1)
    rows = []
    for node, vals in values.items():
        imgs = [model.do(x, {node: v}, on=on)[0] for v in vals]
        rows.append(imgs + [torch.ones_like(imgs[0])] * (width - len(imgs)))
    if with_input:
        rows.append([x[0], model.reconstruct(x)[0]] + [torch.ones_like(x[0])] * (width - 2))
    return torch.stack([torch.stack(r) for r in rows]).float().cpu()


@torch.no_grad()
def intervention_grid(model, x: torch.Tensor, values: Mapping[str, Sequence], *, on: str = "value",
                      with_input: bool = True, value_labels: Mapping[str, Sequence[str]] | None = None,
                      title: str | None = None) -> torch.Tensor:
    """(3, H, W) labelled grid of intervention_tiles: each row named do(node) (value_labels[node], the values in
    the user's units, become the row's text), the last row "input | reconstruction"; tiles upscaled (nearest)
    to a readable size by figures.labelled_grid."""
    tiles = intervention_tiles(model, x, values, on=on, with_input=with_input)
    labels = []
    for node in values:
        shown = value_labels.get(node) if value_labels else None
        labels.append(f"do({node})" + (f"\n{shown[0]} .. {shown[-1]}" if shown else ""))
    if with_input:
        labels.append("input |\nreconstruction")
    return labelled_grid(tiles, row_labels=labels, title=title)
