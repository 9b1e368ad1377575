"""Ground-truth datasets; importing this package registers the built-in ones."""
from .base import DATASETS, GroundTruthDataset, Split
from . import dsprites, shapes3d  # noqa: F401  (register "dsprites" and "shapes3d")
