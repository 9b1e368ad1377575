"""BetaVAE / FactorVAE scores and fairness on a fake dataset whose images carry their factors; the registered wrappers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from causalrep.data.base import GroundTruthDataset, Split
from causalrep.metrics.interventional import (betavae_score, factorvae_score, fairness, fairness_aggregates,
                                              inter_group_fairness)
from causalrep.metrics.registry import METRICS

SIZES = (3, 4, 5)


class FactorImages(GroundTruthDataset):
    """4x4 one-channel images whose first K pixels hold the factor values scaled to [0, 1]."""

    factor_names = ("a", "b", "c")
    factor_sizes = SIZES
    channels = 1
    resolution = 4

    def images(self, factors: np.ndarray) -> torch.Tensor:
        x = torch.zeros(len(factors), 1, 4, 4)
        x[:, 0, 0, :len(SIZES)] = torch.as_tensor(factors / (np.asarray(SIZES) - 1.0), dtype=torch.float32)
        return x


def read_back(x: torch.Tensor) -> torch.Tensor:
    """A perfectly disentangled code: factor k is code dim k (plus a constant dim, which is pruned)."""
    return torch.cat([x[:, 0, 0, :len(SIZES)], torch.ones(len(x), 1)], dim=1)


def noise_code(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return lambda x: torch.rand(len(x), 4, generator=g)


def entangled(x: torch.Tensor) -> torch.Tensor:
    """Codes (a + b, c): b is not recoverable, and a predictor of b moves when a is intervened on."""
    f = x[:, 0, 0, :len(SIZES)] * (torch.tensor(SIZES) - 1.0)
    return torch.stack([f[:, 0] + f[:, 1], f[:, 2]], dim=1)


DATA = FactorImages()


def test_betavae_score_perfect_code_is_one():
    s = betavae_score(read_back, DATA, np.random.default_rng(0), batch_size=16, num_train=300, num_eval=150)
    # the held-fixed factor's dim has z_diff exactly 0 and the others > 0: linearly separable
    assert s == {"train_accuracy": 1.0, "eval_accuracy": 1.0}


def test_factorvae_score_perfect_code_is_one():
    s = factorvae_score(read_back, DATA, np.random.default_rng(0), batch_size=16, num_train=300, num_eval=150,
                        num_variance_estimate=500)
    # fixing factor k zeroes the local variance of dim k only; the constant dim is pruned (std < 0.05)
    assert s == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 3.0}


def test_scores_near_chance_for_noise_codes():
    # a code ignoring the images: which factor was fixed is unpredictable, chance = 1/K = 1/3
    b = betavae_score(noise_code(), DATA, np.random.default_rng(0), batch_size=16, num_train=300, num_eval=300)
    assert abs(b["eval_accuracy"] - 1 / 3) < 0.1
    f = factorvae_score(noise_code(1), DATA, np.random.default_rng(0), batch_size=16, num_train=300, num_eval=300,
                        num_variance_estimate=500)
    assert abs(f["eval_accuracy"] - 1 / 3) < 0.1


def test_inter_group_fairness_hand_case():
    # predictions (rows) per sensitive class (columns): class 0 predicts [10, 0], class 1 [0, 10]; overall
    # [.5, .5]: each class is at TV distance |1 - .5| + |0 - .5| over 2 = .5 -> mean .5, max .5
    assert inter_group_fairness(np.array([[10, 0], [0, 10]])) == (pytest.approx(0.5), pytest.approx(0.5))
    # class 0: [6, 4] (.6/.4), class 1: [2, 8] (.2/.8) with 10 and 10 points; overall .4/.6 -> TV .2, .2
    assert inter_group_fairness(np.array([[6, 2], [4, 8]])) == (pytest.approx(0.2), pytest.approx(0.2))
    assert inter_group_fairness(np.array([[5, 5], [5, 5]])) == (0.0, 0.0)


def test_fairness_aggregates_follow_rows_then_columns():
    m = np.array([[0.0, 0.1, 0.3], [0.2, 0.0, 0.4], [0.5, 0.6, 0.0]])
    s = fairness_aggregates(m, "mean_fairness")
    # rows (pred) off-diagonal means: .2, .3, .55 -> mean .35; maxes .3, .4, .6 -> mean 13/30
    assert s["mean_fairness:mean_pred:mean_sens"] == pytest.approx(0.35)
    assert s["mean_fairness:mean_pred:max_sens"] == pytest.approx(1.3 / 3)
    # columns (sens): .35, .35, .35 -> max .35; column maxes .5, .6, .4 -> max .6
    assert s["mean_fairness:max_sens:mean_pred"] == pytest.approx(0.35)
    assert s["mean_fairness:max_sens:max_pred"] == pytest.approx(0.6)


def test_fairness_zero_for_a_disentangled_code_positive_when_entangled():
    rng = np.random.default_rng(0)
    s = fairness(read_back, DATA, rng, num_train=600, num_test_points_per_class=40, n_jobs=2)
    # each predictor reads its own dim, which no intervention on another factor moves: identical predictions
    assert s["unfairness"] == 0.0 and s["max_fairness"].max() == 0.0
    assert s["mean_fairness"].shape == (3, 3)
    e = fairness(entangled, DATA, np.random.default_rng(0), num_train=600, num_test_points_per_class=40, n_jobs=2)
    assert e["mean_fairness"][1, 0] > 0.1  # predicting b from a + b: do(a) shifts the predictions
    assert e["unfairness"] > 0.05 and e["neg_log_unfairness"] == pytest.approx(-np.log(e["unfairness"]))


# -- the registered wrappers ---------------------------------------------------------------------------------
class ReadBack(torch.nn.Module):
    """Duck-typed LatentModel: encode reads the factor pixels back."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return read_back(x)[:, :len(SIZES)] * self.scale


WRAPPED = {
    "mig": {"mig"}, "irs": {"irs"}, "sap": {"sap"},
    "dci": {"dci_disentanglement", "dci_completeness", "dci_informativeness_train", "dci_informativeness_test"},
    "modexp": {"modexp_modularity", "modexp_explicitness_train", "modexp_explicitness_test"},
    "betavae": {"betavae_train_accuracy", "betavae_eval_accuracy"},
    "factorvae": {"factorvae_train_accuracy", "factorvae_eval_accuracy", "factorvae_num_active_dims"},
    "fairness": {"fairness_unfairness", "fairness_neg_log_unfairness", "fairness_unfairness_max_sens",
                 "fairness_max_unfairness"},
}


@pytest.mark.parametrize("name", sorted(WRAPPED))
def test_registered_wrapper_returns_flat_floats(name):
    model = ReadBack().train()
    split = Split(len(DATA), (0.7, 0.1, 0.2), seed=0)
    out = METRICS.get(name)(model=model, dataset=DATA, split=split, n=200, loss="bce", device="cpu", batch_size=64)
    assert set(out) == WRAPPED[name]
    assert all(isinstance(v, float) and np.isfinite(v) for v in out.values())
    assert model.training  # eval mode only while measuring
    if name in ("betavae", "factorvae", "irs"):
        assert out[f"{name}_eval_accuracy" if name != "irs" else name] == 1.0
    if name == "mig":  # 1 minus the plug-in MI estimate's upward bias on the unrelated dims (~0.03 at 200 points)
        assert out["mig"] > 0.95
    if name == "dci":
        assert out["dci_disentanglement"] > 0.9
    if name == "fairness":
        assert out["fairness_unfairness"] == 0.0


def test_wrappers_share_one_encoding_until_the_weights_change(monkeypatch):
    from causalrep.metrics import wrappers

    calls = []
    real = wrappers.encode_factors
    monkeypatch.setattr(wrappers, "encode_factors", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = ReadBack()
    kw = dict(model=model, dataset=DATA, split=None, n=120, loss="bce", device="cpu")
    a = METRICS.get("mig")(**kw)
    METRICS.get("irs")(**kw)
    assert len(calls) == 2  # train + test once for both metrics
    with torch.no_grad():
        model.scale.mul_(2.0)  # in-place update bumps the parameter's version: re-encode
    b = METRICS.get("mig")(**kw)
    assert len(calls) == 4 and a == b  # MIG is invariant to rescaling


class Mixed(ReadBack):
    """Codes (a + b/8, b + c/8, c): each dim mostly one factor, a little of another (DCI-d strictly below 1)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        f = read_back(x)[:, :len(SIZES)] * self.scale
        return torch.stack([f[:, 0] + f[:, 1] / 8, f[:, 1] + f[:, 2] / 8, f[:, 2]], dim=1)


def test_evaluate_dci_picks_the_estimator_and_the_experiment_passes_it():
    from causalrep.experiment import metric_options
    from causalrep.metrics.disentanglement import dci
    from causalrep.metrics.wrappers import sampled_codes
    from causalrep.spec.schema import EvaluateSpec

    model = Mixed()
    kw = dict(model=model, dataset=DATA, split=None, n=300, loss="bce", device="cpu")
    codes = sampled_codes(model, DATA, 300, "cpu", 256)
    for option, kind in (("reference", "gbt"), ("fast", "lightgbm"), ("lightgbm", "lightgbm"), ("hist", "hist")):
        out = METRICS.get("dci")(**kw, dci=option)
        # the same numbers as disentanglement.dci with that estimator on the same fresh samples
        assert out["dci_disentanglement"] == pytest.approx(dci(*codes, gbt=kind)["disentanglement"], abs=1e-12)
    assert METRICS.get("dci")(**kw)["dci_disentanglement"] == METRICS.get("dci")(**kw, dci="fast")["dci_disentanglement"]
    with pytest.raises(ValueError, match="evaluate.dci: unknown estimator 'xgb'"):
        METRICS.get("dci")(**kw, dci="xgb")
    # Experiment.evaluate hands a metric the evaluate.* keys it declares, and no others
    assert metric_options(METRICS.get("dci"), EvaluateSpec(dci="reference")) == {"dci": "reference"}
    assert metric_options(METRICS.get("mig"), EvaluateSpec(dci="reference")) == {}
