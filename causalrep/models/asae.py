"""ASAE-H (000 sec 2): an attention encoder with H heads + the SAE's structural decoder."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

from ..errors import SpecError
from ..graph.latent import LatentGraph
from ..nn.attention import AttentionEncoder, ConvTokens, PatchTokens
from ..nn.backbone import ConvDecoder
from ..nn.structural import StructuralDecoder
from ..spec.schema import ASAESpec, AttentionEncoderSpec, ConvDecoderSpec, ConvEncoderSpec, Spec, StructuralDecoderSpec
from ._spec_args import chain_or_dag
from .base import BuildContext, LatentModel, ModelOutput, reconstruction_loss, register_model
from .sae import StructuralValues


@register_model("asae", default_graph="chain")  # 000: the K = 12 structural decoder, a chain over latent_dim
class ASAE(StructuralValues, LatentModel):
    """Attention-Structural autoencoder: "an attention encoder + a K = 12 structural decoder" (000 sec 3),
    unregularised like the SAE. Head h writes latent dims [h*D/H, (h+1)*D/H), so its attention map shows
    where in the image that segment of the representation comes from (000 sec 2, Fig. 7).

    tokens: "patches" (000: overlapping patch x patch patches + coordinates) or "conv" (the pixels of the
    001 conv backbone's features). decoder: "structural" (000, compiled from `graph`) or "conv" (hourglass).
    """

    structural = True

    @classmethod
    def from_spec(cls, spec: Spec, graph: LatentGraph, ctx: BuildContext) -> "ASAE":
        m: ASAESpec = spec.model
        if m.latent_dim % m.heads:
            ok = [h for h in range(1, m.latent_dim + 1) if m.latent_dim % h == 0]
            raise SpecError("model.heads", f"latent_dim={m.latent_dim} is not divisible by heads={m.heads}: each "
                                           f"head writes latent_dim / heads dims (000 sec 2); allowed: {ok}")
        enc = m.encoder
        if isinstance(enc, AttentionEncoderSpec):
            embed, where = enc.embed_dim, "model.encoder.embed_dim"
            kw = dict(tokens="patches", patch=enc.patch, stride=enc.stride, patch_hidden=enc.hidden,
                      head_hidden=enc.head_hidden)
            if enc.patch > spec.data.resolution:
                raise SpecError("model.encoder.patch", f"{enc.patch} exceeds data.resolution={spec.data.resolution}")
        elif isinstance(enc, ConvEncoderSpec):
            embed, where = enc.channels, "model.encoder.channels"
            kw = dict(tokens="conv", enc_blocks=enc.blocks, enc_channels=enc.channels, head_hidden=enc.hidden)
        else:
            raise SpecError("model.encoder.kind", f"model 'asae' supports encoder kinds: attention, conv; "
                                                  f"got {enc.KIND!r}")
        if embed % m.heads:
            raise SpecError(where, f"{embed} is not divisible by model.heads={m.heads} (each head gets an equal share)")
        dec = m.decoder
        if isinstance(dec, StructuralDecoderSpec):
            chain_or_dag(spec, graph)
            kw.update(decoder="structural", mechanism_hidden=dec.mechanism_hidden)
        elif isinstance(dec, ConvDecoderSpec):
            kw.update(decoder="conv", dec_hidden=dec.hidden)
        else:
            raise SpecError("model.decoder.kind", f"model 'asae' supports decoder kinds: structural, conv; "
                                                  f"got {dec.KIND!r}")
        return cls(graph=graph, in_channels=ctx.channels, resolution=spec.data.resolution, heads=m.heads,
                   embed_dim=embed, dec_blocks=dec.blocks, dec_channels=dec.channels,
                   groups=getattr(enc, "groups", dec.groups), recon_loss=spec.train.loss,
                   hybrid_latents=spec.evaluate.hybrid_latents, **kw)

    def __init__(self, *, graph: LatentGraph, in_channels: int, resolution: int, heads: int = 4,
                 embed_dim: int = 384, head_hidden: Sequence[int] = (64, 64, 64), tokens: str = "patches",
                 patch: int = 4, stride: int = 2, patch_hidden: Sequence[int] = (256,), enc_blocks: int = 12,
                 enc_channels: int = 64, decoder: str = "structural", dec_blocks: int = 12, dec_channels: int = 64,
                 mechanism_hidden: Sequence[int] = (64, 64, 64), dec_hidden: Sequence[int] = (), groups: int = 8,
                 recon_loss: str = "bce", hybrid_latents: int = 128):
        super().__init__(graph=graph, recon_loss=recon_loss, hybrid_latents=hybrid_latents)
        if tokens == "patches":
            tok = PatchTokens(in_channels=in_channels, resolution=resolution, patch=patch, stride=stride,
                              embed_dim=embed_dim, hidden=patch_hidden)
        elif tokens == "conv":
            tok = ConvTokens(in_channels=in_channels, resolution=resolution, blocks=enc_blocks,
                             channels=enc_channels, embed_dim=embed_dim, groups=groups)
        else:
            raise ValueError(f"unknown tokens {tokens!r}; valid: patches, conv")
        self.heads = heads
        self.encoder = AttentionEncoder(tokens=tok, embed_dim=embed_dim, heads=heads, latent_dim=graph.latent_dim,
                                        head_hidden=head_hidden)
        if decoder == "structural":
            self.decoder = StructuralDecoder(graph=graph, out_channels=in_channels, resolution=resolution,
                                             blocks=dec_blocks, channels=dec_channels,
                                             mechanism_hidden=mechanism_hidden, groups=groups)
        elif decoder == "conv":
            self.decoder = ConvDecoder(latent_dim=graph.latent_dim, out_channels=in_channels, resolution=resolution,
                                       blocks=dec_blocks, channels=dec_channels, hidden=dec_hidden, groups=groups)
            self.structural = False
            self.supports = self.supports - {"do_value"}  # no node mechanisms to set values in
        else:
            raise ValueError(f"unknown decoder {decoder!r}; valid: structural, conv")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, u: torch.Tensor) -> torch.Tensor:
        return self.decoder(u)

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head attention over the patch grid, (B, H, gh, gw); each map is >= 0 and sums to 1."""
        return self.encoder.attention_maps(x)

    def report_images(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"attention": attention_grid(self, x)}  # where each head looks (000 Fig. 7)

    def head_slice(self, head: int) -> slice:
        """The latent dims written by `head` (000 sec 2: q_h)."""
        d = self.latent_dim // self.heads
        return slice(head * d, (head + 1) * d)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        rec = reconstruction_loss(self.decode_logits(self.encode(x)), x, self.recon_loss)
        return ModelOutput(loss=rec, recon=rec)


@torch.no_grad()
def attention_png(model: ASAE, x: torch.Tensor, path: str | Path, max_images: int = 8) -> Path:
    """Write attention_grid(model, x) as a PNG and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(attention_grid(model, x, max_images), path)
    return path


@torch.no_grad()
def attention_grid(model: ASAE, x: torch.Tensor, max_images: int = 8) -> torch.Tensor:
    """The heads' attention maps as one (3, H, W) image grid (torchvision.utils.make_grid).

    One row per image: the image, then one tile per head drawn as in 000 Fig. 7: the map of that image in
    the red channel, the map averaged over the batch in the green channel (yellow where they overlap), each
    scaled to its maximum and upsampled (nearest) to the image size.
    """
    was_training = model.training
    model.eval()
    try:
        maps = model.attention_maps(x).float()  # (B, H, gh, gw)
    finally:
        model.train(was_training)
    x = x[:max_images].float().cpu()
    maps = maps.cpu()
    mean = maps.mean(0, keepdim=True).expand(x.shape[0], -1, -1, -1)
    maps = maps[:x.shape[0]]

    def scaled(m: torch.Tensor) -> torch.Tensor:
        m = m / m.flatten(2).amax(-1).clamp_min(1e-12)[..., None, None]
        return F.interpolate(m, size=x.shape[-2:], mode="nearest")

    red, green = scaled(maps), scaled(mean)  # (B, H, R, R) each
    tiles = torch.stack([red, green, torch.zeros_like(red)], dim=2)  # (B, H, 3, R, R)
    images = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
    grid = torch.cat([images[:, None], tiles], dim=1).flatten(0, 1)  # (B * (H + 1), 3, R, R)
    return make_grid(grid, nrow=maps.shape[1] + 1, padding=2, pad_value=1.0)
