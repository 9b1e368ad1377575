"""AdaAE, VLAE and ASAE: where the latents enter the decoder, the attention maps, spec errors, sizes."""
from __future__ import annotations

import math

import pytest
import torch

from causalrep.build import build_model
from causalrep.errors import SpecError
from causalrep.models.asae import attention_png
from causalrep.models.vlae import rung_depths
from causalrep.nn import StrTfm
from causalrep.spec import load_spec

from conftest import tiny_spec

STRUCTURAL = {"kind": "structural", "blocks": 6, "channels": 8, "groups": 4, "mechanism_hidden": [8]}
ENC6 = {"kind": "conv", "blocks": 6, "channels": 8, "groups": 4}
ATTENTION = {"kind": "attention", "patch": 4, "stride": 2, "embed_dim": 24, "hidden": [16], "head_hidden": [8]}


def first_strtfm_output(model, u: torch.Tensor) -> torch.Tensor:
    """Output of the decoder's first Str-Tfm layer (captured by a forward hook) for latents u."""
    first = model.decoder.graph.order[0]
    seen = []
    handle = model.decoder.strtfm[first].register_forward_hook(lambda m, args, out: seen.append(out))
    try:
        with torch.no_grad():
            model.decode_logits(u)
    finally:
        handle.remove()
    return seen[0]


# ------------------------------------------------------------------------------------------------ AdaAE
def test_adaae_every_strtfm_layer_sees_the_whole_latent_unlike_the_sae():
    ada = build_model(tiny_spec("adaae", 6, encoder=ENC6, decoder=STRUCTURAL, layers=3)).eval()
    sae = build_model(tiny_spec("sae", 6, {"kind": "chain", "nodes": 3}, encoder=ENC6, decoder=STRUCTURAL)).eval()
    # 001 sec 3.1: "all latent variables are passed to each of the Str-Tfm layers" (in_dim D = 6, not D/K = 2)
    assert [m.net[0].in_features for m in ada.decoder.strtfm.values()] == [6, 6, 6]
    assert [m.net[0].in_features for m in sae.decoder.strtfm.values()] == [2, 2, 2]
    u = torch.randn(3, 6)
    v = u.clone()
    v[:, -1] += 1.0  # u_last: in the SAE it belongs to the last node only
    assert not torch.equal(first_strtfm_output(ada, u), first_strtfm_output(ada, v))
    assert torch.equal(first_strtfm_output(sae, u), first_strtfm_output(sae, v))
    assert ada.structural is False and sae.structural is True


def test_adaae_layers_spread_evenly_and_latents_are_independent_dims():
    model = build_model(tiny_spec("adaae", 6, encoder=ENC6, decoder=STRUCTURAL, layers=3))
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in model.decoder.mechanism[n].modules())
             for n in model.decoder.graph.order]
    assert convs == [2, 2, 2]  # K = 3 layers between 6 blocks (001 A.2.1)
    assert model.graph.kind == "independent" and len(model.graph.nodes) == 6  # hybrid: one variable per dim
    default = build_model(tiny_spec("adaae", 4, encoder=ENC6, decoder=STRUCTURAL))
    assert len(default.decoder.strtfm) == 4  # layers: null -> latent_dim (AdaAE-12)
    with pytest.raises(SpecError, match=r"^graph: model 'adaae'"):
        build_model(tiny_spec("adaae", 4, {"kind": "chain", "nodes": 4}, decoder=STRUCTURAL))


def test_structural_decoder_full_latent_checks_its_width():
    model = build_model(tiny_spec("adaae", 6, encoder=ENC6, decoder=STRUCTURAL, layers=3))
    with pytest.raises(ValueError, match=r"expected latents of shape \(B, 6\)"):
        model.decoder(torch.randn(2, 3))
    assert isinstance(model.decoder.strtfm["layer1"], StrTfm)


# ------------------------------------------------------------------------------------------------ VLAE
def test_vlae_rung_latents_enter_at_their_depths():
    spec = tiny_spec("vlae", 6, encoder=ENC6, decoder={**ENC6}, rungs=3, rung_hidden=[8, 8, 8])
    model = build_model(spec).eval()
    assert model.depths == rung_depths(3, 6) == [0, 2, 4]
    assert model.taps == [5, 3, 1]  # inference rung k reads the mirrored encoder block (deepest first)
    u = torch.randn(2, 6)
    with torch.no_grad():
        before = model.decoder_features(u)
        for k, depth in enumerate(model.depths):
            v = u.clone()
            v[:, 2 * k: 2 * k + 2] += 1.5  # rung k's group
            after = model.decoder_features(v)
            same = [torch.equal(b, a) for b, a in zip(before, after)]
            assert same == [j < depth for j in range(6)], (k, same)


def test_vlae_is_a_vae_over_all_rungs():
    spec = tiny_spec("vlae", 4, rungs=2)
    model = build_model(spec)
    x = torch.rand(3, 1, 16, 16)
    out = model(x)
    assert set(out) >= {"loss", "recon", "kl"} and float(out.kl.detach()) >= 0
    assert torch.allclose(out.loss, out.recon + spec.model.beta * out.kl)
    model.eval()
    assert torch.equal(model.encode(x), model.posterior(x)[0])  # encode = concatenated posterior means
    assert model.can("prior")
    with pytest.raises(SpecError, match=r"^model.rungs: latent_dim=4 is not divisible by rungs=3"):
        build_model(tiny_spec("vlae", 4, rungs=3))
    with pytest.raises(SpecError, match=r"^model.encoder.hidden"):
        build_model(tiny_spec("vlae", 4, encoder={**ENC6, "hidden": [16]}))


# ------------------------------------------------------------------------------------------------ ASAE
@pytest.mark.parametrize("heads", [4, 6, 12])
def test_asae_attention_maps_are_distributions_over_the_patch_grid(heads):
    model = build_model(tiny_spec("asae", 12, encoder=ATTENTION, decoder=STRUCTURAL, heads=heads)).eval()
    x = torch.rand(3, 1, 16, 16)
    maps = model.attention_maps(x)
    # 000 sec 2: overlapping 4x4 patches, here with stride 2 (and padding 1): a 16x16 image is an 8x8 grid
    assert maps.shape == (3, heads, 8, 8)
    assert (maps >= 0).all()
    assert torch.allclose(maps.flatten(2).sum(-1), torch.ones(3, heads))
    u = model.encode(x)
    assert u.shape == (3, heads * (12 // heads))  # each head writes D/H dims, concatenated
    assert model.head_slice(heads - 1) == slice(12 - 12 // heads, 12)


def test_asae_heads_own_their_latent_segments():
    model = build_model(tiny_spec("asae", 12, encoder=ATTENTION, decoder=STRUCTURAL, heads=4)).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        base = model.encode(x)
        for p in model.encoder.out[1].parameters():  # perturb head 2's MLP only
            p.add_(0.5)
        moved = model.encode(x)
    changed = (base != moved).any(0)
    assert changed[model.head_slice(1)].all() and not changed[:3].any() and not changed[6:].any()


def test_asae_structural_decoder_keeps_non_descendants_invariant():
    model = build_model(tiny_spec("asae", 4, encoder=ATTENTION, decoder=STRUCTURAL, heads=2)).eval()
    with torch.no_grad():
        u = model.encode(torch.rand(2, 1, 16, 16))
        before = model.node_features(u)
        after = model.node_features(model.intervene(u, {"u3": 2.0}))
    assert [torch.equal(before[n], after[n]) for n in ["u1", "u2", "u3", "u4"]] == [True, True, False, False]


def test_asae_spec_errors_name_the_key():
    with pytest.raises(SpecError, match=r"^model.heads: latent_dim=12 is not divisible by heads=5"):
        build_model(tiny_spec("asae", 12, encoder=ATTENTION, decoder=STRUCTURAL, heads=5))
    with pytest.raises(SpecError, match=r"^model.encoder.embed_dim: 18 is not divisible by model.heads=4"):
        build_model(tiny_spec("asae", 12, encoder={**ATTENTION, "embed_dim": 18}, decoder=STRUCTURAL, heads=4))
    with pytest.raises(SpecError, match=r"^model.encoder.kind: model 'sae' supports encoder kinds: conv"):
        build_model(tiny_spec("sae", 4, encoder=ATTENTION))


def test_attention_png_draws_one_row_per_image(tmp_path):
    model = build_model(tiny_spec("asae", 4, encoder=ATTENTION, decoder=STRUCTURAL, heads=4))
    path = attention_png(model, torch.rand(3, 1, 16, 16), tmp_path / "attn.png")
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        # torchvision grid: 5 tiles (image + 4 heads) of 16 px with 2 px padding, 3 rows
        assert img.size == (5 * 18 + 2, 3 * 18 + 2)
    assert model.training  # restored


# ------------------------------------------------------------------------------------------------ specs
@pytest.mark.parametrize("name", ["adaae12", "vlae12", "asae4", "asae6", "asae12"])
def test_paper_specs_have_about_a_million_parameters(name):
    # 001 A.2.1: "approximately 1-1.2M trainable parameters"; 000 sec 3: "about 1M"
    spec = load_spec(f"specs/{name}.yaml", check=False)

    class RGB:  # the paper's models see 3-channel 64x64 images
        channels, true_graph = 3, None

    model = build_model(spec, dataset=RGB())
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0.9e6 <= n <= 1.3e6, n  # the bounds of test_structural.py (sae12 itself has 1.19M)
    if name.startswith("asae"):
        assert model.encoder.grid == (32, 32)  # 4x4 patches, stride 2 over 64x64
        assert model.heads == int(name[4:]) and model.latent_dim == 12


def test_asae_run_report_draws_the_attention_maps(tmp_path):
    """An ASAE run's report has attention.png (000 Fig. 7) next to the other grids."""
    from causalrep.experiment import Experiment
    from conftest import tiny_data

    from causalrep.spec import load_spec

    data = tiny_data("asae", 4, heads=2)
    data["model"]["encoder"] = {"kind": "attention", "patch": 4, "stride": 2, "embed_dim": 16, "hidden": [16],
                                "head_hidden": [8]}
    data["model"]["decoder"] = {"kind": "structural", "blocks": 3, "channels": 8, "groups": 4, "mechanism_hidden": [8]}
    exp = Experiment(load_spec(data=data), out=tmp_path, progress=False)
    exp.run()
    assert "![attention](attention.png)" in (exp.run_dir / "report.md").read_text()
    import numpy as np
    from PIL import Image

    from causalrep.models.asae import attention_grid

    with Image.open(exp.run_dir / "attention.png") as img:
        png = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).float()  # (3, H, W), 0..255
    # write_report draws the first n_images = 8 validation images: 8 rows of 1 + heads = 3 tiles, 16 px + 2 pad
    x = exp.dataset.images_at(exp.split.val[:8])
    assert x.shape[0] == 8 and png.shape == (3, 8 * 18 + 2, 3 * 18 + 2)

    def tile(r: int, c: int) -> torch.Tensor:
        return png[:, 2 + 18 * r: 18 + 18 * r, 2 + 18 * c: 18 + 18 * c]

    q = lambda t: t.mul(255).add(0.5).clamp(0, 255).floor()  # save_image's 8-bit quantisation
    maps = exp.model.eval().attention_maps(x)  # (8, 2, gh, gw)
    assert torch.allclose(maps.flatten(2).sum(-1), torch.ones(8, 2), atol=1e-5)  # each map sums to 1
    for r in range(8):
        assert torch.equal(tile(r, 0), q(x[r]).expand(3, -1, -1))  # column 1: the validation image itself
        for h in range(2):
            t = tile(r, 1 + h)
            # 000 Fig. 7's colouring: this image's map in red, the batch mean in green, each scaled to its
            # maximum (so each reaches 255 somewhere), nothing in blue; the green is the same on every row
            assert t[0].max() == 255 and t[1].max() == 255 and t[2].max() == 0
            assert torch.equal(t[1], tile(0, 1 + h)[1])
            # and the red is full where this image's map peaks: the argmax patch (i, j) of the gh x gw grid,
            # which nearest upsampling to 16 px (source = floor(y * gh / 16)) shows at y = ceil(16 i / gh)
            gh, gw = maps.shape[-2:]
            i, j = divmod(int(maps[r, h].argmax()), gw)
            assert t[0, math.ceil(16 * i / gh), math.ceil(16 * j / gw)] == 255
    # the whole picture is the final model's attention_grid of those images, bit for bit after quantisation
    assert torch.equal(png, q(attention_grid(exp.model, x)))
