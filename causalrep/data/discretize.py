"""Equal-width histogram discretisation of one column (disentanglement_lib's), shared by the data and the metrics."""
from __future__ import annotations

import numpy as np

# disentanglement_lib's metric configs bind `discretizer.num_bins = 20` with `@histogram_discretizer`
NUM_BINS = 20


def histogram_bins(column: np.ndarray, num_bins: int = NUM_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(N,) values -> ((N,) int64 bin labels in 1..num_bins, (num_bins + 1,) float64 edges).

    disentanglement_lib's `utils._histogram_discretize`: the edges are those of `np.histogram(column, num_bins)`
    (a constant column gets the range (v - 0.5, v + 0.5), as numpy does) and the label is
    `np.digitize(column, edges[:-1])`, the number of left edges <= value, so the maximum falls in the last bin.
    """
    column = np.asarray(column)
    edges = np.histogram_bin_edges(column, bins=num_bins)  # numpy's own edges
    # searchsorted(side="right") counts the left edges <= value: np.digitize's rule for increasing bins
    return np.searchsorted(edges[:-1], column, side="right").astype(np.int64), edges
