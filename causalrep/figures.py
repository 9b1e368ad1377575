"""Figures as (3, H, W) image tensors in [0, 1], drawn with PIL's built-in font (no plotting library): labelled
grids of image tiles and labelled heat maps of matrices. Imports nothing of causalrep, so any layer can draw."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, ImportError):  # older Pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _grid_labels(labels: Sequence[Any] | None, n: int, what: str) -> list[list[str]] | None:
    """Each label as its lines; None stays None; a wrong count is an error naming what and both counts."""
    if labels is None:
        return None
    if len(labels) != n:
        raise ValueError(f"labelled_grid: {what} has {len(labels)} labels for {n} {what.split('_')[0]}s")
    return [str(v).split("\n") for v in labels]


def labelled_grid(tiles: torch.Tensor, *, row_labels: Sequence[Any] | None = None,
                  col_labels: Sequence[Any] | None = None, title: str | None = None, min_side: int = 256,
                  min_tile: int = 64,
                  pad: int = 2, pad_value: float = 0.5, font_size: int = 12) -> torch.Tensor:
    """Tiles (R, C, ch, h, w) in [0, 1] (ch 1 or 3) drawn as one labelled image: (3, H, W) float in [0, 1].

    Every tile is upscaled by the smallest integer factor k that makes each tile at least min_tile px on its
    shorter side and the R x C tiles at least min_side px
    on their shorter side, nearest neighbour (each pixel becomes a k x k block of its value), and the tiles
    sit pad px apart on a pad_value frame. Row labels go on the left, column labels above, the title on top,
    in white margins (PIL's built-in font; a label may have several lines); with none of them the image is
    the frame alone. 1-channel tiles become 3 equal channels.
    """
    if tiles.dim() != 5 or tiles.shape[2] not in (1, 3):
        raise ValueError(f"labelled_grid: tiles must be (rows, cols, 1 or 3 channels, h, w); got {tuple(tiles.shape)}")
    n_rows, n_cols, _, h, w = tiles.shape
    rows, cols = _grid_labels(row_labels, n_rows, "row_labels"), _grid_labels(col_labels, n_cols, "col_labels")
    k = max(1, math.ceil(min_side / min(n_rows * h, n_cols * w)), math.ceil(min_tile / min(h, w)))
    t = tiles.detach().float().cpu().clamp(0, 1).expand(-1, -1, 3, -1, -1)
    t = t.repeat_interleave(k, dim=3).repeat_interleave(k, dim=4)  # nearest: (R, C, 3, k h, k w)
    th, tw = h * k, w * k
    # each tile padded right and below, laid out row-major, then the frame's top and left edges
    t = F.pad(t, (0, pad, 0, pad), value=pad_value).permute(2, 0, 3, 1, 4)
    grid = F.pad(t.reshape(3, n_rows * (th + pad), n_cols * (tw + pad)), (pad, 0, pad, 0), value=pad_value)
    if rows is None and cols is None and title is None:
        return grid.contiguous()

    font = _font(font_size)
    line = font.getbbox("Ag")[3] + 3  # line height

    def width(lines: list[str]) -> float:
        return max(font.getlength(s) for s in lines)

    margin, gap = 6, 6
    over = max(0.0, max(width(c) for c in cols) - tw) / 2 if cols else 0.0  # column labels wider than a tile
    left = math.ceil(max([margin + over, *(margin + width(r) + gap for r in rows or [])]))
    title_lines = title.split("\n") if title is not None else []
    top = margin + line * len(title_lines) + (4 if title_lines else 0)
    top += line * max(len(c) for c in cols) + 4 if cols else 0
    gh, gw = grid.shape[1:]
    title_w = math.ceil(width(title_lines)) if title_lines else 0
    size = (max(left + gw + math.ceil(over) + margin, title_w + 2 * margin), top + gh + margin)
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    for i, s in enumerate(title_lines):  # centred over the tiles, kept inside the image
        x = min(max(margin, left + gw / 2 - font.getlength(s) / 2), size[0] - margin - font.getlength(s))
        draw.text((x, margin + i * line), s, fill="black", font=font)
    for c, lines in enumerate(cols or []):  # centred above each column, the last line just above the frame
        xc = left + pad + c * (tw + pad) + tw / 2
        for i, s in enumerate(lines):
            draw.text((xc - font.getlength(s) / 2, top - 4 - (len(lines) - i) * line), s, fill="black", font=font)
    for r, lines in enumerate(rows or []):  # right-aligned left of each row, centred on it
        yc = top + pad + r * (th + pad) + th / 2
        for i, s in enumerate(lines):
            draw.text((left - gap - font.getlength(s), yc - len(lines) * line / 2 + i * line), s, fill="black",
                      font=font)
    out = torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255
    out[:, top:top + gh, left:left + gw] = grid  # the tiles exactly (not through uint8)
    return out


def axis_labels(names: Any, n: int) -> list[str]:
    """`names` as strings when it is a list or tuple of n of them, else the indices 0..n-1."""
    ok = isinstance(names, (list, tuple)) and len(names) == n
    return [str(v) for v in names] if ok else [str(i) for i in range(n)]


def matrix_heatmap(matrix: torch.Tensor, *, rows: Any = None, cols: Any = None, title: str | None = None,
                   cell: int = 34) -> torch.Tensor:
    """A (R, K) matrix of values in [0, 1] drawn as a labelled heat map: (3, H, W) float in [0, 1].

    Each cell is shaded white (0) to dark blue (1) and printed in percent; rows and cols label the rows and
    columns (lists of the right length, else indices). Drawn with PIL's built-in font (no plotting library).
    """
    m = matrix.detach().float().cpu().clamp(0, 1)
    n_rows, n_cols = m.shape
    rows, cols = axis_labels(rows, n_rows), axis_labels(cols, n_cols)
    font = ImageFont.load_default()
    left = 8 + max(int(font.getlength(r)) for r in rows)
    top = 8 + 14 * (title is not None) + 14
    img = Image.new("RGB", (left + cell * n_cols + 8, top + cell * n_rows + 8), "white")
    draw = ImageDraw.Draw(img)
    if title is not None:
        draw.text((left, 4), title, fill="black", font=font)
    for j, c in enumerate(cols):
        draw.text((left + j * cell + cell // 2, top - 2), c, fill="black", font=font, anchor="ms")
    light, dark = np.array([255, 255, 255]), np.array([8, 48, 107])  # white -> dark blue
    for i, r in enumerate(rows):
        y = top + i * cell
        draw.text((left - 4, y + cell // 2), r, fill="black", font=font, anchor="rm")
        for j in range(n_cols):
            v = float(m[i, j])
            colour = tuple(int(c) for c in np.round(light + v * (dark - light)))
            x0 = left + j * cell
            draw.rectangle([x0, y, x0 + cell - 1, y + cell - 1], fill=colour, outline=(200, 200, 200))
            if v >= 0.005:
                draw.text((x0 + cell // 2, y + cell // 2), f"{100 * v:.0f}", font=font, anchor="mm",
                          fill="white" if v > 0.5 else "black")
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


# line colours of line_plot, one per series in order (Tableau 10's first eight, as RGB)
LINE_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                (227, 119, 194), (127, 127, 127))


def plot_frame(xs: Sequence[float], ys: Sequence[float], *, width: int, height: int, left: int = 48,
               right: int = 12, top: int = 30, bottom: int = 30) -> tuple[Any, Any]:
    """The linear maps (x -> column, y -> row) of a plot area inside a width x height image with the given
    margins: x from min(xs) to max(xs), y from min(ys) to max(ys), widened to [0, 1] when every y lies in it
    (scores) and by half a unit when the range is empty."""
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if 0.0 <= y0 and y1 <= 1.0:
        y0, y1 = 0.0, 1.0
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    sx = (width - left - right) / (x1 - x0)
    sy = (height - top - bottom) / (y1 - y0)
    return (lambda x: left + (x - x0) * sx), (lambda y: height - bottom - (y - y0) * sy)


def line_plot(series: dict[str, Sequence[tuple[float, float]]], *, title: str | None = None, width: int = 560,
              height: int = 320, xlabel: str = "step") -> torch.Tensor:
    """Curves as one image: series {name: [(x, y), ...]} (each sorted by x) -> (3, H, W) float in [0, 1].

    One polyline with a dot per point for each series (LINE_COLOURS in order), y gridlines at five levels with
    their values, x ticks at each series' points' range ends and middle, a legend in the top margin. Drawn with
    PIL's built-in font (no plotting library), e.g. the report's curves.png of the disentanglement curves.
    """
    series = {k: list(v) for k, v in series.items() if len(v)}
    if not series:
        raise ValueError("line_plot: no points to draw")
    if len(series) > len(LINE_COLOURS):
        raise ValueError(f"line_plot: at most {len(LINE_COLOURS)} series; got {len(series)}")
    xs = [p[0] for v in series.values() for p in v]
    ys = [p[1] for v in series.values() for p in v]
    px, py = plot_frame(xs, ys, width=width, height=height)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = _font(11)
    y_lo, y_hi = (0.0, 1.0) if 0.0 <= min(ys) and max(ys) <= 1.0 else (min(ys), max(ys))
    for k in range(5):  # gridlines and their values
        v = y_lo + (y_hi - y_lo) * k / 4
        y = py(v)
        draw.line([(px(min(xs)), y), (width - 12, y)], fill=(225, 225, 225))
        draw.text((44, y), f"{v:.3g}", fill="black", font=font, anchor="rm")
    x_lo, x_hi = min(xs), max(xs)
    for v in sorted({x_lo, (x_lo + x_hi) / 2, x_hi}):  # the last one right-aligned to its point: inside the image
        draw.text((px(v), height - 26), f"{v:.6g}", fill="black", font=font, anchor="rt" if v == x_hi > x_lo else "mt")
    draw.text((width - 12, height - 1), xlabel, fill="black", font=font, anchor="rb")  # below the ticks
    draw.rectangle([px(x_lo), py(y_hi), width - 12, py(y_lo)], outline=(150, 150, 150))
    x_legend = 48
    for (name, pts), colour in zip(series.items(), LINE_COLOURS):
        pts = [(px(x), py(y)) for x, y in pts]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.rectangle([x_legend, 8, x_legend + 10, 18], fill=colour)
        draw.text((x_legend + 14, 13), name, fill="black", font=font, anchor="lm")
        x_legend += 24 + int(font.getlength(name))
    if title is not None:
        draw.text((width - 12, 13), title, fill="black", font=font, anchor="rm")
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
