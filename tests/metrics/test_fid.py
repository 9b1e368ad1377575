"""FID: the Fréchet distance on closed-form Gaussian cases, the feature registry, local Inception weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from causalrep.errors import CausalrepError
from causalrep.metrics.fid import (FEATURES, WEIGHTS_ENV, RandomConvFeatures, activation_stats, feature_net,
                                   fid_score, frechet_distance, resolve_features)
from causalrep.metrics.registry import METRICS


def rotated(diag: np.ndarray, seed: int = 0) -> np.ndarray:
    """R diag Rᵀ for a fixed random rotation R: a full (non-diagonal) covariance with known spectrum."""
    r, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(diag), len(diag))))
    return r @ np.diag(diag) @ r.T


# -- frechet_distance: golden cases ---------------------------------------------------------------------
def test_equal_covariances_leave_only_the_mean_term():
    # N(0, I) vs N(mu, I): the trace term Tr(I + I - 2 (I I)^{1/2}) = 0, so FD = |mu|²
    mu = np.array([3.0, -4.0, 0.5, 0.0, 1.0])
    assert frechet_distance(np.zeros(5), np.eye(5), mu, np.eye(5)) == pytest.approx(mu @ mu, rel=1e-12)
    s = rotated(np.array([4.0, 1.0, 0.25, 2.0, 9.0]))  # any shared covariance, not only I
    assert frechet_distance(np.zeros(5), s, mu, s) == pytest.approx(mu @ mu, rel=1e-9)


def test_commuting_covariances_hand_formula():
    # diag(a) and diag(b) commute: Tr(A + B - 2 (AB)^{1/2}) = Σ a + b - 2 sqrt(ab) = Σ (√a - √b)²
    a = np.array([1.0, 4.0, 9.0, 0.25])
    b = np.array([4.0, 1.0, 9.0, 1.0])
    expected = float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum())  # 1 + 1 + 0 + 0.25 = 2.25
    assert expected == 2.25
    assert frechet_distance(np.zeros(4), np.diag(a), np.zeros(4), np.diag(b)) == pytest.approx(2.25, rel=1e-12)
    # the same spectra under one shared rotation still commute: same value through the full-matrix path
    assert frechet_distance(np.zeros(4), rotated(a), np.zeros(4), rotated(b)) == pytest.approx(2.25, rel=1e-9)


def test_singular_covariances():
    # rank-1 covariances (fewer samples than dims): diag(a, 0, 0) vs diag(b, 0, 0) -> (√a - √b)²
    s1, s2 = np.diag([4.0, 0.0, 0.0]), np.diag([1.0, 0.0, 0.0])
    assert frechet_distance(np.zeros(3), s1, np.ones(3), s2) == pytest.approx(3.0 + 1.0, rel=1e-12)
    assert frechet_distance(np.zeros(3), np.zeros((3, 3)), np.zeros(3), s1) == pytest.approx(4.0)


def test_symmetric_and_nonnegative():
    rng = np.random.default_rng(1)
    for d, n in [(3, 50), (16, 8), (16, 200)]:  # (16, 8): singular sample covariances
        x, y = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)), rng.normal(size=(n, d)) * 2 + 1
        a = (x.mean(0), np.cov(x, rowvar=False))
        b = (y.mean(0), np.cov(y, rowvar=False))
        ab, ba = frechet_distance(*a, *b), frechet_distance(*b, *a)
        assert ab == pytest.approx(ba, rel=1e-8)
        assert ab > 0
        assert 0 <= frechet_distance(*a, *a) < 1e-9 * np.trace(a[1])


def test_sampled_features_match_the_closed_form():
    # x ~ N(0, S1), y ~ N(mu, S2) with commuting S1, S2: FD = |mu|² + Σ(√a - √b)² = 1.3125 + 0.525... .
    # Tolerance: the plug-in estimate's error is dominated by the mean term, whose sd is
    # 2 sqrt(muᵀ(S1 + S2)mu / n) ≈ 0.0067 at n = 1e5 (0.0072 measured over 40 seeds); its bias,
    # (Tr S1 + Tr S2)/n plus an O(d²/n) covariance term, is ≈ 1e-4. 0.05 is > 6 sd + bias.
    a, b = np.array([1.0, 0.5, 2.0, 0.25]), np.array([0.5, 1.5, 1.0, 0.25])
    mu = np.array([1.0, -0.5, 0.25, 0.0])
    s1, s2 = rotated(a), rotated(b)
    closed = float(mu @ mu + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    rng = np.random.default_rng(2)
    n = 100_000
    x = rng.multivariate_normal(np.zeros(4), s1, size=n)
    y = rng.multivariate_normal(mu, s2, size=n)
    est = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert est == pytest.approx(closed, abs=0.05)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# -- fid_score on images ---------------------------------------------------------------------------------
def blobs(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) smooth grey images in [0, 1]: one Gaussian blob each at a random place."""
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g) * size
    r = torch.arange(size).float()
    d2 = (r[None, :, None] - c[:, 0, None, None]) ** 2 + (r[None, None, :] - c[:, 1, None, None]) ** 2
    return torch.exp(-d2 / 8.0)[:, None]


def test_fid_score_of_a_set_with_itself_is_zero_and_noise_is_far(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    x = blobs(32)
    same = fid_score(x, x, features="auto", batch_size=16)
    assert same["fid_features"] == "random_conv"  # auto without Inception weights
    assert same["fid"] == pytest.approx(0.0, abs=1e-9)
    g = torch.Generator().manual_seed(1)
    noisy = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    far = fid_score(x, noisy, features="random_conv", batch_size=16)
    near = fid_score(x, blobs(32, seed=1), features="random_conv", batch_size=16)  # same distribution, new draw
    assert far["fid"] > 0.1 and far["fid"] > 5 * near["fid"]


def test_grey_and_rgb_agree():
    x = blobs(8)
    net = feature_net("random_conv")
    with torch.no_grad():
        assert torch.equal(net(x), net(x.expand(-1, 3, -1, -1)))


def test_iterables_of_batches_equal_a_tensor():
    x, y = blobs(24), blobs(24, seed=3)
    whole = fid_score(x, y, features="random_conv", batch_size=5)["fid"]
    streamed = fid_score(list(x.split(7)), iter(y.split(4)), features="random_conv")["fid"]
    assert streamed == pytest.approx(whole, rel=1e-6)


def test_random_conv_is_bit_identical_across_constructions():
    a, b = RandomConvFeatures(), RandomConvFeatures()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = blobs(6)
    with torch.no_grad():
        fa, fb = a(x), b(x)
    assert fa.shape == (6, 256) and torch.equal(fa, fb)


# -- the feature registry and the Inception weights -----------------------------------------------------------
def test_registry_and_auto(monkeypatch, tmp_path):
    assert FEATURES.names() == ["inception", "random_conv"]
    with pytest.raises(KeyError, match="inception, random_conv"):
        resolve_features("vgg")
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert resolve_features("auto") == "random_conv"
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "w.pt"))
    assert resolve_features("auto") == "inception"
    assert "fid" in METRICS


def test_inception_without_weights_names_the_env_var_and_path(monkeypatch, tmp_path):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(CausalrepError, match=WEIGHTS_ENV):
        fid_score(blobs(4), blobs(4), features="inception")
    missing = tmp_path / "nowhere" / "inception_v3.pth"
    monkeypatch.setenv(WEIGHTS_ENV, str(missing))
    with pytest.raises(CausalrepError, match=f"{missing}.*{WEIGHTS_ENV}|{WEIGHTS_ENV}.*{missing}") as e:
        feature_net("inception")
    assert "does not exist" in str(e.value)
    with pytest.raises(CausalrepError, match="argument weights"):
        feature_net("inception", weights=tmp_path / "also_missing.pt")


def test_inception_rejects_a_wrong_file(tmp_path):
    path = tmp_path / "not_inception.pt"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(CausalrepError, match="not a torchvision inception_v3 state_dict"):
        feature_net("inception", weights=path)


@pytest.mark.slow
def test_inception_loads_local_weights_end_to_end(monkeypatch, tmp_path):
    # a randomly initialised state_dict stands in for the real file: what is tested is that the
    # local file is what gets loaded, and that 2048-d pool3 features reach the Fréchet distance
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    ref = inception_v3(weights=None, aux_logits=True, init_weights=False)
    with torch.no_grad():  # He-normal convs (fast, unlike init_weights=True) so features are not ~0
        for p in ref.parameters():
            if p.dim() == 4:
                torch.nn.init.kaiming_normal_(p)
    path = tmp_path / "inception_v3_random.pth"
    torch.save(ref.state_dict(), path)
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    net = feature_net("auto")
    assert net.name == "inception"
    loaded = net.net.state_dict()
    for k, v in ref.state_dict().items():
        if not k.startswith("fc."):  # fc is replaced by Identity to expose pool3
            assert torch.equal(loaded[k], v), k
    x, y = blobs(2, size=16), 1 - blobs(2, size=16, seed=5).expand(-1, 3, -1, -1)
    mu, sigma, count = activation_stats(x, net)
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048) and count == 2 and np.isfinite(sigma).all()
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9 * max(np.trace(sigma), 1e-30))
    diff = fid_score(x, y, features="inception", batch_size=2)
    assert diff["fid_features"] == "inception"
    assert np.isfinite(diff["fid"]) and diff["fid"] > 0
