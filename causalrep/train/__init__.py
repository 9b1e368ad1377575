"""Training: the model-agnostic trainer and checkpoints."""
from .checkpoint import CHECKPOINT, has_checkpoint, load_checkpoint, load_latest, save_checkpoint
from .trainer import Trainer, resolve_device
