"""Generation from trained models: prior / hybrid / structured sampling, traversals, intervention grids
(the FIDs of samples are a metric: metrics.fid.sample_fids)."""
from .sampling import (SAMPLERS, dependent_groups, hybrid_latents, iter_samples, mutual_information,
                       node_mutual_information, prior_latents, sample_images, sample_latents,
                       structured_hybrid_latents, traversal_grid)
from .interventions import intervention_grid, intervention_tiles
