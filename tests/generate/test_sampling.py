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
from causalrep.metrics.fid import WEIGHTS_ENV, sample_fids
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
@pytest.mark.parametrize("method", ["prior", "hybrid", "structured"])
def test_latents_are_deterministic_under_a_seeded_generator(sae2, method):
    a = sample_latents(sae2, 50, method, gen(7))
    assert a.shape == (50, 4)
    assert torch.equal(a, sample_latents(sae2, 50, method, gen(7)))
    assert not torch.equal(a, sample_latents(sae2, 50, method, gen(8)))


def test_prior_latents_are_standard_normal(sae2):
    u = prior_latents(sae2, 20000, gen())
    assert u.mean().abs() < 0.03 and (u.std() - 1).abs() < 0.03


def test_ladder_vae_prior_samples_come_from_its_hierarchical_prior():
    """Prior sampling and prior FID (sample_latents / sample_images / sample_fids) draw the Ladder VAE's own
    prior: z_L ~ N(0, I), z_i ~ N(mu_p(h_{i+1}), sigma_p^2) (003). With the lower layers' prior heads set by
    hand to mu_p = 3 and sigma_p^2 = softplus(0) + floor = log 2 + floor, those dims have that mean and std,
    where N(0, I) would give 0 and 1."""
    from causalrep.models.laddervae import VAR_FLOOR

    model = build_model(tiny_spec("laddervae", 6))
    top = model.layer_dims[-1]
    with torch.no_grad():
        for head in model.p_heads:
            head.weight.zero_()
            d = head.out_features // 2
            head.bias[:d] = 3.0   # mu_p
            head.bias[d:] = 0.0   # sigma_p^2 = softplus(0) + VAR_FLOOR
    u = sample_latents(model, 20000, "prior", gen(3))
    lower, upper = u[:, :-top], u[:, -top:]
    assert lower.shape[1] == sum(model.layer_dims[:-1]) > 0
    assert torch.allclose(lower.mean(0), torch.full((lower.shape[1],), 3.0), atol=0.03)
    assert torch.allclose(lower.std(0), torch.full((lower.shape[1],), math.sqrt(math.log(2) + VAR_FLOOR)), atol=0.02)
    assert torch.allclose(upper.mean(0), torch.zeros(top), atol=0.03)
    assert torch.allclose(upper.std(0), torch.ones(top), atol=0.03)
    assert torch.equal(prior_latents(model, 50, gen(1)), model.sample_latents(50, "prior", gen(1)))


@pytest.mark.parametrize("method", ["prior", "hybrid", "structured"])
def test_sample_images_shapes_and_batching(sae2, method):
    a = sample_images(sae2, 10, method, gen(1), batch_size=4)
    assert a.shape == (10, 1, 16, 16) and a.device.type == "cpu"
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    b = sample_images(sae2, 10, method, gen(1), batch_size=10)
    assert torch.allclose(a, b, atol=1e-6)  # latents are drawn before batching
    assert sae2.training  # the decoder ran in eval mode and the mode was restored


def test_traversal_grid(sae2):
    x = torch.rand(2, 1, 16, 16)
    grid = traversal_grid(sae2, x, "u2", steps=3)
    assert grid.shape == (3, 2 * 18 + 2, 3 * 18 + 2)  # 2 rows x 3 columns of 16 px, padding 2
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
    assert all(np.isfinite(v) and v >= 0 for k, v in out.items() if k != "fid_features")
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
