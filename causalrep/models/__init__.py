"""Model families; importing this package registers every built-in model."""
from .base import DEFAULT_GRAPHS, MODELS, BuildContext, LatentModel, ModelOutput, reconstruction_loss, register_model
from .ae import AE, VAE
from .sae import SAE
from .wae import WAE
from .btcvae import BetaTCVAE
from .factorvae import FactorVAE
from .laddervae import LadderVAE
from .adaae import AdaAE
from .vlae import VLAE
from .asae import ASAE, attention_grid, attention_png
from .causalvae import CausalVAE
from .icm import ICMCommittee
