"""The `icm` metric (004 sec 5): win-proportion summaries on hand-made matrices, the downstream classifier check
through committees whose answers are known (a perfect inverter, the identity), and the report's heat map."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from causalrep.data.icm import ICMDigits
from causalrep.metrics import METRICS
from causalrep.metrics import icm as icm_module
from causalrep.metrics.icm import per_group_accuracy, win_statistics
from causalrep.report import markdown, matrix_heatmap


def test_win_statistics_of_a_hand_made_matrix():
    # 3 mechanisms x 4 experts: expert 2 tops two mechanisms, experts 1 and 3 top none
    p = [[0.95, 0.05, 0.0, 0.0],
         [0.0, 0.1, 0.9, 0.0],
         [0.2, 0.0, 0.8, 0.0]]
    s = win_statistics(np.array(p))
    assert s["top_expert"] == [0, 2, 2]
    assert s["min_winner_share"] == pytest.approx(0.8)
    assert s["distinct_winners"] == 2
    assert s["spare_experts"] == [1, 3]
    assert s["spare_share"] == pytest.approx((0.05 + 0.1 + 0.0) / 3)
    assert s["one_to_one"] == 0.0  # expert 2 holds two mechanisms
    perfect = win_statistics(np.eye(10))
    assert (perfect["min_winner_share"], perfect["distinct_winners"], perfect["spare_share"]) == (1.0, 10, 0.0)
    assert perfect["one_to_one"] == 1.0
    # 004's near-miss (sec 4): one expert on two tasks, one on none, the rest one each: not one-to-one
    near = np.eye(4)[[0, 1, 2, 2]]
    assert win_statistics(near)["one_to_one"] == 0.0


def test_per_group_accuracy():
    pred, truth = torch.tensor([1, 2, 3, 4, 5, 6]), torch.tensor([1, 0, 3, 4, 0, 6])
    group = torch.tensor([0, 0, 1, 1, 1, 2])
    acc = per_group_accuracy(pred, truth, group, 4)
    assert acc[:3] == [0.5, pytest.approx(2 / 3), 1.0] and np.isnan(acc[3])


class KnownCommittee:
    """Answers compete() for the test set in order: `perfect` wins mechanism m with expert m and returns the
    original digit; otherwise expert 0 wins everything and returns its input (the identity)."""

    def __init__(self, data: ICMDigits, perfect: bool, experts: int = 10):
        self.test = data.test_set()
        self.perfect, self.num_experts, self.seen = perfect, experts, 0
        self.training = False

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def compete(self, x):
        rows = slice(self.seen, self.seen + len(x))
        assert torch.equal(x, self.test.transformed[rows])  # the metric feeds the test set in order
        self.seen += len(x)
        if self.perfect:
            return self.test.mechanism[rows], self.test.canonical[rows], None
        return torch.zeros(len(x), dtype=torch.int64), x, None


@pytest.fixture(scope="module")
def data():
    return ICMDigits(resolution=16)  # a quarter of the classifier's work at 32x32


_TRAINED: dict = {}  # the quick classifier, trained once: a fixed seed on the same digits gives the same net


@pytest.fixture
def quick_classifier(monkeypatch):
    monkeypatch.setattr(icm_module, "CLASSIFIER_EPOCHS", 4)
    train = icm_module.train_classifier

    def once(x, y, **kw):
        key = (tuple(x.shape), float(x.sum()), int(y.sum()))
        if key not in _TRAINED:
            _TRAINED[key] = train(x, y, **kw)
        return _TRAINED[key]

    monkeypatch.setattr(icm_module, "train_classifier", once)
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs on a shared 2-core machine: a second thread mostly waits
    yield
    torch.set_num_threads(n)


def run(model, data):
    return METRICS.get("icm")(model=model, dataset=data, split=None, n=0, loss="bce")


def test_a_perfect_committee_reaches_the_classifier_ceiling(data, quick_classifier):
    m = run(KnownCommittee(data, perfect=True), data)
    assert m["win_proportion"] == np.eye(10).tolist()
    assert (m["min_winner_share"], m["distinct_winners"], m["spare_share"]) == (1.0, 10, 0.0)
    assert m["accuracy_after"] == m["accuracy_ceiling"] > 0.8  # its outputs are the untransformed test digits
    assert m["accuracy_after_per_mechanism"] == [m["accuracy_ceiling"]] * 10
    assert m["accuracy_before"] < m["accuracy_ceiling"]
    invert = m["win_proportion_rows"].index("invert")
    assert m["accuracy_before_per_mechanism"][invert] < 0.5  # a classifier of dark-on-white digits fails on 1 - x
    assert m["icm_test_images"] == 3500 and m["win_proportion_cols"] == [str(j) for j in range(10)]


def test_an_identity_committee_changes_nothing(data, quick_classifier):
    m = run(KnownCommittee(data, perfect=False, experts=16), data)
    assert m["win_proportion"] == [[1.0] + [0.0] * 15] * 10
    assert (m["min_winner_share"], m["distinct_winners"]) == (1.0, 1)
    assert m["spare_share"] == 0.0 and m["spare_experts"] == list(range(1, 16))
    assert m["accuracy_after"] == m["accuracy_before"]


def test_the_metric_names_what_it_needs(data):
    with pytest.raises(ValueError, match="model kind icm"):
        run(torch.nn.Linear(1, 1), data)
    from causalrep.data.digits import Digits

    with pytest.raises(ValueError, match="data.name: icm_digits"):
        run(KnownCommittee(data, perfect=True), Digits(resolution=16))


def test_the_report_draws_and_tabulates_matrix_metrics():
    image = matrix_heatmap(torch.tensor([[1.0, 0.0], [0.25, 0.75]]), rows=["up", "down"], cols=["0", "1"])
    assert image.shape[0] == 3 and 0 <= float(image.min()) and float(image.max()) <= 1
    metrics = {"win_proportion": [[1.0, 0.0], [0.25, 0.75]], "win_proportion_rows": ["up", "down"],
               "win_proportion_cols": ["0", "1"], "accuracy_after": 0.5}
    text = markdown(metrics, {}, "run")
    assert "| up | 1 | 0 |" in text and "| down | 0.25 | 0.75 |" in text and "| accuracy_after | 0.5 |" in text
    assert "| win_proportion |" not in text  # the matrix gets its own table, not a row of the metric table
