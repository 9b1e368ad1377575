"""Sampling: hybrid (001 sec 2.3) and structured hybrid (000 sec 4) on hand-made latent banks, images, FIDs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from causalrep.build import build_dataset, build_model
from causalrep.data.base import Split
from causalrep.generate import (dependent_groups, hybrid_latents, mutual_information, prior_latents, sample_images,
                                sample_latents, structured_hybrid_latents, traversal_grid)
from causalrep.metrics.fid import WEIGHTS_ENV, fid_score, sample_fids
from causalrep.metrics.registry import METRICS

from conftest import tiny_spec


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rows_of(samples: torch.Tensor, bank: torch.Tensor, dims: slice) -> torch.Tensor:
    """(n,) index of the stored latent whose `dims` each sample's `dims` equal exactly (-1 if none)."""
    eq = (samples[:, None, dims] == bank[None, :, dims]).all(-1)  # (n, N)
    return torch.where(eq.any(1), eq.float().argmax(1), torch.full((len(samples),), -1))


@pytest.fixture
def sae2():
    """SAE with a 2-node chain, 2 dims per node, and a bank of 64 known latents: row j is
    (j, -j | 1000 + j, -(1000 + j)), so a sample's source row per node can be read off."""
    model = build_model(tiny_spec("sae", 4, {"kind": "chain", "nodes": 2}, overrides=["evaluate.hybrid_latents=64"]))
    j = torch.arange(64.0)
    model.store_latents(torch.stack([j, -j, 1000 + j, -(1000 + j)], 1))
    return model


@pytest.fixture
def hue_model():
    """000 sec 4's case: an SAE with 1-dim nodes (like its 12-SAE) whose stored latents embed one
    periodic hue in TWO nodes, (u1, u2) = (cos θ, sin θ), while u3, u4 are independent."""
    model = build_model(tiny_spec("sae", 4, {"kind": "chain", "nodes": 4}, overrides=["evaluate.hybrid_latents=128"]))
    rng = np.random.default_rng(0)
    theta = rng.uniform(0, 2 * np.pi, 128)
    bank = np.stack([np.cos(theta), np.sin(theta), rng.normal(size=128), rng.uniform(-1, 1, 128)], 1)
    model.store_latents(torch.tensor(bank, dtype=torch.float32))
    return model


# -- hybrid ---------------------------------------------------------------------------------------------
def test_hybrid_keeps_node_dims_together_and_breaks_across_nodes(sae2):
    bank = sae2.latent_bank
    u = hybrid_latents(sae2, 4000, gen())
    assert u.shape == (4000, 4)
    r1, r2 = rows_of(u, bank, slice(0, 2)), rows_of(u, bank, slice(2, 4))
    assert (r1 >= 0).all() and (r2 >= 0).all()  # each node's slice is one whole stored row's slice
    assert torch.equal(u[:, 1], -u[:, 0])  # within-node correlation (-1) kept exactly
    # across nodes the rows are independent: same row w.p. 1/N = 1/64; corr(dim0, dim2) ≈ 0 (sd 1/sqrt(4000))
    assert (r1 == r2).float().mean() < 0.05
    assert abs(float(torch.corrcoef(torch.stack([u[:, 0], u[:, 2]]))[0, 1])) < 0.1
    assert r1.unique().numel() == r2.unique().numel() == 64  # every stored latent is used


def test_baseline_hybrid_treats_each_dim_as_a_variable():
    model = build_model(tiny_spec("ae", 4, overrides=["evaluate.hybrid_latents=64"]))
    j = torch.arange(64.0)
    model.store_latents(torch.stack([j, 100 + j, 200 + j, 300 + j], 1))
    u = hybrid_latents(model, 2000, gen())
    same = (u[:, 1] - 100 == u[:, 0]).float().mean()
    assert same < 0.05  # dims 0 and 1 come from different stored latents (001 sec 3.1)


# -- structured ---------------------------------------------------------------------------------------------
def test_structured_samples_a_dependent_pair_jointly(hue_model):
    bank = hue_model.latent_bank
    assert dependent_groups(hue_model) == [["u1", "u2"]]
    u = structured_hybrid_latents(hue_model, 3000, gen())
    r12 = rows_of(u, bank, slice(0, 2))
    assert (r12 >= 0).all()  # (u1, u2) is always one stored (cos θ, sin θ): a real hue
    assert torch.allclose(u[:, 0] ** 2 + u[:, 1] ** 2, torch.ones(3000), atol=1e-5)
    r3, r4 = rows_of(u, bank, slice(2, 3)), rows_of(u, bank, slice(3, 4))
    assert (r12 == r3).float().mean() < 0.03 and (r3 == r4).float().mean() < 0.03  # others independent (1/128)
    # plain hybrid mixes the pair's coordinates: off the circle (000: "mixing colors")
    h = hybrid_latents(hue_model, 3000, gen())
    off = (h[:, 0] ** 2 + h[:, 1] ** 2 - 1).abs() > 1e-3
    assert off.float().mean() > 0.9


def test_structured_with_explicit_groups_equals_detected_ones(hue_model):
    auto = structured_hybrid_latents(hue_model, 500, gen(3))
    explicit = structured_hybrid_latents(hue_model, 500, gen(3), groups=[["u1", "u2"]])
    assert torch.equal(auto, explicit)
    # a user-given grouping that 000 did by inspection: u3 with u4 too
    both = structured_hybrid_latents(hue_model, 500, gen(3), groups=[["u1", "u2"], ["u3", "u4"]])
    assert torch.equal(rows_of(both, hue_model.latent_bank, slice(2, 4)) >= 0, torch.ones(500, dtype=torch.bool))


def test_structured_without_dependence_is_hybrid(sae2):
    assert dependent_groups(sae2) == [["u1", "u2"]]  # row j's u2 is a function of its u1: dependent
    sae2.store_latents(torch.randn(64, 4, generator=gen(2)))  # now independent nodes
    assert dependent_groups(sae2) == []
    assert torch.equal(structured_hybrid_latents(sae2, 300, gen(5)), hybrid_latents(sae2, 300, gen(5)))


def test_structured_group_errors(hue_model):
    with pytest.raises(KeyError, match="u1, u2, u3, u4"):
        structured_hybrid_latents(hue_model, 4, gen(), groups=[["u1", "nope"]])
    with pytest.raises(ValueError, match="'u2' is in groups"):
        structured_hybrid_latents(hue_model, 4, gen(), groups=[["u1", "u2"], ["u2", "u3"]])
    with pytest.raises(ValueError, match="list of node names"):
        structured_hybrid_latents(hue_model, 4, gen(), groups=["u1"])


def test_sampling_needs_stored_latents():
    model = build_model(tiny_spec("sae", 4, {"kind": "chain", "nodes": 2}))
    for method in ("hybrid", "structured"):
        with pytest.raises(RuntimeError, match="store_latents"):
            sample_latents(model, 4, method, gen())


def test_mutual_information_golden():
    # Gaussian pair with correlation rho: I = -1/2 log(1 - rho²) = 0.511 nats at rho = 0.8
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    y = 0.8 * x + 0.6 * rng.normal(size=2000)
    assert mutual_information(x, y) == pytest.approx(-0.5 * math.log(1 - 0.64), abs=0.05)
    assert abs(mutual_information(x, rng.normal(size=2000))) < 0.05


# -- determinism, shapes, images ---------------------------------------------------------------------------------
def expected_latents(method: str, n: int, seed: int) -> torch.Tensor:
    """sae2's latents for `method` rebuilt by hand from the documented draws on gen(seed), bank row j being
    (j, -j | 1000 + j, -(1000 + j)): prior N(0, I) (one randn); hybrid (001 sec 2.3) one stored-row index
    j ~ U{0..63} per node in graph order, u1's dims from row j1, u2's from row j2; structured (000 sec 4)
    one index for the detected group {u1, u2}, i.e. a whole stored row."""
    g = gen(seed)
    if method == "prior":
        return torch.randn(n, 4, generator=g)
    j1 = torch.randint(0, 64, (n,), generator=g).float()
    j2 = torch.randint(0, 64, (n,), generator=g).float() if method == "hybrid" else j1
    return torch.stack([j1, -j1, 1000 + j2, -(1000 + j2)], 1)


@pytest.mark.parametrize("method", ["prior", "hybrid", "structured"])
def test_latents_are_deterministic_under_a_seeded_generator(sae2, method):
    a = sample_latents(sae2, 50, method, gen(7))
    assert torch.equal(a, expected_latents(method, 50, 7))
    assert torch.equal(sample_latents(sae2, 50, method, gen(8)), expected_latents(method, 50, 8))
    if method != "prior":  # every coordinate is a stored value, and (hybrid) nodes come from different rows
        r1, r2 = rows_of(a, sae2.latent_bank, slice(0, 2)), rows_of(a, sae2.latent_bank, slice(2, 4))
        assert (r1 >= 0).all() and (r2 >= 0).all()
        assert torch.equal(r1 == r2, torch.ones(50, dtype=torch.bool)) == (method == "structured")


def test_prior_latents_are_standard_normal(sae2):
    u = prior_latents(sae2, 20000, gen())
    assert u.mean().abs() < 0.03 and (u.std() - 1).abs() < 0.03


def test_ladder_vae_prior_samples_come_from_its_hierarchical_prior():
    """Prior sampling and prior FID (sample_latents / sample_images / sample_fids) draw the Ladder VAE's own
    prior: z_L ~ N(0, I), z_i ~ N(mu_p(h_{i+1}), sigma_p^2) (003). With each lower layer's prior head set by
    hand to constants, mu_p = bias[:d] and sigma_p^2 = softplus(bias[d:]) + VAR_FLOOR, layer i's dims are
    N(mu_i, sigma_i^2) with mu_i, sigma_i known in closed form, where N(0, I) would give 0 and 1.
    Tolerances are 5 standard errors of n samples: sigma / sqrt(n) for a mean, sigma / sqrt(2 (n - 1)) for a
    standard deviation (normal data), and 1 / sqrt(n) for a correlation."""
    from causalrep.models.laddervae import VAR_FLOOR

    model = build_model(tiny_spec("laddervae", 6))
    assert model.layer_dims == (2, 2, 2)
    mus, pres = [3.0, -1.5], [0.0, 2.0]  # layer 1 and layer 2 (the top layer 3 has the N(0, I) prior)
    with torch.no_grad():
        for head, mu, pre in zip(model.p_heads, mus, pres):
            head.weight.zero_()
            d = head.out_features // 2
            head.bias[:d] = mu
            head.bias[d:] = pre
    n = 20000
    u = sample_latents(model, n, "prior", gen(3))
    assert u.shape == (n, 6)
    # (mean, std) per layer: layer i from its head, the top layer standard normal
    sigma = [math.sqrt(math.log1p(math.exp(pre)) + VAR_FLOOR) for pre in pres] + [1.0]  # 0.833, 1.458, 1
    mean = mus + [0.0]
    for i, sl in enumerate([slice(0, 2), slice(2, 4), slice(4, 6)]):
        m, sd = u[:, sl].double().mean(0), u[:, sl].double().std(0)
        assert torch.all((m - mean[i]).abs() < 5 * sigma[i] / math.sqrt(n)), (i, m)
        assert torch.all((sd - sigma[i]).abs() < 5 * sigma[i] / math.sqrt(2 * (n - 1))), (i, sd)
    # the heads ignore h, so the layers' draws are independent: every cross-layer correlation is ~0
    c = torch.corrcoef(u.double().T)
    off = ~torch.block_diag(*[torch.ones(2, 2, dtype=torch.bool)] * 3)
    assert c[off].abs().max() < 5 / math.sqrt(n)
    # each sample is exactly the affine map of the standard normal draws N(0, I) would return
    eps = prior_latents(build_model(tiny_spec("vae", 6)), n, gen(3))
    expected = eps * torch.tensor(sigma[0:1] * 2 + sigma[1:2] * 2 + [1.0, 1.0]) + torch.tensor(
        [3.0, 3.0, -1.5, -1.5, 0.0, 0.0])
    assert torch.allclose(u, expected, atol=1e-5)
    assert torch.equal(prior_latents(model, 50, gen(1)), model.sample_latents(50, "prior", gen(1)))


@pytest.mark.parametrize("method", ["prior", "hybrid", "structured"])
def test_sample_images_shapes_and_batching(sae2, method):
    a = sample_images(sae2, 10, method, gen(1), batch_size=4)
    assert a.shape == (10, 1, 16, 16) and a.device.type == "cpu"
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    b = sample_images(sae2, 10, method, gen(1), batch_size=10)
    assert torch.allclose(a, b, atol=1e-6)  # latents are drawn before batching
    assert sae2.training  # the decoder ran in eval mode and the mode was restored
    with torch.no_grad():  # the images are the eval-mode decoder's images of the hand-rebuilt latents
        decoded = sae2.eval().decode(expected_latents(method, 10, 1))
    sae2.train()
    assert torch.allclose(a, decoded, atol=1e-6)


def test_traversal_grid(sae2):
    x = torch.rand(2, 1, 16, 16, generator=gen(4))
    j = torch.arange(64.0)
    sae2.store_latents(torch.stack([j, -j, j, -j], 1) / 63)  # values in [-1, 1]: the decoder is not saturated
    sae2.eval()
    grid = traversal_grid(sae2, x, "u2", steps=3)
    assert grid.shape == (3, 2 * 18 + 2, 3 * 18 + 2)  # 2 rows x 3 columns of 16 px, padding 2
    # u2's range is its stored values' 5-95% quantiles: u2's first dim holds j / 63, j = 0..63, whose
    # q-quantile (linear interpolation between order statistics) is 63 q / 63 = q: 0.05 and 0.95; its second
    # dim holds the negatives. 3 steps sweep low, middle, high, so column k shows do(u2 := v_k) on x's latents
    values = [(0.05, -0.95), (0.5, -0.5), (0.95, -0.05)]
    with torch.no_grad():
        u = sae2.encode(x)
        for k, v in enumerate(values):
            tiles = sae2.decode(sae2.intervene(u, {"u2": torch.tensor(v)}))  # (2, 1, 16, 16)
            for r in range(2):
                tile = grid[:, 2 + 18 * r: 18 + 18 * r, 2 + 18 * k: 18 + 18 * k]
                assert torch.allclose(tile, tiles[r].expand(3, -1, -1), atol=1e-5), (r, k)
    border = torch.ones(grid.shape[1:], dtype=torch.bool)
    for r in range(2):
        for k in range(3):
            border[2 + 18 * r: 18 + 18 * r, 2 + 18 * k: 18 + 18 * k] = False
    assert torch.all(grid[:, border] == 0.5)  # make_grid's pad_value
    sae2.train()
    with pytest.raises(KeyError, match="u1, u2"):
        traversal_grid(sae2, x, "u9")


# -- FIDs ---------------------------------------------------------------------------------------------------
@pytest.fixture
def data():
    spec = tiny_spec("vae", 4)
    dataset = build_dataset(spec)
    return spec, dataset, Split(len(dataset), (0.7, 0.1, 0.2), 0)


def _bank_from_train(model, dataset, split):
    with torch.no_grad():
        model.store_latents(model.encode(dataset.images_at(split.train[:model.latent_bank.shape[0]])))


def test_sample_fids_keys_and_values(monkeypatch, data):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    spec, dataset, split = data
    vae = build_model(spec, dataset)
    _bank_from_train(vae, dataset, split)
    out = sample_fids(vae, dataset, split, 16, methods=("hybrid", "structured", "prior"), batch_size=16)
    assert set(out) == {"fid_recon_random_conv", "fid_hybrid_random_conv", "fid_structured_random_conv",
                        "fid_prior_random_conv", "fid_features"}
    assert out["fid_features"] == "random_conv"
    # each value is the FID (fid_score, the Frechet distance of the feature Gaussians) of the 16 held-out TEST
    # images against: their reconstructions, or 16 samples of that method from its own generator seeded 0
    vae.eval()
    real = dataset.images_at(split.test[:16])
    with torch.no_grad():
        others = {"recon": vae.reconstruct(real)}
        others.update({m: sample_images(vae, 16, m, gen(0)) for m in ("hybrid", "structured", "prior")})
    vae.train()
    for name, images in others.items():
        ref = fid_score(real, images, features="random_conv")["fid"]
        assert out[f"fid_{name}_random_conv"] == pytest.approx(ref, rel=1e-5, abs=1e-6), name
    # the Frechet distance of a set to itself is 0 (identical means and covariances); to another set, > 0
    assert fid_score(real, real, features="random_conv")["fid"] == pytest.approx(0.0, abs=1e-6)
    assert all(out[f"fid_{m}_random_conv"] > 0 for m in others)
    again = sample_fids(vae, dataset, split, 16, methods=("hybrid",), batch_size=8)
    assert again["fid_hybrid_random_conv"] == pytest.approx(out["fid_hybrid_random_conv"], rel=1e-6)


def test_fid_metric_skips_prior_without_one(monkeypatch, data):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    spec, dataset, split = data
    sae = build_model(tiny_spec("sae", 4, {"kind": "chain", "nodes": 2}), dataset)
    _bank_from_train(sae, dataset, split)
    out = METRICS.get("fid")(model=sae, dataset=dataset, split=split, n=16, loss="bce", device="cpu")
    assert "fid_prior_random_conv" not in out
    assert {"fid_recon_random_conv", "fid_hybrid_random_conv", "fid_structured_random_conv"} <= set(out)
    with pytest.raises(KeyError, match="hybrid, prior, structured"):
        sample_fids(sae, dataset, split, 8, methods=("hybird",))
