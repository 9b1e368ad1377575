"""Model families; importing this package registers every built-in model."""
from .base import MODELS, LatentModel, ModelOutput, reconstruction_loss
from .ae import AE, VAE
from .sae import SAE
