"""Divergence estimators of the regularised baselines: WAE's MMD, beta-TC-VAE's TC, the Ladder VAE merge."""
from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------- WAE-MMD (Tolstikhin et al. 2018)
def imq_kernel(x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """Inverse multiquadric kernel k(x, y) = C / (C + ||x - y||^2): (n, D) x (m, D) -> (n, m).

    WAE sec 4 uses C = 2 * D * sigma_z^2 (sigma_z^2 the prior's variance); `scale` is C itself.
    """
    d2 = (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)  # exact squared distances (no cdist cancellation)
    return scale / (scale + d2)


def mmd_imq(x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """Unbiased estimate of MMD^2 between the samples x (n, D) and y (m, D) under the IMQ kernel.

    MMD^2_u = 1/(n(n-1)) sum_{i!=j} k(x_i, x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i, y_j) - 2/(nm) sum_{i,j} k(x_i, y_j)
    (Gretton et al. 2012, eq. 3; WAE-MMD's penalty, Tolstikhin et al. 2018 Algorithm 2). Being unbiased it
    can be slightly negative, e.g. mmd_imq(x, x) = -2 (1 - mean(K_xx)) / (n - 1) <= 0.
    """
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"mmd_imq: the unbiased estimator needs at least 2 samples per set, got {n} and {m}")
    x, y = x.float(), y.float()
    kxx, kyy, kxy = imq_kernel(x, x, scale), imq_kernel(y, y, scale), imq_kernel(x, y, scale)
    off_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    off_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return off_x + off_y - 2 * kxy.mean()


# ---------------------------------------------------------------- beta-TC-VAE (Chen et al. 2018)
def log_density_gaussian(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; mu, exp(logvar)) (broadcasting), e.g. (M, 1, D) x (1, M, D) -> (M, M, D)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


TC_ESTIMATORS = ("mws", "mss")


def log_importance_weights(batch: int, dataset_size: int, estimator: str = "mss", device=None) -> torch.Tensor:
    """(M, M) log weights w_ij of q(z_i) ~= sum_j w_ij q(z_i | x_j) for a minibatch of M from N images.

    mws (minibatch weighted sampling, Chen et al. 2018 sec 4.1 and the code disentanglement_lib trains
    with): every term weighs 1/(N M). Each row sums to 1/N, so log q(z) reads log N below an estimate whose
    weights sum to 1 and the TC (D - 1) log N above it (disentanglement_lib drops the constants: its TC is
    this one minus (D - 1) log(N M), the same gradient). Against MSS the difference is not a constant: MSS
    weighs the self term (M - 1) / (N - 1) of the others' weight, MWS the same as them, so where the self term
    dominates its row (an informative latent) the two estimates, and their gradients, differ.
    mss (stratified): z_i was drawn from its own image's posterior, which holds 1/N of q(z) = 1/N sum_n
    q(z | x_n): w_ii = 1/N; the other M - 1 images are a uniform sample of the remaining N - 1, so each
    stands for (N - 1)/(M - 1) of them: w_ij = (N - 1) / (N (M - 1)). Rows sum to 1 and the estimate of
    q(z_i) is unbiased. This is the stratification idea of Chen et al.'s minibatch stratified sampling
    (their appendix), with the self image as its own stratum; the authors' code lays its weights out
    differently.
    """
    if estimator not in TC_ESTIMATORS:
        raise ValueError(f"unknown TC estimator {estimator!r}; valid: {', '.join(TC_ESTIMATORS)}")
    n = float(dataset_size)
    if estimator == "mws":
        return torch.full((batch, batch), -math.log(n) - math.log(batch), device=device)
    if batch == 1:
        return torch.zeros(1, 1, device=device)
    off = math.log(n - 1) - math.log(n) - math.log(batch - 1) if n > 1 else -math.inf
    w = torch.full((batch, batch), off, device=device)
    w.fill_diagonal_(-math.log(n))
    return w


def tc_decomposition(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int,
                     estimator: str = "mws") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(MI, TC, dimension-wise KL) of q(z) estimated on a minibatch (Chen et al. 2018, sec 3 and 4.1).

    z, mu, logvar: (M, D) samples z_i ~ q(z | x_i) and their posteriors. KL(q(z|x) || p(z)) averaged over
    the data splits into index-code MI + TC + dimension-wise KL (Chen et al. eq. 2); their sum equals the
    Monte-Carlo estimate of the KL whatever estimates q(z). log q(z_i) and log q(z_ij) (marginal of dim j)
    are log sum_j w_ij q(z_i | x_j) with the weights of `log_importance_weights(estimator=...)`: "mws"
    (Chen et al.'s minibatch weighted sampling, disentanglement_lib's) or "mss" (stratified).
    """
    if z.dim() != 2 or mu.shape != z.shape or logvar.shape != z.shape:
        raise ValueError(f"expected z, mu, logvar of one shape (M, D); got {tuple(z.shape)}, {tuple(mu.shape)}, "
                         f"{tuple(logvar.shape)}")
    if dataset_size < 1:
        raise ValueError(f"dataset_size must be positive, got {dataset_size}")
    z, mu, logvar = z.float(), mu.float(), logvar.float()
    m = z.shape[0]
    log_qz_x = log_density_gaussian(z, mu, logvar).sum(1)  # (M,) log q(z_i | x_i)
    log_pz = log_density_gaussian(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)  # (M,) under N(0, I)
    mat = log_density_gaussian(z[:, None, :], mu[None, :, :], logvar[None, :, :])  # (M, M, D): q(z_id | x_j)
    logw = log_importance_weights(m, dataset_size, estimator, z.device)  # (M, M)
    log_qz = torch.logsumexp(logw + mat.sum(2), dim=1)  # (M,) log q(z_i)
    log_prod_qzj = torch.logsumexp(logw[:, :, None] + mat, dim=1).sum(1)  # (M,) sum_d log q(z_id)
    mi = (log_qz_x - log_qz).mean()
    tc = (log_qz - log_prod_qzj).mean()
    dwkl = (log_prod_qzj - log_pz).mean()
    return mi, tc, dwkl


def total_correlation(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int,
                      estimator: str = "mws") -> torch.Tensor:
    """TC = KL(q(z) || prod_d q(z_d)) on a minibatch (see tc_decomposition)."""
    return tc_decomposition(z, mu, logvar, dataset_size, estimator)[1]


# ---------------------------------------------------------------- Ladder VAE (Sønderby et al. 2016)
def precision_weighted(mu_q: torch.Tensor, var_q: torch.Tensor, mu_p: torch.Tensor,
                       var_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Ladder VAE's merge of the bottom-up Gaussian (mu_q, var_q) with the top-down one (mu_p, var_p).

    sigma^2 = 1 / (sigma_q^-2 + sigma_p^-2), mu = (mu_q sigma_q^-2 + mu_p sigma_p^-2) sigma^2 (003, the
    Ladder VAE slides' eqs. 23-24): the product of the two Gaussian densities, renormalised.
    Returns (mu, var).
    """
    prec_q, prec_p = 1.0 / var_q, 1.0 / var_p
    var = 1.0 / (prec_q + prec_p)
    return (mu_q * prec_q + mu_p * prec_p) * var, var


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) of a diagonal Gaussian posterior, summed over latent dims and averaged over the batch:
    1/2 sum_k (mu_k^2 + sigma_k^2 - log sigma_k^2 - 1) (Kingma & Welling 2013, appendix B), in float32. The one
    KL every VAE-family model (VAE, beta-VAE, beta-TC-VAE's logged KL, FactorVAE, VLAE) uses: (B, D) -> ()."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu ** 2 + logvar.exp() - logvar - 1).sum(1).mean()


def kl_gaussians(mu_q: torch.Tensor, var_q: torch.Tensor, mu_p: torch.Tensor, var_p: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mu_q, var_q) || N(mu_p, var_p)) = 1/2 (log var_p/var_q + (var_q + (mu_q-mu_p)^2)/var_p - 1)."""
    return 0.5 * (torch.log(var_p) - torch.log(var_q) + (var_q + (mu_q - mu_p).pow(2)) / var_p - 1.0)
