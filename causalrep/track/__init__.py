"""Experiment tracking: Tracker protocol, jsonl (always on) and Aim (imported lazily)."""
from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import CausalrepWarning, one_line
from .aim import AimTracker
from .base import JsonlTracker, MultiTracker, Tracker, read_jsonl


def make_tracker(kind: str, *, run_dir: str | Path, repo: str | Path, experiment: str,
                 run_name: str | None = None) -> MultiTracker:
    """metrics.jsonl in the run folder always; plus Aim when kind == 'aim'. If Aim cannot open its
    repo (or is not installed), warn once and go on with the jsonl tracker alone."""
    trackers: list[Tracker] = [JsonlTracker(run_dir)]
    if kind == "aim":
        try:
            trackers.append(AimTracker(repo=repo, experiment=experiment, run_name=run_name))
        except (ImportError, RuntimeError) as exc:
            warnings.warn(f"Aim tracking is off for this run ({one_line(exc, 300)}); metrics still go to "
                          f"{Path(run_dir) / 'metrics.jsonl'}", CausalrepWarning, stacklevel=2)
    return MultiTracker(trackers)
