"""Tracker protocol, the always-on jsonl tracker and a fan-out to several trackers."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torchvision.utils import save_image

from ..errors import CausalrepWarning, one_line


@runtime_checkable
class Tracker(Protocol):
    """What the trainer and the report call; nothing else about a tracking backend leaks out."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metric(self, name: str, value: float, *, step: int, context: str = "train") -> None: ...

    def log_image(self, name: str, image: torch.Tensor, *, step: int, context: str = "eval") -> None:
        """image: (3, H, W) or (1, H, W) float in [0, 1] (e.g. a torchvision.utils.make_grid)."""

    def close(self) -> None: ...


class JsonlTracker:
    """Appends one JSON object per metric to RUN_DIR/metrics.jsonl; images go to RUN_DIR/images/."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        self._fh = open(self.path, "a", buffering=1)  # line-buffered: a crash keeps every line written

    def log_params(self, params: dict[str, Any]) -> None:
        (self.run_dir / "hparams.json").write_text(json.dumps(params, indent=2, default=str))

    def log_metric(self, name: str, value: float, *, step: int, context: str = "train") -> None:
        value = float(value)
        rec = {"name": name, "value": value if math.isfinite(value) else str(value), "step": int(step),
               "context": context}
        self._fh.write(json.dumps(rec) + "\n")

    def log_image(self, name: str, image: torch.Tensor, *, step: int, context: str = "eval") -> None:
        out = self.run_dir / "images"
        out.mkdir(exist_ok=True)
        save_image(image.float().clamp(0, 1), out / f"{name}_{context}_{step:07d}.png")

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """All records of a metrics.jsonl file (for load_run, the report and tests)."""
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


class MultiTracker:
    """Fans every call out to several trackers; a failing backend warns once and is dropped."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = list(trackers)

    def _call(self, method: str, *args, **kwargs) -> None:
        for tr in list(self.trackers):
            try:
                getattr(tr, method)(*args, **kwargs)
            except Exception as exc:  # a tracking backend must never kill a training run
                self.trackers.remove(tr)
                still = "metrics still go to metrics.jsonl" if any(isinstance(t, JsonlTracker) for t in self.trackers) \
                    else "its metrics from here on are lost"
                warnings.warn(f"tracker {type(tr).__name__} failed in {method} ({type(exc).__name__}: "
                              f"{one_line(exc, 300)}); continuing without it, {still}", CausalrepWarning, stacklevel=3)
                if method != "close":
                    try:  # release what it holds (an Aim run's lock and threads); it failed once already
                        tr.close()
                    except Exception:
                        pass

    def log_params(self, params):
        self._call("log_params", params)

    def log_metric(self, name, value, *, step, context="train"):
        self._call("log_metric", name, value, step=step, context=context)

    def log_image(self, name, image, *, step, context="eval"):
        self._call("log_image", name, image, step=step, context=context)

    def close(self):
        self._call("close")
