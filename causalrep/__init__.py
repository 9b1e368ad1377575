"""causalrep: structured and causal representation learning from declarative latent-graph specs."""
from .build import Run, build_dataset, build_graph, build_model, load_run, validate_spec
from .errors import CausalrepError, CheckpointError, DataError, SpecError, TrainingError
from .experiment import Experiment
from .graph import LatentGraph
from .models import LatentModel, ModelOutput, Trainable
from .spec import load_spec

__all__ = ["load_spec", "build_dataset", "build_graph", "build_model", "validate_spec", "Experiment", "Run",
           "load_run", "LatentGraph", "LatentModel", "ModelOutput", "Trainable", "CausalrepError", "CheckpointError", "DataError",
           "SpecError", "TrainingError"]
__version__ = "0.1.0"
