"""Disentanglement curves while training (evaluate.every, issue #22): the evaluator, early stopping, the trainer's
curve points in metrics.jsonl, curves.png, and the spec's checks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from causalrep.build import build_dataset, build_split
from causalrep.errors import SpecError
from causalrep.experiment import Experiment
from causalrep.figures import LINE_COLOURS, line_plot, plot_frame
from causalrep.metrics.curves import CurveEvaluator, EarlyStopping
from causalrep.metrics.disentanglement import dci, mig, sap
from causalrep.build import build_model
from causalrep.track.base import read_jsonl

from conftest import tiny_spec


def test_a_curve_point_is_the_array_metrics_on_the_fixed_validation_images():
    spec = tiny_spec("ae")
    dataset = build_dataset(spec)
    index = build_split(spec, dataset).val[:30]
    model = build_model(spec).eval()
    ev = CurveEvaluator(dataset, index, ("dci", "mig", "sap"))
    with torch.no_grad():
        z = model.encode(dataset.images_at(index)).double().numpy()
    assert np.array_equal(ev.codes(model, "cpu"), z)  # the images are kept as rendered
    f = dataset.index_to_factors(index)
    got = ev(model, "cpu")
    # the first 2/3 (20) fit the predictors, the last 10 test them; MIG uses all 30
    want = {"mig": mig(z, f), "sap": sap(z[:20], f[:20], z[20:], f[20:]),
            # the curves' default DCI estimator: evaluate.every_dci "short"
            **{f"dci_{k}": v for k, v in dci(z[:20], f[:20], z[20:], f[20:], gbt="lightgbm-short").items()}}
    assert sorted(got) == sorted(want) == sorted(ev.keys())
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-6), k
    assert ev.seconds > 0
    # evaluate.sap: reference = sap_score.py's LinearSVC
    ref = CurveEvaluator(dataset, index, ("sap",), sap="reference")(model, "cpu")
    assert ref["sap"] == pytest.approx(sap(z[:20], f[:20], z[20:], f[20:], backend="sklearn"), abs=1e-12)
    with pytest.raises(ValueError, match="curves: sap: unknown SAP solver 'svm'; valid: exact, reference"):
        CurveEvaluator(dataset, index, ("sap",), sap="svm")
    with pytest.raises(ValueError, match="curve metrics \\['fid'\\]: valid: mig, dci, sap, irs, modexp"):
        CurveEvaluator(dataset, index, ("fid",))
    with pytest.raises(ValueError, match="at least 6 validation images; got 5"):
        CurveEvaluator(dataset, index[:5], ("mig",))


def test_early_stopping_counts_evaluations_without_improvement():
    stop = EarlyStopping("dci_disentanglement", patience=2, mode="max", min_delta=0.005)
    verdicts = [stop.update(s, v) for s, v in [(100, 0.1), (200, 0.3), (300, 0.29), (400, 0.304), (500, 0.31)]]
    # 0.3 at step 200 is the best; 0.29 and 0.304 (+0.004 <= min_delta) are 2 stale points: stop at step 400
    assert verdicts[:3] == [None, None, None]
    assert verdicts[3] == ("early stop: dci_disentanglement has not improved on 0.3 (step 200) for 2 evaluations "
                           "(max mode, min_delta 0.005)")
    down = EarlyStopping("loss", patience=1, mode="min")
    assert down.update(1, 5.0) is None and down.update(2, 4.0) is None and down.update(3, 4.0).startswith("early")
    with pytest.raises(ValueError, match="'max' or 'min'"):
        EarlyStopping("mig", mode="up")


def test_training_logs_curve_points_draws_them_and_stops_early(tmp_path):
    spec = tiny_spec("ae", overrides=["train.steps=6", "evaluate.every=2", "evaluate.every_samples=30",
                                      "evaluate.every_metrics=[mig, sap]", "evaluate.stop_on=mig",
                                      "evaluate.stop_patience=1", "evaluate.stop_min_delta=1.0"])
    exp = Experiment(spec, out=tmp_path, progress=False)
    metrics = exp.run()
    recs = read_jsonl(exp.run_dir / "metrics.jsonl")
    curve = {(r["name"], r["step"]) for r in recs if r["context"] == "curve"}
    # points at steps 2 and 4; no improvement of more than 1.0 is possible for MIG, so the second point stops
    assert curve == {(k, s) for k in ("mig", "sap", "curve_seconds") for s in (2, 4)}
    assert metrics["stopped"].startswith("early stop: mig has not improved") and metrics["step"] == 4
    assert any(r["name"] == "stopped_at" and r["value"] == 4 for r in recs)
    png = exp.run_dir / "curves.png"
    assert png.exists()


def test_the_spec_checks_stop_on_against_the_curves():
    with pytest.raises(SpecError, match=r"^evaluate.stop_on: 'mig' stops on a curve, but evaluate.every is 0"):
        tiny_spec("ae", overrides=["evaluate.stop_on=mig"])
    with pytest.raises(SpecError, match=r"^evaluate.stop_on: 'irs' is not a key of evaluate.every_metrics "
                                        r"\['dci', 'mig', 'sap'\]; their keys: dci_disentanglement, "):
        tiny_spec("ae", overrides=["evaluate.every=10", "evaluate.stop_on=irs"])


def test_line_plot_puts_each_point_where_the_frame_maps_it():
    img = line_plot({"DCI-d": [(0, 0.0), (10, 1.0)], "MIG": [(0, 0.5), (10, 0.25)]}, width=560, height=320)
    assert img.shape == (3, 320, 560)
    px, py = plot_frame([0, 10], [0.0, 1.0], width=560, height=320)
    # scores in [0, 1] keep the [0, 1] axis; the plot area's margins are 48 | 12 (x) and 30 | 30 (y)
    assert (px(0), px(10), py(0.0), py(1.0)) == (48, 548, 290, 30)
    rgb = (img * 255).round().to(torch.uint8).permute(1, 2, 0)
    for series, (x, y) in ((0, (0, 0.0)), (0, (10, 1.0)), (1, (0, 0.5)), (1, (10, 0.25))):
        assert tuple(rgb[int(py(y)), int(px(x))].tolist()) == LINE_COLOURS[series]  # the point's dot
    assert tuple(rgb[13, 53].tolist()) == LINE_COLOURS[0]  # the first legend swatch
    with pytest.raises(ValueError, match="no points"):
        line_plot({"a": []})
