"""Optional Aim backend for the Tracker protocol; the only module of causalrep that imports `aim`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def _to_hwc_uint8(image: torch.Tensor):
    """(3,H,W) or (1,H,W) float in [0,1] -> numpy (H,W,3) or (H,W) uint8, clamped and rounded."""
    img = image.detach().float().cpu()
    if img.ndim == 2:
        img = img.unsqueeze(0)
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected a (3,H,W) or (1,H,W) image tensor, got shape {tuple(image.shape)}")
    arr = img.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


class AimTracker:
    """Writes params, metrics and images into an Aim repo (browse it with `aim up --repo REPO`)."""

    def __init__(self, *, repo: str | Path, experiment: str, run_name: str | None = None):
        try:
            import aim  # lazy: importing causalrep must never need aim
        except ImportError as exc:
            raise RuntimeError(f"aim is not installed; cannot track to Aim repo {repo}: {exc}") from exc
        self._aim = aim
        self.repo_path = Path(repo).expanduser().resolve()
        self.run = None
        try:
            self.repo_path.mkdir(parents=True, exist_ok=True)
            # aim 3.x SDK: aim.Repo.from_path(path, init=True) creates <path>/.aim (idempotent).
            aim.Repo.from_path(str(self.repo_path), init=True)
            # aim.Run(repo=..., experiment=...): system_tracking_interval=None and
            # capture_terminal_logs=False keep Aim's ResourceTracker thread (CPU/GPU stats,
            # stdout capture) from starting; we only want what the trainer logs.
            self.run = aim.Run(repo=str(self.repo_path), experiment=experiment,
                               system_tracking_interval=None, capture_terminal_logs=False)
            if run_name:
                self.run.name = run_name  # Run.name property (structured db)
        except Exception as exc:  # a locked or read-only repo (aim's RunLockingError, PermissionError, sqlite's
            # "database is locked"): the caller goes on with metrics.jsonl; a half-made run releases its lock
            if self.run is not None:
                try:
                    self.run.close()
                except Exception:
                    pass
            raise RuntimeError(f"cannot open or create Aim repo at {self.repo_path}: "
                               f"{type(exc).__name__}: {exc}") from exc
        self.run_hash: str = self.run.hash
        self._closed = False

    def log_params(self, params: dict[str, Any]) -> None:
        # Run.__setitem__ stores a nested dict of plain types; shown under "hparams" in the UI.
        self.run["hparams"] = params

    def log_metric(self, name: str, value: float, *, step: int, context: str = "train") -> None:
        # Run.track(value, name=, step=, context=) appends to the (name, context) sequence; nan/inf are kept.
        self.run.track(float(value), name=name, step=int(step), context={"subset": context})

    def log_image(self, name: str, image: torch.Tensor, *, step: int, context: str = "eval") -> None:
        # aim.Image accepts a numpy HWC/HW uint8 array (-> PIL.Image.fromarray); converting
        # ourselves clamps and rounds instead of Aim's own torch path (mul(255).byte() truncates).
        img = self._aim.Image(_to_hwc_uint8(image), caption=f"{name} step {step}")
        self.run.track(img, name=name, step=int(step), context={"subset": context})

    def close(self) -> None:
        # Run.close() writes end_time, flushes, stops Aim's heartbeat/check-in threads and releases the
        # run lock (.aim/locks/<hash>.softlock). aim 3.29 does not index on close: `aim up` indexes the
        # run in its background RepoIndexManager; SDK readers (aim.Repo.iter_runs) need that index.
        if not self._closed:
            self._closed = True
            self.run.close()
