"""The boosted-tree predictors of DCI and fairness: disentanglement_lib's GradientBoostingClassifier and fast twins.

dci.py and fairness.py (google-research/disentanglement_lib, evaluation/metrics/) fit one sklearn
GradientBoostingClassifier() per factor and DCI reads its `feature_importances_`. Four estimators:

  gbt             that classifier itself (the reference; minutes per evaluation at 10,000 points).
  lightgbm        the same boosting model fitted by LightGBM (the default; docs/metrics.md compares them).
  lightgbm-short  LightGBM with half the stages at twice the learning rate (50 x 0.2 instead of 100 x 0.1,
                  the same total shrinkage): not GBC's model, but within 0.007 of `lightgbm` in DCI d/c and
                  0.02 in accuracy on the bench's cases at half the time; what the curves during training use.
  hist            the same model fitted by sklearn's HistGradientBoostingClassifier (the earlier default).

All four report GBC's importance definition. GBC fits each stage's regression tree to the residual
r = y_k - p_k and credits a split with the squared-error decrease of that residual,
S_L^2 / n_L + S_R^2 / n_R - S^2 / n (S: residual sums, n: counts; sklearn's friedman_mse impurity
decrease, summed per feature over all trees, then normalised: GradientBoostingClassifier.
feature_importances_). The histogram libraries choose splits by Newton gain G^2 / H and report
hessian-weighted gains, which inflate late splits on nuisance dimensions (DCI-d 0.08 below the
reference on an aligned code, docs/metrics.md); so we recompute GBC's quantity on their trees.
"""
from __future__ import annotations

import re

import lightgbm
import numpy as np
from scipy.special import expit, softmax
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier

GBT_KINDS = ("lightgbm", "lightgbm-short", "hist", "gbt")
GBT_DEFAULT = "lightgbm"

# GradientBoostingClassifier()'s defaults, which every estimator here but lightgbm-short reproduces
N_STAGES, LEARNING_RATE, MAX_DEPTH = 100, 0.1, 3
# the LightGBM kinds' (stages, learning rate); lightgbm-short keeps the product (docs/metrics.md "DCI's estimator")
SCHEDULES = {"lightgbm": (N_STAGES, LEARNING_RATE), "lightgbm-short": (50, 0.2)}


def check_kind(kind: str) -> str:
    if kind not in GBT_KINDS:
        raise ValueError(f"unknown gbt kind {kind!r}; valid: {', '.join(GBT_KINDS)}")
    return kind


class ConstantClassifier:
    """Predicts the one class seen in training (boosting refuses a single class); no importances."""

    def __init__(self, value: int):
        self.value = value

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.value)


# -- gbt / hist: sklearn ---------------------------------------------------------------------------------
def gbt_classifier(kind: str = "hist"):
    """The unfitted sklearn model for kind "gbt" (GradientBoostingClassifier() with defaults: 100 stages,
    learning rate 0.1, depth 3, one regression tree per class per stage) or "hist".

    kind="hist" is HistGradientBoostingClassifier set up as the same boosting model (100 iterations,
    lr 0.1, depth 3, min 1 sample per leaf, no L2, no early stopping) with 255-bin histograms and
    Newton-gain splits instead of exact friedman_mse splits.
    """
    if kind == "gbt":
        return GradientBoostingClassifier()
    if kind == "hist":
        return HistGradientBoostingClassifier(learning_rate=LEARNING_RATE, max_iter=N_STAGES, max_depth=MAX_DEPTH,
                                              max_leaf_nodes=None, min_samples_leaf=1, l2_regularization=0.0,
                                              early_stopping=False, random_state=0)
    raise ValueError(f"gbt_classifier: {kind!r} is not an sklearn estimator; valid: gbt, hist")


def _hist_importance(model: HistGradientBoostingClassifier, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """GradientBoostingClassifier's feature_importances_ definition replayed on a fitted hist model.

    The hist model keeps no residual sums per node, so the trees are replayed on the training data:
    each stage's residual y_k - p_k, every sample routed to its leaf, sums added up the tree. Uses the
    fitted model's trees (`_predictors`, `_baseline_prediction`: private sklearn attributes, stable since 1.0).
    """
    N, D = x.shape
    classes = model.classes_
    Y = (y[None, :] == classes[:, None]).astype(np.float64) if len(classes) > 2 \
        else (y == classes[-1]).astype(np.float64)[None, :]  # (trees per stage, N)
    raw = np.zeros(Y.shape) + model._baseline_prediction.reshape(-1, 1)
    x_flat = np.ascontiguousarray(x.T, dtype=np.float64).ravel()  # x_flat[f * N + i] = x[i, f]
    rows = np.arange(N)
    imp = np.zeros(D)
    for stage in model._predictors:
        resid = Y - (softmax(raw, axis=0) if len(Y) > 1 else expit(raw))  # (trees, N)
        for k, tree in enumerate(stage):
            nodes = tree.nodes
            leaf = nodes["is_leaf"].astype(bool)
            feat, thr = nodes["feature_idx"].astype(np.intp), nodes["num_threshold"]
            left, right = nodes["left"].astype(np.intp), nodes["right"].astype(np.intp)
            nxt_left, nxt_right = np.where(leaf, np.arange(len(nodes)), left), np.where(leaf, np.arange(len(nodes)), right)
            cur = np.zeros(N, dtype=np.intp)
            for _ in range(int(nodes["depth"].max())):  # route every sample to its leaf, level by level
                go_left = x_flat.take(feat.take(cur) * N + rows) <= thr.take(cur)
                cur = np.where(go_left, nxt_left.take(cur), nxt_right.take(cur))  # a leaf maps to itself
            S = np.bincount(cur, weights=resid[k], minlength=len(nodes))  # residual sums / counts at leaves
            n = np.bincount(cur, minlength=len(nodes)).astype(np.float64)
            for t in range(len(nodes) - 1, -1, -1):  # children follow parents (pre-order): sum upwards
                if not leaf[t]:
                    l, r = left[t], right[t]
                    S[t], n[t] = S[l] + S[r], n[l] + n[r]
                    if n[l] > 0 and n[r] > 0:
                        imp[feat[t]] += S[l] ** 2 / n[l] + S[r] ** 2 / n[r] - S[t] ** 2 / n[t]
            raw[k] += nodes["value"].take(cur)  # leaf values carry the learning rate
    total = imp.sum()
    return imp / total if total > 0 else imp


# -- lightgbm --------------------------------------------------------------------------------------------
def lightgbm_params(num_classes: int, learning_rate: float = LEARNING_RATE) -> dict:
    """LightGBM parameters for GradientBoostingClassifier()'s model (LightGBM docs, Parameters).

    100 iterations at learning rate 0.1 of depth-3 trees (num_leaves 8 = 2^3, so leaf-wise growth can
    build the full depth-3 tree GBC's depth-first builder makes); min 1 sample per leaf, no L1/L2, no
    bagging, as GBC's min_samples_leaf=1 and subsample=1. Deviation: LightGBM's default hessian floor
    per leaf (1e-3) stays; without it, near-certain leaves (p(1-p) ~ 0) make its hessian-based count
    estimate pick empty children ("Check failed: best_split_info.left_count > 0", LightGBM issue #4739);
    such leaves carry ~0 residual, so GBC's importances barely see them. multiclass: one tree per
    class per iteration on softmax gradients with hessians K/(K-1) p (1-p), so each leaf's Newton value
    is GBC's (K-1)/K sum r / sum p (1-p) (_gb.py, _update_terminal_region); binary: one tree per stage.
    255 histogram bins (LightGBM's default; 63 or fewer lost 0.01-0.03 train accuracy on rotated codes)
    with min_data_in_bin 1. One thread: DCI runs the factors in parallel. The init score is set by the
    caller (GBC's prior), so boost_from_average is off.
    """
    params = {"objective": "multiclass" if num_classes > 2 else "binary", "learning_rate": learning_rate,
              "num_leaves": 2 ** MAX_DEPTH, "max_depth": MAX_DEPTH, "min_data_in_leaf": 1,
              "min_sum_hessian_in_leaf": 1e-3, "lambda_l1": 0.0, "lambda_l2": 0.0, "bagging_fraction": 1.0,
              "feature_fraction": 1.0, "max_bin": 255, "min_data_in_bin": 1, "feature_pre_filter": False,
              "boost_from_average": False, "metric": "None", "num_threads": 1, "deterministic": True,
              "force_col_wise": True, "seed": 0, "verbose": -1}
    if num_classes > 2:
        params["num_class"] = num_classes
    return params


def _prior_init(y_index: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) GBC's init raw scores (sklearn's DummyClassifier prior): log class priors, or the log-odds for 2."""
    prior = np.bincount(y_index, minlength=num_classes) / len(y_index)
    return np.log(prior) if num_classes > 2 else np.log(prior[1:] / prior[:1])


_FIELDS = ("num_leaves", "split_feature", "left_child", "right_child", "leaf_value", "leaf_weight", "leaf_count")


def lightgbm_gbc_importance(model_text: str, num_features: int, learning_rate: float) -> np.ndarray:
    """(D,) GBC's feature_importances_ of a LightGBM model's trees, from the model's own node statistics.

    The model text (Booster.model_to_string; LightGBM src/io/tree.cpp Tree::ToString) stores per leaf
    its value v = -lr G / H, its hessian sum H (leaf_weight) and its sample count (leaf_count), all at
    full precision (the internal_* fields have 6 digits, so internal sums are added up from the leaves).
    The residual sum GBC's criterion needs is S = -G = v H / lr, so every split's squared-error decrease
    S_L^2/n_L + S_R^2/n_R - S^2/n comes without touching the data. Requires a model trained with an
    explicit init score (no boost_from_average bias folded into the first trees' values).
    """
    fields = {name: re.findall(rf"^{name}=(.*)$", model_text, flags=re.MULTILINE) for name in _FIELDS}  # per tree
    split = [int(v) > 1 for v in fields["num_leaves"]]  # a one-leaf tree (no split) has no importance, no weights
    fields = {name: [row for row, keep in zip(rows, split) if keep] for name, rows in fields.items()}
    num_leaves = np.array(fields["num_leaves"], dtype=np.int64)  # (T,) trees with a split
    T = len(num_leaves)
    if T == 0:
        return np.zeros(num_features)

    def flat(name: str, dtype) -> np.ndarray:
        return np.array(" ".join(fields[name]).split(), dtype=dtype)

    n_int = num_leaves - 1
    int_off = np.concatenate([[0], np.cumsum(n_int)[:-1]])  # first internal node / leaf of each tree
    leaf_off = np.concatenate([[0], np.cumsum(num_leaves)[:-1]])
    feat = flat("split_feature", np.int64)
    tree_of = np.repeat(np.arange(T), n_int)  # (internal nodes,)

    def child(name: str) -> np.ndarray:  # global child index: internal j >= 0, leaf l as -1 - l
        c = flat(name, np.int64)
        return np.where(c >= 0, c + int_off[tree_of], -1 - ((-1 - c) + leaf_off[tree_of]))

    left, right = child("left_child"), child("right_child")
    S_leaf = flat("leaf_value", np.float64) * flat("leaf_weight", np.float64) / learning_rate
    n_leaf = flat("leaf_count", np.float64)
    S, n = np.zeros(len(feat)), np.zeros(len(feat))

    def stats(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        leaf = c < 0
        return (np.where(leaf, S_leaf[np.where(leaf, -1 - c, 0)], S[np.where(leaf, 0, c)]),
                np.where(leaf, n_leaf[np.where(leaf, -1 - c, 0)], n[np.where(leaf, 0, c)]))

    for _ in range(int(n_int.max())):  # bottom-up sums; a node's depth <= its tree's internal count
        (sl, nl), (sr, nr) = stats(left), stats(right)
        S, n = sl + sr, nl + nr
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where((nl > 0) & (nr > 0), sl ** 2 / nl + sr ** 2 / nr - S ** 2 / n, 0.0)
    imp = np.bincount(feat, weights=gain, minlength=num_features)
    total = imp.sum()
    return imp / total if total > 0 else imp


class LightGBMTrees:
    """A fitted LightGBM model of GBC: predict(x) -> class labels, and GBC's importances."""

    def __init__(self, booster: lightgbm.Booster, classes: np.ndarray, init: np.ndarray,
                 learning_rate: float = LEARNING_RATE):
        self.booster, self.classes, self.init, self.learning_rate = booster, classes, init, learning_rate

    def labels(self, scores: np.ndarray) -> np.ndarray:
        """(N, C) class scores or (N,) raw log-odds (binary) -> (N,) class labels (GBC's predict rule)."""
        return self.classes[np.argmax(scores, axis=1)] if scores.ndim == 2 else self.classes[(scores > 0).astype(int)]

    def predict(self, x: np.ndarray) -> np.ndarray:
        raw = self.booster.predict(x, raw_score=True, num_threads=1) + (self.init if len(self.init) > 1 else self.init[0])
        return self.labels(raw)

    def importance(self) -> np.ndarray:
        return lightgbm_gbc_importance(self.booster.model_to_string(), self.booster.num_feature(), self.learning_rate)


def fit_lightgbm(x: np.ndarray, y: np.ndarray, x_test: np.ndarray | None = None, *, kind: str = "lightgbm"
                 ) -> tuple[LightGBMTrees, np.ndarray, np.ndarray | None]:
    """Fit on (x, y) (two classes or more) -> (model, train predictions, test predictions or None).

    kind "lightgbm" boosts GBC's 100 stages at learning rate 0.1, "lightgbm-short" 50 at 0.2 (SCHEDULES).

    The predictions on x and x_test are LightGBM's own running scores of both sets, which it updates
    tree by tree while training (the training set and an added validation set), read once after the
    last iteration through Booster.eval_train / eval_valid with a feval that keeps them: a second
    Booster.predict would walk every tree again (~1 s per 5,000 points and 1,000 trees here).
    """
    classes, y_index = np.unique(y, return_inverse=True)
    C = len(classes)
    init = _prior_init(y_index, C)
    stages, learning_rate = SCHEDULES[kind]
    params = lightgbm_params(C, learning_rate)

    def init_score(n: int) -> np.ndarray:
        return np.tile(init, (n, 1)) if C > 2 else np.full(n, init[0])

    train = lightgbm.Dataset(x, y_index, init_score=init_score(len(x)), params=params)
    booster = lightgbm.Booster(params, train)
    if x_test is not None:
        test = train.create_valid(x_test, np.zeros(len(x_test)), init_score=init_score(len(x_test)), params=params)
        booster.add_valid(test, "test")  # binned with the training set's bin edges
    for _ in range(stages):
        booster.update()
    scores = []

    def keep_scores(preds: np.ndarray, data: lightgbm.Dataset):  # feval: the set's current (transformed) scores
        scores.append(preds)
        return "none", 0.0, True

    booster.eval_train(feval=keep_scores)
    if x_test is not None:
        booster.eval_valid(feval=keep_scores)
    model = LightGBMTrees(booster, classes, init, learning_rate)
    # the scores are softmax probabilities (N, C) or the sigmoid (N,): the same argmax / > 0.5 rule as raw
    labels = [model.labels(p if C > 2 else p - 0.5) for p in scores]
    return model, labels[0], labels[1] if x_test is not None else None


# -- one interface --------------------------------------------------------------------------------------
def fit_gbt(kind: str, x: np.ndarray, y: np.ndarray):
    """The `kind` model fitted on (x, y), or a ConstantClassifier where y has one value."""
    check_kind(kind)
    values = np.unique(y)
    if len(values) == 1:
        return ConstantClassifier(values[0])
    if kind in SCHEDULES:
        return fit_lightgbm(x, y, kind=kind)[0]
    return gbt_classifier(kind).fit(x, y)


def gbt_importance(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(D,) normalised feature importances, GBC's definition for every kind."""
    if isinstance(model, ConstantClassifier):
        return np.zeros(x.shape[1])
    if isinstance(model, GradientBoostingClassifier):
        return np.abs(model.feature_importances_)
    if isinstance(model, LightGBMTrees):
        return model.importance()
    return _hist_importance(model, x, y)


def fit_factor(kind: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
               ) -> tuple[np.ndarray, float, float]:
    """One factor of DCI: (importances (D,), train accuracy, test accuracy)."""
    check_kind(kind)
    if kind in SCHEDULES and len(np.unique(y_train)) > 1:
        model, p_train, p_test = fit_lightgbm(x_train, y_train, x_test, kind=kind)
        return model.importance(), float(np.mean(p_train == y_train)), float(np.mean(p_test == y_test))
    model = fit_gbt(kind, x_train, y_train)
    return (gbt_importance(model, x_train, y_train), float(np.mean(model.predict(x_train) == y_train)),
            float(np.mean(model.predict(x_test) == y_test)))
