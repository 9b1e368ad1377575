"""Ground-truth datasets; importing this package registers the built-in ones."""
from .base import DATASETS, FILE_LOADERS, GroundTruthDataset, Split, factor_mask
from . import digits, dsprites, files, pendulum, shapes3d  # noqa: F401  (register the built-in datasets and file loaders)
from . import user  # noqa: F401  (registers folder and hdf5: your own images with factor values)
from . import icm  # noqa: F401  (registers icm_digits: transformed digits for the ICM committee, 004)
