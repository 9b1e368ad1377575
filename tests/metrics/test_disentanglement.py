"""MIG, DCI, SAP, modularity/explicitness, IRS: hand-computed cases, the reference's special cases, noise floors."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from causalrep.metrics.discretize import discrete_entropy, discrete_mutual_info, histogram_discretize
from causalrep.metrics.disentanglement import (dci, dci_scores_from_importance, irs, mig, modularity_explicitness,
                                               modularity_from_mi, sap)

LN2 = np.log(2.0)
# Two balanced binary factors in the four combinations, repeated: v1 = 0011, v2 = 0101.
V = np.tile(np.array([[0, 0], [0, 1], [1, 0], [1, 1]]), (25, 1))


# -- discretisation and mutual information ---------------------------------------------------------------
def test_histogram_discretize_follows_numpy_histogram_and_digitize():
    # 2 equal-width bins on [0, 1]: edges 0, .5, 1; label = number of left edges <= x, the max goes to bin 2;
    # a constant column gets numpy's range (v - .5, v + .5), so it lands in the middle bin.
    x = np.array([[0.0, 7.0], [0.49, 7.0], [0.5, 7.0], [1.0, 7.0]])
    assert histogram_discretize(x, num_bins=2).tolist() == [[1, 2], [1, 2], [2, 2], [2, 2]]
    z = np.random.default_rng(0).normal(size=(500, 3))
    ref = np.stack([np.digitize(c, np.histogram(c, 20)[1][:-1]) for c in z.T], axis=1)
    assert np.array_equal(histogram_discretize(z), ref)


def test_mutual_info_matrix_equals_sklearn_per_pair():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 7, size=(300, 4)), rng.integers(3, 9, size=(300, 3))
    b[:, 0] = a[:, 0] // 2  # one dependent pair
    want = np.array([[mutual_info_score(b[:, j], a[:, i]) for j in range(3)] for i in range(4)])
    assert np.allclose(discrete_mutual_info(a, b), want, atol=1e-12)
    assert np.allclose(discrete_entropy(b), [mutual_info_score(c, c) for c in b.T], atol=1e-12)


# -- MIG ----------------------------------------------------------------------------------------------------
def test_mig_hand_computed():
    # z1 = v1; z2 = v1 AND v2. Entropies H(v1) = H(v2) = ln 2.
    # I(z1; v1) = ln 2, I(z1; v2) = 0.
    # I(z2; v1) = H(z2) - H(z2 | v1) = H(1/4, 3/4) - 1/2 H(1/2, 1/2)
    #           = (-(1/4) ln(1/4) - (3/4) ln(3/4)) - (1/2) ln 2 = 0.562335 - 0.346574 = 0.215762; same for v2.
    # MIG(v1) = (ln 2 - 0.215762) / ln 2 = 0.688722, MIG(v2) = (0.215762 - 0) / ln 2 = 0.311278: mean 0.5.
    z = np.stack([V[:, 0], V[:, 0] & V[:, 1]], axis=1).astype(float)
    i_and = 0.5623351446188083 - 0.5 * LN2
    assert i_and == pytest.approx(0.215762, abs=1e-6)
    m = discrete_mutual_info(histogram_discretize(z), V)
    assert np.allclose(m, [[LN2, 0.0], [i_and, i_and]], atol=1e-12)
    assert mig(z, V) == pytest.approx(0.5, abs=1e-12)


def test_mig_is_one_for_an_aligned_code_with_a_spare_dim():
    z = np.concatenate([V.astype(float), np.zeros((len(V), 1))], axis=1)  # z3 constant: no information
    assert mig(z, V) == pytest.approx(1.0)


# -- DCI ----------------------------------------------------------------------------------------------------
def test_dci_scores_from_importance_golden():
    d, c = dci_scores_from_importance(np.eye(4))  # each code explains one factor and vice versa
    assert (d, c) == (pytest.approx(1.0, abs=1e-8), pytest.approx(1.0, abs=1e-8))
    d, c = dci_scores_from_importance(np.ones((4, 3)))  # every code spread evenly over every factor
    assert (d, c) == (pytest.approx(0.0, abs=1e-8), pytest.approx(0.0, abs=1e-8))
    # both codes use only factor 1 (pure: d = 1); factor 1 is spread over 2 codes (c_1 = 1 - log2(2) = 0),
    # factor 2 has no importance (weight 0): c = 0
    d, c = dci_scores_from_importance(np.array([[1.0, 0.0], [1.0, 0.0]]))
    assert (d, c) == (pytest.approx(1.0, abs=1e-8), pytest.approx(0.0, abs=1e-8))
    # a zero matrix: uniform weights (dci.py), each row uniform after the 1e-11 -> 0
    assert dci_scores_from_importance(np.zeros((3, 2))) == (pytest.approx(0.0, abs=1e-8), pytest.approx(0.0, abs=1e-8))


def _aligned(n: int, sizes=(3, 4, 3), seed: int = 0, noise_dims: int = 1):
    rng = np.random.default_rng(seed)
    f = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    z = (f + rng.random(f.shape)) / np.asarray(sizes)
    return np.concatenate([z, 0.3 * rng.normal(size=(n, noise_dims))], axis=1), f


def test_dci_end_to_end_aligned_code():
    ztr, ftr = _aligned(600)
    zte, fte = _aligned(300, seed=1)
    s = dci(ztr, ftr, zte, fte, n_jobs=2)
    assert s["disentanglement"] > 0.9 and s["completeness"] > 0.9
    assert s["informativeness_test"] > 0.9  # every factor is a threshold of its own code dim
    ref = dci(ztr, ftr, zte, fte, gbt="gbt", n_jobs=2)  # sklearn's GradientBoostingClassifier, the reference
    for key in ("disentanglement", "completeness"):
        assert s[key] == pytest.approx(ref[key], abs=0.1)


def test_dci_binary_factor_path():
    # binary factors take the one-tree-per-stage (sigmoid) path of the importance replay
    ztr, ftr = _aligned(400, sizes=(2, 2))
    zte, fte = _aligned(200, sizes=(2, 2), seed=1)
    s = dci(ztr, ftr, zte, fte, n_jobs=1)
    assert s["disentanglement"] > 0.9 and s["informativeness_test"] > 0.95


def test_dci_constant_factor_and_bad_codes():
    ztr, ftr = _aligned(300, sizes=(3, 1))  # the second factor never varies: no predictor, zero importance
    s = dci(ztr, ftr, ztr, ftr, n_jobs=1)
    assert s["informativeness_test"] > 0.95 and s["disentanglement"] > 0.9
    with pytest.raises(ValueError, match="NaN or inf"):
        dci(np.full_like(ztr, np.nan), ftr, ztr, ftr)


# -- SAP ----------------------------------------------------------------------------------------------------
def test_sap_hand_computed_gap():
    # z1 = +-1 by v1, z2 = +-1 by v2. A 1-D linear SVM on z_i separates v_i exactly (accuracy 1, the data
    # are symmetric so the threshold is 0); on the other dim each z value holds half of each class, so
    # ANY prediction from it is right on exactly half the points: accuracy 0.5. Gap 0.5 per factor.
    z = 2.0 * V - 1.0
    for backend in ("torch", "sklearn"):
        assert sap(z, V, z, V, backend=backend) == pytest.approx(0.5, abs=1e-12)
        zz = np.concatenate([z, z], axis=1)
        assert sap(zz, V, zz, V, backend=backend) == pytest.approx(0.0)  # duplicated dims


# -- Modularity and explicitness ------------------------------------------------------------------------
def test_modularity_from_mi_hand_values():
    # row [2, 1]: squares 4, 1 -> 1 - (5 - 4) / (4 * 1) = 0.75; row [1, 1]: 1 - 1 = 0; row [0, 0]: 0 (no info)
    assert modularity_from_mi(np.array([[2.0, 1.0]])) == pytest.approx(0.75)
    assert modularity_from_mi(np.array([[1.0, 1.0]])) == pytest.approx(0.0)
    assert modularity_from_mi(np.array([[2.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 3.0]])) == pytest.approx(1.75 / 4)


def test_modularity_is_one_when_each_dim_depends_on_one_factor():
    # MI rows [ln2, 0], [0, ln2], [ln2, 0]: two dims on v1 is still modular (not compact)
    z = np.stack([V[:, 0], V[:, 1], 3.0 * V[:, 0]], axis=1).astype(float)
    s = modularity_explicitness(z, V, z, V)
    assert s["modularity"] == pytest.approx(1.0, abs=1e-12)
    assert s["explicitness_score_test"] == pytest.approx(1.0)  # each factor a linear function of a code


# -- IRS ----------------------------------------------------------------------------------------------------
def test_irs_hand_computed():
    # z1 = 2 v1: constant within each v1 group (deviation 0) -> score 1; max deviation |z1 - 1| = 1.
    # z2 = 2 v3 with v3 = 0101 repeated, independent of v1 and of v2' = 0110: within every group z2 is half 0,
    # half 2, so |z2 - 1| = 1 and its 0.99-quantile is 1 = its max deviation -> score 0.
    # IRS = (1 * 1 + 0 * 1) / (1 + 1) = 0.5 (weights: max deviations).
    f = np.tile(np.array([[0, 0], [0, 1], [1, 1], [1, 0]]), (25, 1))
    v3 = np.tile(np.array([0, 1, 0, 1]), 25)
    z = np.stack([2.0 * f[:, 0], 2.0 * v3], axis=1)
    assert irs(z, f) == pytest.approx(0.5, abs=1e-12)
    assert irs(np.concatenate([z, np.ones((len(z), 1))], axis=1), f) == pytest.approx(0.5)  # constant dim dropped
    assert irs(np.ones((10, 2)), f[:10]) == 0.0  # nothing active


# -- noise floors -------------------------------------------------------------------------------------------
def test_all_metrics_near_floor_for_noise_codes():
    rng = np.random.default_rng(3)
    sizes = (3, 4, 3)
    ftr = np.stack([rng.integers(0, s, 1200) for s in sizes], axis=1)
    fte = np.stack([rng.integers(0, s, 600) for s in sizes], axis=1)
    # uniform noise: its 0.99-quantile deviation ~ its max deviation, so IRS's floor is ~0 (for Gaussian
    # noise IRS stays ~0.3: the 0.99 quantile is 2.6 sigma while the max over 10k points is ~3.9 sigma)
    ztr, zte = rng.uniform(-1, 1, (1200, 4)), rng.uniform(-1, 1, (600, 4))
    assert mig(ztr, ftr) < 0.02
    s = dci(ztr, ftr, zte, fte, n_jobs=2)
    assert s["disentanglement"] < 0.1 and s["completeness"] < 0.1
    assert s["informativeness_test"] < 1 / 3 + 0.05  # chance: 1/3, 1/4, 1/3
    assert sap(ztr, ftr, zte, fte) < 0.05
    me = modularity_explicitness(ztr, ftr, zte, fte)
    assert abs(me["explicitness_score_test"] - 0.5) < 0.05  # ROC-AUC of chance
    assert irs(ztr, ftr) < 0.05


def test_macro_roc_auc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from causalrep.metrics.disentanglement import macro_roc_auc

    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, 700)
    P = rng.random((700, 5))
    P[:, 1] = np.round(P[:, 1], 1)  # many tied scores: the average-rank rule must match sklearn's trapezoids
    P[:, 3] = (y == 3) * 0.5 + 0.25  # a perfect, two-valued score
    Y = y[:, None] == np.arange(5)[None]
    assert macro_roc_auc(Y, P) == pytest.approx(roc_auc_score(Y.astype(int), P, average="macro"), abs=1e-12)
    assert macro_roc_auc(Y[:, 3:4], P[:, 3:4]) == 1.0


# -- DCI's estimators (gbt.py) --------------------------------------------------------------------------
def _cases(n: int, seed: int):
    """aligned, rotated and partly mixed codes of factors (2, 3, 4) plus 2 noise dims (tools/bench_metrics.py's kinds)."""
    z, f = _aligned(n, sizes=(2, 3, 4), seed=seed, noise_dims=2)
    rng = np.random.default_rng(99)  # the same mixing matrices for train and test
    rot, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    mix = np.eye(5)
    mix[:3, :3] += 0.4 * rng.standard_normal((3, 3))
    return {"aligned": (z, f), "rotated": (z @ rot, f), "partly_mixed": (z @ mix, f)}


@pytest.mark.parametrize("kind", ["lightgbm", "lightgbm-short", pytest.param("hist", marks=pytest.mark.slow)])
def test_fast_estimators_agree_with_the_reference(kind):
    # the cross-check tolerances of tools/bench_metrics.py: d and c within 0.10 of GradientBoostingClassifier,
    # the accuracies within 0.05 (at 10k points the bench measures 0.012 / 0.025 for lightgbm / hist)
    train, test = _cases(600, 0), _cases(300, 1)
    for case in train:
        args = (*train[case], *test[case])
        ours, ref = dci(*args, gbt=kind, n_jobs=2), dci(*args, gbt="gbt", n_jobs=2)
        for key, tol in (("disentanglement", 0.10), ("completeness", 0.10), ("informativeness_train", 0.05),
                         ("informativeness_test", 0.05)):
            assert ours[key] == pytest.approx(ref[key], abs=tol), (case, key)


def _replayed_importance(model, x, y):
    """GBC's importance recomputed from the data: each stage's residuals, samples routed by LightGBM's pred_leaf."""
    from scipy.special import expit, softmax

    b, classes = model.booster, model.classes
    Ct = len(classes) if len(classes) > 2 else 1
    leaf = b.predict(x, pred_leaf=True).astype(np.int64)  # (N, trees)
    N, T = leaf.shape
    nodes, values = [], np.zeros((T, 8))
    for t, info in enumerate(b.dump_model()["tree_info"]):
        def walk(node):
            if "split_index" not in node:
                values[t, node.get("leaf_index", 0)] = node["leaf_value"]
                return [node.get("leaf_index", 0)]
            left, right = walk(node["left_child"]), walk(node["right_child"])
            nodes.append((node["split_feature"], t, left, right))
            return left + right
        walk(info["tree_structure"])
    V = np.take_along_axis(values, leaf.T, axis=1).T.reshape(N, T // Ct, Ct)  # each tree's output per sample
    raw = np.cumsum(V, axis=1) - V + model.init  # scores before each stage
    Y = (y[:, None] == classes[None]) if Ct > 1 else (y == classes[-1])[:, None]
    resid = (Y[:, None, :] - (softmax(raw, axis=2) if Ct > 1 else expit(raw))).reshape(N, T)
    imp = np.zeros(x.shape[1])
    for f, t, left, right in nodes:
        in_l, in_r = np.isin(leaf[:, t], left), np.isin(leaf[:, t], right)
        sl, sr, nl, nr = resid[in_l, t].sum(), resid[in_r, t].sum(), in_l.sum(), in_r.sum()
        imp[f] += sl ** 2 / nl + sr ** 2 / nr - (sl + sr) ** 2 / (nl + nr)
    return imp / imp.sum()


@pytest.mark.parametrize("sizes", [(2,), (4,)])  # the binary (one tree per stage) and the softmax path
@pytest.mark.parametrize("kind", ["lightgbm", "lightgbm-short"])  # lr 0.1 and 0.2: S = v H / lr per leaf
def test_lightgbm_gbc_importance_equals_a_replay_on_the_data(sizes, kind):
    from causalrep.metrics.gbt import SCHEDULES, fit_lightgbm

    z, f = _aligned(500, sizes=sizes, seed=2, noise_dims=2)
    zt, ft = _aligned(200, sizes=sizes, seed=3, noise_dims=2)
    x = z @ np.random.default_rng(5).standard_normal((3, 3))  # mixed: every dim gets splits
    model, p_train, p_test = fit_lightgbm(x, f[:, 0], zt, kind=kind)
    assert model.booster.current_iteration() == SCHEDULES[kind][0]
    assert np.allclose(model.importance(), _replayed_importance(model, x, f[:, 0]), atol=1e-8)
    # the running scores read during training are the model's predictions
    assert np.array_equal(p_train, model.predict(x))
    assert np.array_equal(p_test, model.predict(zt))


def test_dci_estimator_names():
    from causalrep.metrics.gbt import GBT_DEFAULT, GBT_KINDS

    assert GBT_DEFAULT == "lightgbm" and set(GBT_KINDS) == {"lightgbm", "lightgbm-short", "hist", "gbt"}
    z, f = _aligned(200, sizes=(3,))
    with pytest.raises(ValueError, match=r"unknown gbt kind 'xgboost'; valid: lightgbm, lightgbm-short, hist, gbt"):
        dci(z, f, z, f, gbt="xgboost")


def test_the_spec_offers_exactly_the_dci_estimators_the_metric_knows():
    from causalrep.metrics.gbt import GBT_KINDS
    from causalrep.metrics.wrappers import DCI_ESTIMATORS
    from causalrep.spec.schema import DCI_CHOICES

    assert set(DCI_CHOICES) == set(DCI_ESTIMATORS) and set(DCI_ESTIMATORS.values()) == set(GBT_KINDS)


def test_the_spec_offers_exactly_the_sap_solvers_the_metric_knows():
    from causalrep.metrics.disentanglement import SAP_BACKENDS
    from causalrep.metrics.wrappers import SAP_SOLVERS, sap_backend
    from causalrep.spec.schema import SAP_CHOICES

    assert set(SAP_CHOICES) == set(SAP_SOLVERS) and set(SAP_SOLVERS.values()) == set(SAP_BACKENDS)
    assert sap_backend("exact") == "torch" and sap_backend("reference") == "sklearn"
    with pytest.raises(ValueError, match=r"evaluate.sap: unknown SAP solver 'svm'; valid: exact, reference"):
        sap_backend("svm")
