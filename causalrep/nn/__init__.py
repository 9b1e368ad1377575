"""Neural building blocks: the conv backbone, Str-Tfm and the structural decoder."""
from .backbone import ConvBlock, ConvDecoder, ConvEncoder, Upsample2x, bottleneck_size, mlp
from .structural import StrTfm, StructuralDecoder
