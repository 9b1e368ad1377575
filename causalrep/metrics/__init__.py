"""Evaluation metrics; `METRICS` maps a spec's `evaluate.metrics` names to functions."""
from .registry import METRICS
from .reconstruction import batched_images, mean_image, reconstruction
