"""Report figures: labelled_grid's upscaling, layout and labels, and the PNGs write_report leaves in a run."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from causalrep.build import build_model
from causalrep.experiment import Experiment
from causalrep.report import labelled_grid, traversal_values

from conftest import tiny_spec

PAD = 0.5  # labelled_grid's default frame value: never a text pixel (k / 255 is never 0.5)


def known_tiles(n_rows=2, n_cols=3, ch=3, h=8, w=8) -> torch.Tensor:
    """(R, C, ch, h, w) with every pixel distinct and a multiple of 1/1024 inside (0, 1)."""
    n = n_rows * n_cols * ch * h * w
    return (torch.arange(n, dtype=torch.float32) % 1000 + 1).div(1024).reshape(n_rows, n_cols, ch, h, w)


def frame_origin(image: torch.Tensor) -> tuple[int, int]:
    """(top, left) of the pad-valued frame around the tiles, i.e. where the image part starts."""
    frame = (image == PAD).all(0)
    rows, cols = frame.any(1).nonzero(), frame.any(0).nonzero()
    return int(rows[0]), int(cols[0])


def test_tiles_are_upscaled_nearest_to_the_minimum_side():
    tiles = known_tiles()  # 2 x 3 tiles of 8 px: the shorter side (2 x 8) needs k = 16 to reach 256
    grid = labelled_grid(tiles, pad=2)
    k, pad = 16, 2
    assert grid.shape == (3, 2 * (8 * k + pad) + pad, 3 * (8 * k + pad) + pad)
    assert min(grid.shape[1:]) >= 256
    r, c = 1, 2  # the last tile: each source pixel (i, j) is a constant k x k block of its value
    for i, j in [(0, 0), (3, 5), (7, 7)]:
        y = pad + r * (8 * k + pad) + i * k
        x = pad + c * (8 * k + pad) + j * k
        block = grid[:, y:y + k, x:x + k]
        assert torch.equal(block, tiles[r, c, :, i, j][:, None, None].expand(3, k, k))
    assert (grid[:, :pad] == PAD).all() and (grid[:, :, :pad] == PAD).all()  # the frame


def test_minimum_side_is_a_parameter_and_big_tiles_are_not_scaled():
    assert labelled_grid(known_tiles(h=8, w=8), min_side=64, min_tile=1).shape[1] == 2 * (8 * 4 + 2) + 2  # k = 4
    # each tile at least min_tile px: 12 rows of 32 px tiles already pass 256 at k = 1, min_tile 64 asks k = 2
    assert labelled_grid(torch.rand(12, 9, 3, 32, 32)).shape[1] == 12 * (32 * 2 + 2) + 2
    assert labelled_grid(torch.rand(12, 9, 3, 32, 32), min_tile=1).shape[1] == 12 * (32 + 2) + 2
    big = torch.rand(2, 2, 3, 200, 200)
    assert labelled_grid(big).shape == (3, 2 * 202 + 2, 2 * 202 + 2)  # k = 1


def test_labels_change_only_the_margins():
    tiles = known_tiles()
    plain = labelled_grid(tiles)
    labelled = labelled_grid(tiles, row_labels=["input", "reconstruction"], col_labels=["0", "1\nsecond line", "2"],
                             title="a title")
    top, left = frame_origin(labelled)
    assert top > 0 and left > 0
    h, w = plain.shape[1:]
    assert torch.equal(labelled[:, top:top + h, left:left + w], plain)  # the image part is untouched
    ink = (labelled < 0.9).any(0)  # text pixels (the margins are white)
    ink[top:top + h, left:left + w] = False
    assert ink[top:top + h, :left].any()  # row labels: left of the tiles, beside them
    assert ink[:top, left:left + w].any()  # column labels and title: above the tiles
    assert not ink[top + h:].any()  # nothing below


def test_single_channel_tiles_become_three_equal_channels():
    grid = labelled_grid(known_tiles(ch=1), row_labels=["a", "b"])
    assert grid.shape[0] == 3
    assert torch.equal(grid[0], grid[1]) and torch.equal(grid[1], grid[2])


def test_wrong_label_counts_and_shapes_are_errors():
    with pytest.raises(ValueError, match="row_labels has 1 labels for 2 rows"):
        labelled_grid(known_tiles(), row_labels=["only one"])
    with pytest.raises(ValueError, match=r"\(rows, cols"):
        labelled_grid(torch.rand(4, 3, 8, 8))


def test_traversal_values_are_the_values_traverse_sets():
    model = build_model(tiny_spec("sae", 4, {"kind": "chain", "nodes": 2}, overrides=["evaluate.hybrid_latents=8"]))
    model.eval()
    model.store_latents(torch.randn(8, 4))
    x = torch.rand(2, 1, 16, 16)
    values = traversal_values(model, "u2", 3)
    assert values.shape == (3, 2)
    u = model.encode(x)
    expected = torch.stack([model.decode(model.intervene(u, {"u2": v})) for v in values], dim=1)
    assert torch.equal(model.traverse(x, "u2", 3), expected)


def test_every_report_png_is_at_least_256_px_and_traversals_is_written(tmp_path):
    exp = Experiment(tiny_spec("sae"), out=tmp_path, progress=False)
    exp.run()
    d = exp.run_dir
    assert (d / "traversals.png").is_file()
    assert "![traversals](traversals.png)" in (d / "report.md").read_text()
    pngs = sorted(d.glob("*.png"))
    assert {"reconstructions.png", "traversals.png", "samples_hybrid.png",
            *[f"traversal_{n}.png" for n in exp.graph.nodes]} <= {p.name for p in pngs}
    for p in pngs:  # a tiny sae writes no matrix heat maps
        with Image.open(p) as im:
            assert min(im.size) >= 256, (p.name, im.size)


def test_baseline_means_go_beside_each_metric_in_report_and_summary(tmp_path):
    import json

    from causalrep.errors import SpecError
    from causalrep.report import markdown, read_baseline, summary

    for seed, (mig, dci) in enumerate([(0.1, 0.2), (0.3, 0.4)]):
        run = tmp_path / "ae" / f"s{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"mig": mig, "dci_disentanglement": dci, "step": 5}))
    base = read_baseline(tmp_path / "ae")
    assert base.runs == 2 and base.means == pytest.approx({"mig": 0.2, "dci_disentanglement": 0.3})
    md = markdown({"mig": 0.5, "sap": 0.25}, {}, "t", baseline=base)
    assert "| metric | value | baseline |" in md
    assert "| mig | 0.5 | 0.2 |" in md and "| sap | 0.25 | – |" in md  # a metric the baseline lacks: a dash
    text = summary({"mig": 0.5}, base)
    assert "baseline:" in text.splitlines()[0] and text.splitlines()[1].split() == ["mig", "0.5", "0.2"]
    with pytest.raises(SpecError, match="evaluate.baseline: no finished runs"):
        read_baseline(tmp_path / "none")
    # an Experiment checks its baseline folder before it trains anything
    with pytest.raises(SpecError, match="evaluate.baseline"):
        Experiment(tiny_spec("sae", overrides=[f"evaluate.baseline={tmp_path / 'none'}"]), out=tmp_path / "runs",
                   progress=False)
    assert not (tmp_path / "runs").exists()  # and leaves no empty run folder behind
