"""The metric registry (names usable in a spec's evaluate.metrics)."""
from ..registry import Registry

# name -> fn(*, model, dataset, split, n, loss, device, batch_size) -> dict[str, float]
METRICS: Registry = Registry("metric")
