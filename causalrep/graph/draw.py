"""Pictures of graphs as image tensors: a weighted adjacency heat map and a drawn DAG (PIL, networkx layout)."""
from __future__ import annotations

import math
from typing import Sequence

import networkx as nx
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

CELL = 64  # heat-map cell side in pixels
LABEL_W = 150  # room for row names


def _font(size: int = 13) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def adjacency_heatmap(a: torch.Tensor | np.ndarray, nodes: Sequence[str], threshold: float | None = None) -> torch.Tensor:
    """(3, H, W) image of A: row i = parent, column j = child; blue for positive weights, red for negative,
    intensity |A_ij| / max|A|; each cell prints its value, framed in black where |A_ij| > threshold."""
    a = np.asarray(a.detach().cpu() if torch.is_tensor(a) else a, dtype=np.float64)
    n = a.shape[0]
    if a.shape != (n, n) or len(nodes) != n:
        raise ValueError(f"adjacency_heatmap: expected an (n, n) matrix for {len(nodes)} nodes, got {a.shape}")
    scale = max(float(np.abs(a).max()), 1e-12)
    top = 24
    img = Image.new("RGB", (LABEL_W + n * CELL + 8, top + n * CELL + 8 + 16), "white")
    d = ImageDraw.Draw(img)
    font = _font()
    for i in range(n):
        d.text((4, top + i * CELL + CELL // 2 - 7), f"{i + 1} {nodes[i]}"[:22], fill="black", font=font)
        d.text((LABEL_W + j_center(i) - 4, 4), str(i + 1), fill="black", font=font)
        for j in range(n):
            w = a[i, j] / scale
            c = int(255 * (1 - abs(w)))
            fill = (c, c, 255) if w >= 0 else (255, c, c)
            x0, y0 = LABEL_W + j * CELL, top + i * CELL
            outline = "black" if threshold is not None and abs(a[i, j]) > threshold else (200, 200, 200)
            d.rectangle([x0, y0, x0 + CELL - 2, y0 + CELL - 2], fill=fill, outline=outline,
                        width=3 if outline == "black" else 1)
            d.text((x0 + 8, y0 + CELL // 2 - 7), f"{a[i, j]:+.2f}", fill="black" if abs(w) < 0.6 else "white",
                   font=font)
    d.text((4, top + n * CELL + 6), "row = parent, column = child" + (f"; framed: |A| > {threshold:g}"
                                                                     if threshold is not None else ""),
           fill="black", font=font)
    return _to_tensor(img)


def j_center(j: int) -> int:
    return j * CELL + CELL // 2


DISC_R = 22  # node disc radius in pixels
MARGIN = 70  # canvas border around the layout (room for the names under the discs)
MAX_SIDE = 2048  # largest automatic canvas: past ~115 nodes neighbouring discs touch


def graph_side(n: int, least: int = 360) -> int:
    """Canvas side that keeps neighbouring discs of an n-node circular layout 8 px apart: the chord between
    neighbours, 2 R sin(pi / n), at least 2 DISC_R + 8, R the layout's radius in pixels; at least `least`."""
    if n < 2:
        return least
    radius = (DISC_R + 4) / math.sin(math.pi / n)
    return int(min(MAX_SIDE, max(least, math.ceil(2 * radius + 2 * MARGIN))))


def draw_graph(g: nx.DiGraph, size: int | None = None) -> torch.Tensor:
    """(3, size, size) drawing of a DAG: nodes on networkx's circular layout, arrows parent -> child; the
    default size is graph_side(number of nodes): 360 px up to 13 nodes, larger beyond so discs do not overlap."""
    nodes = list(g.nodes)
    size = graph_side(len(nodes)) if size is None else size
    pos = nx.circular_layout(g) if nodes else {}
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    font = _font()
    r = DISC_R
    margin = MARGIN

    def xy(v) -> tuple[float, float]:
        px, py = pos[v]
        return margin + (px + 1) / 2 * (size - 2 * margin), margin + (1 - (py + 1) / 2) * (size - 2 * margin)

    for u, v in g.edges:
        (x0, y0), (x1, y1) = xy(u), xy(v)
        ang = math.atan2(y1 - y0, x1 - x0)
        sx, sy = x0 + r * math.cos(ang), y0 + r * math.sin(ang)
        ex, ey = x1 - r * math.cos(ang), y1 - r * math.sin(ang)
        d.line([sx, sy, ex, ey], fill="black", width=2)
        head = [(ex, ey), (ex - 12 * math.cos(ang - 0.4), ey - 12 * math.sin(ang - 0.4)),
                (ex - 12 * math.cos(ang + 0.4), ey - 12 * math.sin(ang + 0.4))]
        d.polygon(head, fill="black")
    for i, v in enumerate(nodes):
        x, y = xy(v)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(210, 225, 255), outline="black", width=2)
        d.text((x - 4, y - 7), str(i + 1), fill="black", font=font)
        d.text((x - 40, y + r + 2), str(v)[:16], fill="black", font=font)
    return _to_tensor(img)
