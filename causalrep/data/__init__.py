"""Ground-truth datasets; importing this package registers the built-in ones."""
from .base import DATASETS, GroundTruthDataset, Split
from . import dsprites  # noqa: F401  (registers "dsprites")
