"""The baselines' divergence estimators against numbers from outside the code: hand sums, closed forms,
independent Monte-Carlo in numpy (WAE-MMD, beta-TC-VAE, FactorVAE, Ladder VAE)."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from causalrep.build import build_model, train_split_size
from causalrep.models.factorvae import permute_dims
from causalrep.models.laddervae import default_layer_dims, warmup_beta
from causalrep.nn.divergences import (kl_gaussians, kl_standard_normal, log_importance_weights, mmd_imq,
                                      precision_weighted, tc_decomposition, total_correlation)

from conftest import tiny_spec


# ------------------------------------------------------------------------------------------ WAE-MMD
def test_mmd_of_a_sample_with_itself_matches_the_hand_sum():
    # same set on both sides: the two within-terms are (S - n) / (n(n-1)), the cross term 2 S / n^2, with
    # S = sum of all k(x_i, x_j) (diagonal k = 1), so MMD^2_u(x, x) = -2 (1 - S/n^2) / (n - 1), slightly < 0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3))
    c = 2 * 3 * 1.0
    s = sum(c / (c + float(np.sum((x[i] - x[j]) ** 2))) for i in range(7) for j in range(7))  # double loop
    expected = -2 * (1 - s / 49) / 6
    got = float(mmd_imq(torch.tensor(x), torch.tensor(x), c))
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert -2 / 6 < got < 0


def _population_mmd2(shift: np.ndarray, c: float, n: int = 2_000_000) -> float:
    """MMD^2 between N(0, I) and N(m, I) for the IMQ kernel by numpy Monte-Carlo on differences:
    x - x' ~ N(0, 2I) and x - y ~ N(-m, 2I), so MMD^2 = 2 E[k(a)] - 2 E[k(a - m)] with a ~ N(0, 2I)."""
    a = np.random.default_rng(123).normal(scale=math.sqrt(2.0), size=(n, len(shift)))
    k0 = c / (c + np.sum(a ** 2, axis=1))
    km = c / (c + np.sum((a - shift) ** 2, axis=1))
    return float(2 * k0.mean() - 2 * km.mean())


def test_mmd_of_two_gaussians_matches_the_population_value_and_is_unbiased():
    d = 4
    c = 2.0 * d  # WAE's C = 2 * D * sigma^2 for the N(0, I) prior
    shift = np.array([1.0, 0.5, 0.0, 0.0])
    pop = _population_mmd2(shift, c)
    assert pop > 0.02  # far from 0: the test below can tell a mean shift from none
    g = torch.Generator().manual_seed(0)
    m = torch.tensor(shift, dtype=torch.float32)
    # one large sample: close to the population value
    big = float(mmd_imq(torch.randn(1500, d, generator=g), torch.randn(1500, d, generator=g) + m, c))
    assert big == pytest.approx(pop, rel=0.1)
    # many tiny samples (n = 8): the unbiased estimator's mean stays on the population value, where the
    # biased V-statistic (diagonals kept) sits ~ 2 (1 - E k) / n higher (about 0.12 here)
    vals = [float(mmd_imq(torch.randn(8, d, generator=g), torch.randn(8, d, generator=g) + m, c))
            for _ in range(1500)]
    assert np.mean(vals) == pytest.approx(pop, abs=0.012)


def test_mmd_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd_imq(torch.zeros(1, 3), torch.zeros(5, 3), 6.0)


# ------------------------------------------------------------------------------------------ beta-TC-VAE
def _gaussian_codes(corr: np.ndarray, post_var: float, m: int, seed: int = 0):
    """Posterior means mu_j ~ N(0, corr - post_var I), posteriors N(mu_j, post_var I), z_j ~ q(z | x_j):
    the aggregate posterior of the population is exactly N(0, corr), whose TC is -1/2 log det(corr)."""
    rng = np.random.default_rng(seed)
    d = corr.shape[0]
    mu = rng.multivariate_normal(np.zeros(d), corr - post_var * np.eye(d), size=m)
    z = mu + math.sqrt(post_var) * rng.normal(size=(m, d))
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return t(z), t(mu), t(np.full((m, d), math.log(post_var)))


@pytest.mark.parametrize("corr", [
    np.eye(3),
    np.array([[1.0, 0.6], [0.6, 1.0]]),
    np.array([[1.0, 0.5, 0.3], [0.5, 1.0, 0.4], [0.3, 0.4, 1.0]]),
], ids=["independent", "rho0.6", "3d"])
def test_tc_matches_the_gaussian_closed_form(corr):
    m = 2000
    z, mu, logvar = _gaussian_codes(corr, 0.3, m)
    closed = -0.5 * math.log(np.linalg.det(corr))  # 0, 0.223, 0.239
    # dataset_size = batch: the stratified weights are all 1/M and q(z) is the batch's exact mixture density
    tc = float(total_correlation(z, mu, logvar, dataset_size=m, estimator="mss"))
    assert tc == pytest.approx(closed, abs=0.04)
    # MWS weighs every term 1/(N M) = 1/M^2 here: rows sum to 1/N, so its TC is the same plus (D - 1) log N
    mws = float(total_correlation(z, mu, logvar, dataset_size=m, estimator="mws"))
    assert mws == pytest.approx(tc + (corr.shape[0] - 1) * math.log(m), abs=1e-3)


def test_tc_of_duplicated_latents_is_clearly_positive():
    z, mu, logvar = _gaussian_codes(np.eye(1), 0.3, 1000)
    dup = lambda a: torch.cat([a, a], dim=1)  # noqa: E731  (z2 = z1, same posteriors)
    tc = float(total_correlation(dup(z), dup(mu), dup(logvar), dataset_size=1000, estimator="mss"))
    indep = float(total_correlation(*_gaussian_codes(np.eye(2), 0.3, 1000), dataset_size=1000, estimator="mss"))
    assert tc > 0.5 and tc > indep + 0.5


def test_decomposition_sums_to_the_monte_carlo_kl_and_weights_are_normalised():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(16, 5, generator=g), 0.3 * torch.randn(16, 5, generator=g)
    z = mu + torch.randn(16, 5, generator=g) * (0.5 * logvar).exp()
    # Chen et al. eq. 2: MI + TC + dimension-wise KL = E[log q(z|x) - log p(z)], whatever estimates q(z)
    normal = torch.distributions.Normal
    mc_kl = (normal(mu, (0.5 * logvar).exp()).log_prob(z) - normal(0.0, 1.0).log_prob(z)).sum(1).mean()
    for estimator in ("mws", "mss"):
        mi, tc, dwkl = tc_decomposition(z, mu, logvar, dataset_size=10_000, estimator=estimator)
        assert float(mi + tc + dwkl) == pytest.approx(float(mc_kl), abs=1e-4)
    w = log_importance_weights(16, 10_000, "mss").exp()
    assert torch.allclose(w.sum(1), torch.ones(16))
    assert float(w[0, 0]) == pytest.approx(1e-4) and float(w[0, 1]) == pytest.approx(9999 / (10_000 * 15))
    w = log_importance_weights(16, 10_000, "mws").exp()  # Chen et al. sec 4.1: 1/(N M) everywhere
    assert torch.allclose(w, torch.full((16, 16), 1 / (10_000 * 16)))


def _tc_grad(estimator: str, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    mu = mu.clone().requires_grad_(True)
    z = mu + eps * (0.5 * logvar).exp()
    total_correlation(z, mu, logvar, dataset_size=480_000, estimator=estimator).backward()
    return mu.grad


def test_mws_and_mss_gradients_differ_on_a_batch_with_an_informative_and_a_collapsed_latent():
    # dim 0 informative (means spread over +-3, posteriors narrow: the self term dominates each row), dim 1
    # collapsed (mean 0, unit variance: every term alike). A constant offset between the estimators would
    # give equal gradients; the relative weight of the self term differs ((M-1)/(N-1) vs 1), so they do not.
    g = torch.Generator().manual_seed(0)
    m = 64
    mu = torch.stack([torch.linspace(-3, 3, m), torch.zeros(m)], 1)
    logvar = torch.stack([torch.full((m,), math.log(0.05 ** 2)), torch.zeros(m)], 1)
    eps = torch.randn(m, 2, generator=g)
    a, b = _tc_grad("mws", mu, logvar, eps), _tc_grad("mss", mu, logvar, eps)
    assert not torch.allclose(a, b, rtol=0.05, atol=1e-6)
    with pytest.raises(ValueError, match="unknown TC estimator 'iwae'"):
        log_importance_weights(4, 10, "iwae")


def test_btcvae_dataset_size_defaults_to_the_train_split():
    spec = tiny_spec("btcvae")
    assert build_model(spec).dataset_size == train_split_size(spec) == round(0.7 * 3 * 6 * 40 * 32 * 32)
    assert build_model(tiny_spec("btcvae", dataset_size=123)).dataset_size == 123
    assert build_model(spec).estimator == "mws"  # disentanglement_lib's, the compared papers' setting
    assert build_model(tiny_spec("btcvae", estimator="mss")).estimator == "mss"
    filtered = tiny_spec("btcvae", overrides=["data.exclude={shape: [0]}"])
    assert train_split_size(filtered) == round(0.7 * 2 * 6 * 40 * 32 * 32)


# ------------------------------------------------------------------------------------------ FactorVAE
def test_permute_dims_keeps_every_marginal_and_breaks_the_pairing():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 5, generator=g)
    p = permute_dims(z, generator=g)
    assert torch.equal(p.sort(dim=0).values, z.sort(dim=0).values)  # each column's multiset, exactly
    kept = sum(bool((z == row).all(1).any()) for row in p)  # rows that are still some original row
    assert kept <= 3
    assert not torch.equal(p[:, 0].argsort(), p[:, 1].argsort())  # columns permuted independently


def test_factorvae_discriminator_is_its_own_group():
    model = build_model(tiny_spec("factorvae", discriminator_hidden=[16, 16]))
    assert set(model.aux_parameter_groups()) == {"discriminator"}
    opts = model.aux_optimizer_options("discriminator", lr=5e-4, betas=(0.9, 0.999))
    assert opts == {"lr": 1e-4, "betas": (0.5, 0.9)}  # Kim & Mnih's appendix
    out = model(torch.rand(6, 1, 16, 16))
    out.aux["discriminator"].backward()  # trained on detached codes: no gradient reaches the VAE
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.discriminator.parameters())
    assert float(out.aux["discriminator"].detach()) == pytest.approx(math.log(2), abs=0.3)  # untrained: near chance


# ------------------------------------------------------------------------------------------ Ladder VAE
def test_precision_weighted_merge_hand_case():
    # 1/(1/1 + 1/3) = 0.75; (1 * 1 + 3 * 1/3) * 0.75 = 1.5
    mu, var = precision_weighted(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(3.0), torch.tensor(3.0))
    assert float(var) == pytest.approx(0.75) and float(mu) == pytest.approx(1.5)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(10, generator=g), torch.randn(10, generator=g)
    vq, vp = torch.rand(10, generator=g) + 0.1, torch.rand(10, generator=g) + 0.1
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mq, vq.sqrt()),
                                            torch.distributions.Normal(mp, vp.sqrt()))
    assert torch.allclose(kl_gaussians(mq, vq, mp, vp), ref, atol=1e-6)


def test_warmup_schedule():
    assert [float(warmup_beta(s, 1000)) for s in (0, 500, 1000, 5000)] == [0.0, 0.5, 1.0, 1.0]
    assert float(warmup_beta(0, 0)) == 1.0
    assert default_layer_dims(12) == (4, 4, 4) and default_layer_dims(4) == (2, 1, 1)


def test_laddervae_counts_its_training_steps_and_resumes_the_schedule():
    spec = tiny_spec("laddervae", warmup_steps=4)
    model = build_model(spec)
    x = torch.rand(4, 1, 16, 16)
    betas = [float(model(x).beta) for _ in range(3)]
    assert betas == [0.0, 0.25, 0.5]
    model.eval()
    assert float(model(x).beta) == 0.75 and int(model.kl_step) == 3  # eval forwards do not count
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = build_model(spec)
    other.load_state_dict(torch.load(buf, weights_only=True))
    other.train()
    assert [float(other(x).beta) for _ in range(2)] == [0.75, 1.0]


def test_laddervae_prior_samples_follow_the_hierarchy():
    model = build_model(tiny_spec("laddervae", latent_dim=6, layer_dims=[2, 2, 2]))
    u = model.sample_latents(5, "prior", torch.Generator().manual_seed(0))
    eps = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(u[:, 4:], eps[:, 4:])  # the top layer is N(0, I)
    assert not torch.allclose(u[:, :4], eps[:, :4])  # lower layers: z_i = mu_p + sigma_p * eps_i
    with pytest.raises(Exception, match="layer_dims"):
        build_model(tiny_spec("laddervae", latent_dim=6, layer_dims=[2, 2]))


def test_kl_standard_normal_by_hand_and_equal_to_the_general_gaussian_kl():
    """1/2 sum_k (mu^2 + sigma^2 - log sigma^2 - 1), batch mean: row 1 (mu 1, 0; sigma^2 1, 4) gives
    1/2 (1 + (4 - log 4 - 1)) = 2 - log 2; row 2 (zeros, sigma^2 = 1) gives 0; the mean is 1 - log(2) / 2."""
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    assert float(kl_standard_normal(mu, logvar)) == pytest.approx(1 - math.log(2) / 2, rel=1e-6)
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    general = kl_gaussians(mu, logvar.exp(), torch.zeros_like(mu), torch.ones_like(mu)).sum(1).mean()
    assert float(kl_standard_normal(mu, logvar)) == pytest.approx(float(general), rel=1e-5)
