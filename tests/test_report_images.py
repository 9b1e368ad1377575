"""The report's graph pictures: graph.png (the latent graph, networkx layout) and, for a model that learns its graph,
adjacency.png (the learned weights, printed in their cells); both as PNGs in the run folder and in the tracker."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from causalrep.build import build_dataset, build_model, build_split
from causalrep.graph.draw import CELL, LABEL_W, _font, adjacency_heatmap, draw_graph, graph_side
from causalrep.report import write_report
from causalrep.spec import load_spec

from conftest import TINY, tiny_data

DISC = torch.tensor([210.0, 225.0, 255.0])  # draw_graph's node fill


class Recorder:
    """A Tracker that keeps what it is given."""

    def __init__(self):
        self.images: dict[str, tuple[torch.Tensor, int, str]] = {}

    def log_params(self, params):
        pass

    def log_metric(self, name, value, *, step, context="train"):
        pass

    def log_image(self, name, image, *, step, context="eval"):
        self.images[name] = (image.clone(), step, context)

    def close(self):
        pass


def png(path) -> torch.Tensor:
    """(H, W, 3) uint8 of a PNG file."""
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy())


def as_saved(image: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 as torchvision's save_image writes a (3, H, W) float image."""
    return image.mul(255).add(0.5).clamp(0, 255).permute(1, 2, 0).to(torch.uint8)


def discs(image_hwc: torch.Tensor) -> list[tuple[float, float]]:
    """(x, y) centres of the node discs: connected regions of the disc colour larger than a digit's counters."""
    mask = (image_hwc.float() == DISC).all(-1).numpy()
    labels, count = ndimage.label(mask)
    big = [k for k in range(1, count + 1) if (labels == k).sum() > 500]  # a disc is ~pi * 20^2 = 1257 px
    return [(cx, cy) for cy, cx in ndimage.center_of_mass(mask, labels, big)]


def rgb(image_hwc: torch.Tensor, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in image_hwc[y, x])


def user_data(tmp_path):
    """12 grey 10 x 10 PNGs with a continuous factor (12 distinct values, 4 bins) and a discrete one."""
    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(12):
        Image.fromarray(np.full((10, 10), 20 * i, dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
        rows.append([f"{i}.png", i * 1.5, i % 2])
    with open(tmp_path / "f.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "width", "side"], *rows])
    return {"name": "folder", "resolution": 16, "images": str(tmp_path / "imgs"), "factors": str(tmp_path / "f.csv"),
            "factor_bins": 4}


def test_graph_png_draws_the_latent_dag_and_goes_to_the_tracker(tmp_path):
    data = tiny_data("sae", 3, {"kind": "dag", "nodes": ["a", "b", "c"], "edges": [["a", "b"], ["b", "c"]]})
    spec = load_spec(data={**data, "data": user_data(tmp_path)})
    dataset = build_dataset(spec)
    model = build_model(spec, dataset).eval()
    model.store_latents(torch.randn(8, 3))
    run = tmp_path / "run"
    run.mkdir()
    tracker = Recorder()
    files = write_report(model=model, dataset=dataset, split=build_split(spec, dataset), run_dir=run,
                         metrics={"mig": 0.25}, tracker=tracker, step=7, traversal_steps=3)
    img = png(run / "graph.png")
    assert img.shape == (360, 360, 3) and files["graph"] == run / "graph.png"
    # networkx's circular layout of 3 nodes: (cos, sin) of 0, 120, 240 degrees, mapped to pixels
    # x = 70 + (px + 1) / 2 * 220, y = 70 + (1 - (py + 1) / 2) * 220: a (290, 180), b (125, 84.7), c (125, 275.3)
    centres = sorted(discs(img))
    expected = sorted([(290, 180), (125, 84.7), (125, 275.3)])
    assert len(centres) == 3  # within 1.5 px: the node's number printed on its disc takes a few pixels off
    assert all(abs(c[0] - e[0]) <= 1.5 and abs(c[1] - e[1]) <= 1.5 for c, e in zip(centres, expected)), centres
    # the edges a -> b and b -> c are drawn (black ink half-way between the discs), a - c is not
    assert rgb(img, (290 + 125) // 2, round((180 + 84.7) / 2)) == (0, 0, 0)
    assert rgb(img, 125, 180) == (0, 0, 0)
    assert rgb(img, (290 + 125) // 2, round((180 + 275.3) / 2)) == (255, 255, 255)
    # the tracker received the same picture, in the report's context at the report's step
    image, step, context = tracker.images["graph"]
    assert (step, context) == (7, "report") and torch.equal(as_saved(image), img)
    report = (run / "report.md").read_text()
    assert "![graph](graph.png)" in report
    # your own data: the factors' discretisation is in report.md and factors.json. width: 0, 1.5, ..., 16.5 in 4
    # equal-width bins of 4.125 (edges 0, 4.125, 8.25, 12.375, 16.5); side has 2 values, kept as they are
    factors = json.loads((run / "factors.json").read_text())
    assert factors[0]["edges"] == [0, 4.125, 8.25, 12.375, 16.5] and factors[1]["kind"] == "discrete"
    assert "| width | 12 | 4 equal-width bins | 4 | 0, 4.125, 8.25, 12.38, 16.5 |" in report
    assert "| side | 2 | discrete | 2 | 0, 1 |" in report


def test_big_graphs_get_a_canvas_where_no_discs_overlap():
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(f"u{i}" for i in range(16))
    img = as_saved(draw_graph(g))
    side = graph_side(16)  # neighbours' chord 2 R sin(pi / 16) >= 52 px: R >= 133.3, side = 2 R + 140 -> 407
    assert side == 407 and img.shape == (407, 407, 3)
    assert len(discs(img)) == 16
    assert graph_side(4) == 360 and as_saved(draw_graph(nx.path_graph(4, nx.DiGraph))).shape == (360, 360, 3)


def cell_reference(value: float, scale: float, framed: bool) -> torch.Tensor:
    """One adjacency cell drawn the documented way: blue (c, c, 255) / red (255, c, c) with c = int(255 (1 - |w|)),
    w = value / scale, its value printed "%+.2f" at (8, CELL / 2 - 7), black text on light cells, white on dark."""
    w = value / scale
    c = int(255 * (1 - abs(w)))
    img = Image.new("RGB", (CELL, CELL), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, CELL - 2, CELL - 2], fill=(c, c, 255) if w >= 0 else (255, c, c),
                outline="black" if framed else (200, 200, 200), width=3 if framed else 1)
    d.text((8, CELL // 2 - 7), f"{value:+.2f}", fill="black" if abs(w) < 0.6 else "white", font=_font())
    return torch.from_numpy(np.asarray(img).copy())


def test_adjacency_png_prints_the_learned_weights_and_goes_to_the_tracker(tmp_path):
    spec = load_spec(data=tiny_data("causalvae", 4, {"kind": "learned", "nodes": ["scale", "orientation"]}))
    dataset = build_dataset(spec)
    model = build_model(spec, dataset).eval()
    a = torch.tensor([[0.0, 0.8], [-0.4, 0.0]])
    with torch.no_grad():
        model.adjacency.weight.copy_(a)
    model.store_latents(torch.randn(8, 4))
    run = tmp_path / "run"
    run.mkdir()
    tracker = Recorder()
    files = write_report(model=model, dataset=dataset, split=build_split(spec, dataset), run_dir=run,
                         metrics={}, tracker=tracker, step=4, traversal_steps=3)
    assert "graph" not in files  # a learned graph is drawn by the model: learned_graph.png, with adjacency.png
    heat = png(run / "adjacency.png")
    top = 24  # the column numbers above the cells
    assert heat.shape == (top + 2 * CELL + 24, LABEL_W + 2 * CELL + 8, 3)
    for i in range(2):
        for j in range(2):
            x0, y0 = LABEL_W + j * CELL, top + i * CELL
            cell = heat[y0:y0 + CELL, x0:x0 + CELL]
            want = cell_reference(float(a[i, j]), 0.8, framed=abs(float(a[i, j])) > 0.3)
            assert torch.equal(cell[:CELL - 1, :CELL - 1], want[:CELL - 1, :CELL - 1]), (i, j)
    # the reference is specific: the cell of 0.80 is not the drawing of 0.81 or of -0.80
    cell = heat[top:top + CELL, LABEL_W + CELL:LABEL_W + 2 * CELL][:CELL - 1, :CELL - 1]
    for wrong in (0.81, 0.79):
        assert not torch.equal(cell, cell_reference(wrong, 0.8, True)[:CELL - 1, :CELL - 1])
    assert rgb(heat, LABEL_W + CELL + CELL - 10, top + 8) == (0, 0, 255)  # 0.8 = max|A|: pure blue
    assert rgb(heat, LABEL_W + CELL - 10, top + CELL + 8) == (255, 127, 127)  # -0.4: red at half intensity
    # the same images in the tracker, and the learned graph beside it (edges |A| > 0.3: both)
    for name in ("adjacency", "learned_graph"):
        image, step, context = tracker.images[name]
        assert (step, context) == (4, "report") and torch.equal(as_saved(image), png(run / f"{name}.png")), name
    assert torch.equal(tracker.images["adjacency"][0], adjacency_heatmap(a, ["scale", "orientation"], 0.3))
    assert len(discs(png(run / "learned_graph.png"))) == 2
