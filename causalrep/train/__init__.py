"""Training: the model-agnostic trainer and checkpoints."""
from .checkpoint import load_checkpoint, save_checkpoint
from .trainer import Trainer, resolve_device
