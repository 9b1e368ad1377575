"""Model families; importing this package registers every built-in model."""
from .trainable import CAPABILITIES, DEFAULT_GRAPHS, MODELS, BuildContext, FitContext, ModelOutput, Trainable, register_model
from .base import LatentModel, reconstruction_loss
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
