"""Disentanglement curves while training (issue #22): the array metrics on a fixed sample of the validation split.

The final evaluation follows disentanglement_lib (fresh factor samples from the whole dataset, wrappers.py); a
curve needs the same points at every step instead, so that a change is the model's and not the sample's: the first
`n` validation images, encoded by the current model, their factors as the targets, the first two thirds fitting
the predictors (DCI's trees, SAP's SVMs, ModExp's regressions) and the last third testing them (the final
evaluation's N / N // 2 proportion). Metric names are those of the final metrics, so a curve's last point and the
final value are comparable (they differ by the sample).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..data.base import GroundTruthDataset
from ..models.trainable import Trainable
from .disentanglement import dci, irs, mig, modularity_explicitness, sap
from .wrappers import DCI_ESTIMATORS, eval_mode, sap_backend

# metrics a curve can follow: the ones that need codes and factors only (BetaVAE / FactorVAE / fairness draw
# interventional batches, FID and reconstruction are not disentanglement)
CURVE_METRICS = ("mig", "dci", "sap", "irs", "modexp")
# the keys each curve metric logs (the final metrics' names, wrappers.py)
CURVE_KEYS = {
    "mig": ("mig",),
    "dci": ("dci_disentanglement", "dci_completeness", "dci_informativeness_train", "dci_informativeness_test"),
    "sap": ("sap",),
    "irs": ("irs",),
    "modexp": ("modexp_modularity", "modexp_explicitness_train", "modexp_explicitness_test"),
}
LEAST_SAMPLES = 6  # 4 to fit on and 2 to test on, the smallest split DCI and SAP accept


class CurveEvaluator:
    """The curve metrics of a model on fixed validation images: evaluator(model, device) -> {key: value}.

    dataset, index: the images (dataset indices; rendered once and kept on the CPU, float32: 1,500 64x64 RGB
    images are 74 MB); metrics: names in CURVE_METRICS; dci: the evaluate.dci estimator; sap: the evaluate.sap
    solver. `seconds` accumulates the time spent, for the cost line.
    """

    def __init__(self, dataset: GroundTruthDataset, index: np.ndarray, metrics: tuple[str, ...], *,
                 dci: str = "short", sap: str = "exact", batch_size: int = 256):
        unknown = [m for m in metrics if m not in CURVE_METRICS]
        if unknown:
            raise ValueError(f"curve metrics {unknown}: valid: {', '.join(CURVE_METRICS)}")
        if dci not in DCI_ESTIMATORS:
            raise ValueError(f"unknown DCI estimator {dci!r}; valid: {', '.join(DCI_ESTIMATORS)}")
        self.sap_backend = sap_backend(sap, "curves: sap")
        index = np.asarray(index)
        if len(index) < LEAST_SAMPLES:
            raise ValueError(f"curves need at least {LEAST_SAMPLES} validation images; got {len(index)}")
        self.metrics, self.dci, self.batch_size = tuple(metrics), dci, batch_size
        self.factors = np.asarray(dataset.index_to_factors(index), dtype=np.int64)
        self.images = torch.cat([dataset.images_at(index[s:s + 1024]) for s in range(0, len(index), 1024)])
        self.n_train = (2 * len(index)) // 3
        self.seconds = 0.0

    def keys(self) -> list[str]:
        return [k for m in self.metrics for k in CURVE_KEYS[m]]

    @torch.no_grad()
    def codes(self, model: Trainable, device: torch.device | str) -> np.ndarray:
        out = []
        with eval_mode(model):
            for s in range(0, len(self.images), self.batch_size):
                x = self.images[s:s + self.batch_size].to(device)
                out.append(model.encode(x).float().reshape(len(x), -1).cpu().numpy().astype(np.float64))
        return np.concatenate(out)

    def __call__(self, model: Trainable, device: torch.device | str) -> dict[str, float]:
        t0 = time.perf_counter()
        z = self.codes(model, device)
        n = self.n_train
        args = (z[:n], self.factors[:n], z[n:], self.factors[n:])
        out: dict[str, Any] = {}
        for name in self.metrics:
            if name == "mig":
                out["mig"] = mig(z, self.factors)
            elif name == "irs":
                out["irs"] = irs(z, self.factors)
            elif name == "sap":
                out["sap"] = sap(*args, backend=self.sap_backend)
            elif name == "dci":
                out.update({f"dci_{k}": v for k, v in dci(*args, gbt=DCI_ESTIMATORS[self.dci]).items()})
            else:  # modexp
                s = modularity_explicitness(*args)
                out.update({"modexp_modularity": s["modularity"],
                            "modexp_explicitness_train": s["explicitness_score_train"],
                            "modexp_explicitness_test": s["explicitness_score_test"]})
        self.seconds += time.perf_counter() - t0
        return {k: float(v) for k, v in out.items()}


class EarlyStopping:
    """Stop when curve key `key` has not improved by more than min_delta for `patience` evaluations in a row.

    mode "max" (a disentanglement score) or "min". update(step, value) -> a reason (str) to stop, or None. The count
    restarts when a run is resumed (the state is not checkpointed), as the ICM committee's convergence count does.
    """

    def __init__(self, key: str, *, patience: int = 3, mode: str = "max", min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ValueError(f"early stopping mode must be 'max' or 'min'; got {mode!r}")
        if patience < 1:
            raise ValueError(f"early stopping patience must be >= 1; got {patience}")
        self.key, self.patience, self.mode, self.min_delta = key, patience, mode, min_delta
        self.best: tuple[int, float] | None = None  # (step, value)
        self.stale = 0

    def update(self, step: int, value: float) -> str | None:
        better = self.best is None or (value > self.best[1] + self.min_delta if self.mode == "max"
                                       else value < self.best[1] - self.min_delta)
        if better:
            self.best, self.stale = (step, value), 0
            return None
        self.stale += 1
        if self.stale < self.patience:
            return None
        return (f"early stop: {self.key} has not improved on {self.best[1]:.4g} (step {self.best[0]}) for "
                f"{self.patience} evaluations ({self.mode} mode, min_delta {self.min_delta:g})")
