"""Your own data: a folder of PNGs with a CSV of factors, and an HDF5 file, each written by the test itself."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from causalrep.build import build_dataset, check_spec, train_split_size
from causalrep.data import DATASETS
from causalrep.data.user import HDF5Images, ImageFolder, discretise
from causalrep.errors import DataError, SpecError
from causalrep.spec import load_spec

from conftest import TINY

# x: 10 distinct values > 4 bins -> binned. np.histogram's edges over [0, 10]: 0, 2.5, 5, 7.5, 10; a value's bin is
# the number of left edges <= it (disentanglement_lib), so 0, 1, 2 -> bin 1; 3, 4 -> 2; 5, 6, 7 -> 3; 8, 10 -> 4
X = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]
X_INDEX = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
K = [0.5, 2.0, 0.5, 2.0, 0.5, 2.0, 0.5, 2.0, 0.5, 2.0]  # 2 distinct values <= 4: discrete, 0.5 -> 0, 2.0 -> 1
SHAPE = ["square", "circle"] * 5  # names: categorical, sorted: circle -> 0, square -> 1
SIZES = [(8, 8), (12, 20), (30, 16), (16, 16), (5, 9), (64, 48), (16, 16), (10, 10), (7, 21), (33, 33)]  # (w, h)


def grey(row: int) -> int:
    return 20 * row + 10  # each row's image is one constant grey level: it tells which row an image came from


def write_folder(root: Path, rows=None, header=("file", "x", "k", "shape"), rgb_row: int | None = None) -> tuple[Path, Path]:
    """root/imgs/im<i>.png (constant grey images of different sizes) and root/factors.csv."""
    folder = root / "imgs"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(SIZES):
        a = np.full((h, w), grey(i), dtype=np.uint8)
        img = Image.fromarray(a, "L")
        if i == rgb_row:
            img = Image.fromarray(np.stack([a, a // 2, np.zeros_like(a)], axis=-1), "RGB")
        img.save(folder / f"im{i}.png")
    if rows is None:
        rows = [[f"im{i}.png", X[i], K[i], SHAPE[i]] for i in range(len(X))]
    path = root / "factors.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return folder, path


def test_folder_reads_factor_names_values_and_images(tmp_path):
    folder, path = write_folder(tmp_path)
    ds = ImageFolder(images=str(folder), factors=str(path), resolution=16, factor_bins=4)
    assert ds.factor_names == ("x", "k", "shape") and len(ds) == 10 and ds.channels == 1
    assert ds.factor_sizes == (4, 2, 2)
    assert ds.index_to_factors(np.arange(10)).tolist() == [[X_INDEX[i], int(K[i] == 2.0), int(SHAPE[i] == "square")]
                                                            for i in range(10)]
    table = {t["factor"]: t for t in ds.factor_table()}
    assert table["x"]["kind"] == "binned" and table["x"]["bins"] == 4 and table["x"]["edges"] == [0, 2.5, 5, 7.5, 10]
    assert table["k"] == {"factor": "k", "kind": "discrete", "distinct": 2, "size": 2, "values": [0.5, 2.0]}
    assert table["shape"]["values"] == ["circle", "square"] and ds.factor_value_names == {"shape": ("circle", "square")}
    # labels: a binned factor's bin centre, a discrete factor's value, a category's index
    assert ds.labels(ds.index_to_factors([3, 9])).tolist() == [[3.75, 2.0, 0.0], [8.75, 2.0, 0.0]]
    # every image resized from its own size to 16 x 16; a constant image stays its grey level exactly
    x = ds.images_at(np.arange(10))
    assert x.shape == (10, 1, 16, 16) and x.dtype == torch.float32
    assert torch.equal(x, torch.tensor([grey(i) / 255 for i in range(10)]).view(10, 1, 1, 1).expand(10, 1, 16, 16))


def test_discretisation_keeps_only_occupied_bins():
    # 5 distinct values > 4 bins; edges 0, 2.5, 5, 7.5, 10: 0, 0.1, 0.2 in bin 1, 9.9 and 10 in bin 4, bins 2-3 empty
    codes, table, values = discretise([np.array([0, 0.1, 0.2, 9.9, 10.0])], ["v"], 4, "here")
    assert codes[:, 0].tolist() == [0, 0, 0, 1, 1]
    assert table[0]["size"] == 2 and table[0]["empty_bins"] == [1, 2]
    assert values[0].tolist() == [1.25, 8.75]  # the centres of bins 1 and 4
    with pytest.raises(DataError, match="here: factor 'c' takes one value"):
        discretise([np.array([3.0, 3.0])], ["c"], 4, "here")


def test_images_of_factors_come_from_rows_with_those_factors(tmp_path):
    folder, path = write_folder(tmp_path)
    ds = ImageFolder(images=str(folder), factors=str(path), resolution=8, factor_bins=4)
    # rows 0 and 2 share (x 0, k 0.5, square): two requests for that tuple take row 0, then row 2; a third row 0
    f = ds.index_to_factors([0, 0, 0, 5])
    got = ds.images(f)[:, 0, 0, 0].mul(255).round().int().tolist()
    assert got == [grey(0), grey(2), grey(0), grey(5)]
    assert ds.factors_to_index(f).tolist() == [0, 0, 0, 5]
    with pytest.raises(DataError, match=r"no row has the factor indices \(3, 0, 0\)"):
        ds.images(np.array([[3, 0, 0]]))  # x bin 4 holds rows 8 (k 0.5, square: (3, 0, 1)) and 9 ((3, 1, 0))
    # sample_factors draws rows: every sampled tuple is one of the rows', each row about equally often
    s = ds.sample_factors(5000, np.random.default_rng(0))
    rows = ds.images(s)[:, 0, 0, 0].mul(255).round().int().numpy()
    counts = np.bincount((rows - 10) // 20, minlength=10)
    assert counts.sum() == 5000 and counts.min() > 400 and counts.max() < 600  # 500 +- 4.5 sigma
    assert np.array_equal(ds.index_to_factors((rows - 10) // 20), s)


def test_fix_factor_keeps_matching_rows_and_draws_the_others_from_rows_with_the_value(tmp_path):
    folder, path = write_folder(tmp_path)
    ds = ImageFolder(images=str(folder), factors=str(path), resolution=8, factor_bins=4)
    f = ds.index_to_factors(np.arange(10))
    out = ds.fix_factor(f, np.zeros(10, dtype=int), np.full(10, 2), np.random.default_rng(0))  # do(x index = 2)
    assert (out[:, 0] == 2).all()
    assert np.array_equal(out[5:8], f[5:8])  # rows 5-7 already had x index 2: kept
    rows_with_2 = {tuple(r) for r in f[5:8].tolist()}
    assert {tuple(r) for r in out.tolist()} <= rows_with_2  # the others: a row whose x index is 2
    # the grid default only overwrites the entry
    dsprites = DATASETS.get("dsprites")(resolution=16)
    g = dsprites.sample_factors(3, np.random.default_rng(0))
    fixed = dsprites.fix_factor(g, np.array([0, 1, 2]), np.array([2, 5, 39]), np.random.default_rng(0))
    want = g.copy()
    want[[0, 1, 2], [0, 1, 2]] = [2, 5, 39]
    assert np.array_equal(fixed, want)


def test_colour_images_make_every_image_three_channels(tmp_path):
    folder, path = write_folder(tmp_path, rgb_row=3)
    ds = ImageFolder(images=str(folder), factors=str(path), resolution=8)
    assert ds.channels == 3
    x = ds.images_at([3, 4]).mul(255).round().int()
    assert x[0, :, 0, 0].tolist() == [grey(3), grey(3) // 2, 0]
    assert x[1, :, 0, 0].tolist() == [grey(4)] * 3  # grey rows are repeated over the channels


@pytest.mark.parametrize("rows, header, match", [
    (None, ("name", "x", "k", "shape"), r"factors.csv, line 1: no column 'file' naming the image files; header: name"),
    ([["im0.png", 1, 2, "a"], ["im1.png", 3, 4]], None, r"factors.csv, line 3: 3 fields; the header has 4"),
    ([["im0.png", 1, 2, "a"], ["im1.png", 3, 4, "b"], ["im99.png", 5, 6, "c"]], None,
     r"factors.csv, line 4: image file not found: .*imgs/im99.png"),
    ([["im0.png", 1, 2, "a"], ["im1.png", "nan", 4, "b"]], None, r"factors.csv, line 3, column 'x': nan is not a finite"),
    ([["im0.png", 1, "", "a"], ["im1.png", 2, 4, "b"]], None, r"factors.csv, line 2, column 'k': empty value"),
    ([["im0.png", 1, 2, "a"], ["im1.png", 2, 4, "b"], ["im2.png", "x3", 4, "b"]], None,
     r"factors.csv, line 4, column 'x': 'x3' mixes numbers and names"),
])
def test_bad_csv_names_file_line_and_column(tmp_path, rows, header, match):
    folder, path = write_folder(tmp_path, rows=rows, header=header or ("file", "x", "k", "shape"))
    with pytest.raises(DataError, match=match):
        ImageFolder(images=str(folder), factors=str(path))


def test_unreadable_image_names_its_line(tmp_path):
    folder, path = write_folder(tmp_path)
    (folder / "im4.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"factors.csv, line 6: .*im4.png: not an image file PIL can read"):
        ImageFolder(images=str(folder), factors=str(path))


# -- HDF5 -----------------------------------------------------------------------------------------------------
def write_h5(path: Path, n=12, layout="NHWC", names="attr", factors=None, pixels=None):
    rng = np.random.default_rng(1)
    f_values = factors if factors is not None else np.stack([rng.uniform(0, 1, n), np.arange(n) % 3], axis=1)
    level = (np.arange(n) * 20).astype(np.uint8)  # row r: constant level 20 r
    img = np.broadcast_to(level[:, None, None, None], (n, 24, 20, 3)).copy()
    if layout == "NCHW":
        img = (img.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    elif layout == "NHW":
        img = img[..., 0]
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=img if pixels is None else pixels)
        d = f.create_dataset("factors", data=f_values)
        if names == "attr":
            d.attrs["factor_names"] = ["size", "kind"]
        elif names == "dataset":
            f.create_dataset("factor_names", data=np.array([b"size", b"kind"]))
    return f_values


@pytest.mark.parametrize("layout, names, want_names, channels", [
    ("NHWC", "attr", ("size", "kind"), 3), ("NCHW", "dataset", ("size", "kind"), 3),
    ("NHW", None, ("factor_0", "factor_1"), 1)])
def test_hdf5_reads_names_values_and_images(tmp_path, layout, names, want_names, channels):
    values = write_h5(tmp_path / "d.h5", layout=layout, names=names)
    ds = HDF5Images(path=str(tmp_path / "d.h5"), images="images", factors="factors", resolution=8, factor_bins=5)
    assert ds.factor_names == want_names and len(ds) == 12 and ds.channels == channels
    # size: 12 distinct uniform values > 5 bins -> equal-width bins between its min and max, checked by hand below
    lo, hi = values[:, 0].min(), values[:, 0].max()
    edges = lo + (hi - lo) * np.arange(6) / 5
    bins = np.array([int(np.sum(edges[:-1] <= v)) for v in values[:, 0]])  # 1..5
    dense = np.searchsorted(np.unique(bins), bins)
    assert np.allclose(ds.factor_table()[0]["edges"], edges)
    assert np.array_equal(ds.index_to_factors(np.arange(12)), np.stack([dense, np.arange(12) % 3], axis=1))
    assert ds.factor_table()[1] == {"factor": want_names[1], "kind": "discrete", "distinct": 3, "size": 3,
                                    "values": [0.0, 1.0, 2.0]}
    x = ds.images_at(np.arange(12)).mul(255).round()
    assert x.shape == (12, channels, 8, 8)
    assert torch.equal(x, (torch.arange(12.0) * 20).view(12, 1, 1, 1).expand_as(x))


def test_hdf5_errors_name_file_and_key(tmp_path):
    p = tmp_path / "d.h5"
    write_h5(p)
    with pytest.raises(DataError, match=r"d.h5: no dataset 'imgs' \(data.images\); the file has: factors, images"):
        HDF5Images(path=str(p), images="imgs", factors="factors")
    with pytest.raises(DataError, match=r"d.h5: no dataset 'labels' \(data.factors\)"):
        HDF5Images(path=str(p), images="images", factors="labels")
    write_h5(p, factors=np.zeros((11, 2)) + np.arange(11)[:, None])
    with pytest.raises(DataError, match=r"d.h5: 'images' has 12 rows but 'factors' has 11"):
        HDF5Images(path=str(p), images="images", factors="factors")
    nan = np.stack([np.arange(12.0), np.arange(12.0)], axis=1)
    nan[7, 1] = np.nan
    write_h5(p, factors=nan)
    with pytest.raises(DataError, match=r"d.h5: 'factors' row 7, column 1 \(kind\): nan is not a finite number"):
        HDF5Images(path=str(p), images="images", factors="factors")
    write_h5(p, pixels=np.zeros((12, 5, 6, 7, 8), dtype=np.uint8))
    with pytest.raises(DataError, match=r"'images' has shape \(12, 5, 6, 7, 8\); expected \(N, H, W\)"):
        HDF5Images(path=str(p), images="images", factors="factors")
    write_h5(p, pixels=np.full((12, 4, 4), 1.5, dtype=np.float32))
    with pytest.raises(DataError, match=r"'images' row 0 has pixel values outside \[0, 1\]"):
        HDF5Images(path=str(p), images="images", factors="factors", resolution=8).images_at([0])
    (tmp_path / "junk.h5").write_text("no")
    with pytest.raises(DataError, match=r"junk.h5: not a readable HDF5 file"):
        HDF5Images(path=str(tmp_path / "junk.h5"), images="images", factors="factors")


# -- specs ----------------------------------------------------------------------------------------------------
def folder_spec(**data) -> dict:
    return {**TINY, "data": {"name": "folder", "resolution": 16, "factor_bins": 4, **data},
            "model": {"kind": "ae", "latent_dim": 4, "encoder": {"kind": "conv", "blocks": 3, "channels": 8, "groups": 4},
                      "decoder": {"kind": "conv", "blocks": 3, "channels": 8, "groups": 4}}}


def test_relative_paths_are_taken_from_the_spec_file_then_the_working_directory(tmp_path, monkeypatch):
    import yaml

    write_folder(tmp_path / "mine")
    spec_file = tmp_path / "mine" / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(folder_spec(images="imgs", factors="factors.csv")))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_spec(spec_file)
    assert spec.data.images == str(tmp_path / "mine" / "imgs") and spec.data.factors == str(tmp_path / "mine" / "factors.csv")
    assert len(build_dataset(spec)) == 10
    monkeypatch.chdir(tmp_path)
    spec = load_spec(spec_file, ["data.images=mine/imgs"])  # --set: the working directory
    assert spec.data.images == str(tmp_path / "mine" / "imgs")
    assert train_split_size(spec) == 7  # 70 % of the 10 rows
    assert check_spec(spec)["images"] == 10


def test_spec_errors_name_the_key(tmp_path):
    folder, path = write_folder(tmp_path)
    with pytest.raises(SpecError, match="data.factors: dataset 'folder' needs the CSV file of factor values"):
        load_spec(data=folder_spec(images=str(folder)))
    with pytest.raises(SpecError, match=r"data.images: dataset 'dsprites' does not read it \(datasets that do: folder, hdf5"):
        load_spec(data={**folder_spec(), "data": {"name": "dsprites", "images": "x"}})
    with pytest.raises(SpecError, match="data.path: dataset 'folder' does not read it"):
        load_spec(data=folder_spec(images=str(folder), factors=str(path), path="x.h5"))
    with pytest.raises(SpecError, match=r"evaluate.metrics\[1\]: metric 'shd' cannot be computed on dataset 'folder': "
                                        "your own data has no known true graph"):
        load_spec(data=folder_spec(images=str(folder), factors=str(path)), overrides=["evaluate.metrics=[mig, shd]"])
    with pytest.raises(SpecError, match="graph.from_dataset: the dataset exposes no true graph"):
        load_spec(data={**folder_spec(images=str(folder), factors=str(path)),
                        "graph": {"kind": "dag", "from_dataset": True}})
    write_folder(tmp_path, header=("name", "x", "k", "shape"))
    with pytest.raises(SpecError, match=r"data: .*factors.csv, line 1: no column 'file'"):
        check_spec(load_spec(data=folder_spec(images=str(folder), factors=str(path))))


@pytest.mark.slow  # ~15 s on the 2 shared cores (training, four metrics, the report), like test_report's run
def test_folder_of_pngs_trains_and_evaluates_through_the_cli(tmp_path):
    """End to end: 40 PNGs drawn from 2 continuous factors, a tiny AE, mig/dci/sap/irs through causalrep.run."""
    import yaml

    from causalrep.run import main

    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    rows = []
    for i in range(40):
        pos, bright = rng.uniform(0, 1), rng.uniform(0.3, 1)
        a = np.zeros((20, 20), dtype=np.uint8)
        c = 2 + int(pos * 14)
        a[6:14, c:c + 4] = int(255 * bright)  # a bar: its position and brightness are the factors
        Image.fromarray(a).save(folder / f"{i}.png")
        rows.append([f"{i}.png", pos, bright])
    with open(tmp_path / "f.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["file", "position", "brightness"], *rows])
    spec = folder_spec(images="imgs", factors="f.csv", factor_bins=5)
    spec["evaluate"] = {**spec["evaluate"], "metrics": ["mig", "dci", "sap", "irs"], "val_samples": 32}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    assert main([str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    run = next((tmp_path / "runs" / "tiny").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    for k in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness_test", "sap", "irs"):
        assert math.isfinite(metrics[k]), (k, metrics[k])
    factors = json.loads((run / "factors.json").read_text())
    assert [(f["factor"], f["kind"], f["bins"]) for f in factors] == [("position", "binned", 5),
                                                                      ("brightness", "binned", 5)]
    report = (run / "report.md").read_text()
    assert "## factors" in report and "| position | 40 | 5 equal-width bins |" in report
    edges = ", ".join(f"{e:.4g}" for e in factors[0]["edges"])
    assert edges in report


@pytest.mark.parametrize("check", [True, False])
def test_cli_reports_bad_data_in_one_line_with_exit_code_2(tmp_path, capsys, check):
    import yaml

    from causalrep.run import main

    write_folder(tmp_path, rows=[["im0.png", 1, 2, "a"], ["im1.png", 3, 4, "b"], ["gone.png", 5, 6, "c"]])
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(folder_spec(images="imgs", factors="factors.csv")))
    argv = [str(tmp_path / "s.yaml"), "--out", str(tmp_path / "runs"), "--no-progress"] + (["--check"] if check else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("error: ") and err[0].endswith(f"factors.csv, line 4: image file not found: "
                                                            f"{tmp_path / 'imgs' / 'gone.png'}")


def test_betavae_and_factorvae_scores_fix_a_factor_through_the_rows(tmp_path):
    """A representation that is the factor indices themselves scores 1 on both: fixing factor y (rows whose y has
    the value) leaves dim y constant and moves the others. 24 rows: x (24 values, 4 bins of 6), k = i % 2,
    s = (i // 2) % 3, which vary independently over the rows; row i's image is the constant level 10 i."""
    from causalrep.metrics.interventional import betavae_score, factorvae_score

    n = 24
    factors = np.stack([np.arange(n) * 0.5, np.arange(n) % 2, (np.arange(n) // 2) % 3], axis=1).astype(float)
    level = (np.arange(n) * 10).astype(np.uint8)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("images", data=np.broadcast_to(level[:, None, None], (n, 4, 4)).copy())
        f.create_dataset("factors", data=factors)
    ds = HDF5Images(path=str(tmp_path / "d.h5"), images="images", factors="factors", resolution=8, factor_bins=4)
    assert ds.factor_sizes == (4, 2, 3)

    def encode(x):  # image -> its row (the grey level) -> the row's factor indices
        rows = x[:, 0, 0, 0].mul(255).round().div(10).round().long().numpy()
        return torch.as_tensor(ds.index_to_factors(rows), dtype=torch.float32)

    b = betavae_score(encode, ds, np.random.default_rng(0), batch_size=16, num_train=60, num_eval=30, chunk=256)
    assert b == {"train_accuracy": 1.0, "eval_accuracy": 1.0}
    fv = factorvae_score(encode, ds, np.random.default_rng(0), batch_size=16, num_train=60, num_eval=30,
                         num_variance_estimate=200, chunk=256)
    assert fv == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 3.0}
