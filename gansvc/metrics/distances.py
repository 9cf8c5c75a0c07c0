"""The math of FID, KID and IS as pure functions on numpy arrays (float64).

- FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"):
  the Frechet distance between two Gaussians N(mu1, S1), N(mu2, S2):
  ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).
- KID (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased estimator of the squared MMD with the cubic
  polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets (mean and std over subsets).
- IS (Salimans et al. 2016, "Improved Techniques for Training GANs"): exp(E_x KL(p(y|x) || p(y))), computed on
  `splits` contiguous splits of the samples; mean and std over splits.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.special import log_softmax


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017).

    The matrix square root follows the reference implementations (TTUR code, pytorch-fid): when sqrtm of
    sigma1 @ sigma2 is not finite (singular covariances, e.g. fewer samples than dimensions) it is recomputed with
    eps * I added to both covariances; tiny imaginary parts from numerical error are dropped, large ones are an error.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            worst = float(np.max(np.abs(covmean.imag)))
            raise ValueError(f"Frechet distance: sqrtm(sigma1 @ sigma2) has an imaginary component of {worst:.3g}; "
                             "the covariances are not valid (too few samples or non-finite features?)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3, the KID kernel (Binkowski et al. 2018), for all pairs of rows."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3; used by Binkowski et al. 2018):
    sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (n(n-1)) - 2 sum_{i,j} k(x_i,y_j) / (mn)."""
    m, n = kxx.shape[0], kyy.shape[0]
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.sum() / (m * n))


def mmd2_unbiased(f1: np.ndarray, f2: np.ndarray) -> float:
    """Unbiased squared MMD between two feature sets (rows) with the cubic polynomial kernel."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if min(len(f1), len(f2)) < 2:
        raise ValueError("the unbiased MMD needs at least 2 samples in each set")
    return _mmd2_from_kernels(polynomial_kernel(f1, f1), polynomial_kernel(f2, f2), polynomial_kernel(f1, f2))


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0, precompute: bool | None = None) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): mean and std over `subsets` random subsets (without replacement, each of
    `subset_size` rows, clipped to the smaller set) of the unbiased MMD^2 with the cubic polynomial kernel.

    With `precompute` (default: when both sets have at most 4096 rows) the three kernel matrices are computed once
    and each subset's block sums come from indicator vectors (same numbers, far fewer flops); otherwise each subset
    computes its own kernels.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"KID needs two (N, D) feature arrays of the same D, got {f1.shape} and {f2.shape}")
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {len(f1)} and {len(f2)}")
    rng = np.random.default_rng(seed)
    idx = [(rng.choice(len(f1), m, replace=False), rng.choice(len(f2), m, replace=False)) for _ in range(subsets)]
    if precompute if precompute is not None else max(len(f1), len(f2)) <= 4096:
        # the sum of a subset's kernel block is v^T K w with 0/1 indicator vectors: one kernel matrix per pair of
        # sets, then matrix products, instead of recomputing (or gathering) m x m blocks per subset
        v1, v2 = np.zeros((subsets, len(f1))), np.zeros((subsets, len(f2)))
        for s, (i, j) in enumerate(idx):
            v1[s, i], v2[s, j] = 1.0, 1.0
        k11, k22, k12 = polynomial_kernel(f1, f1), polynomial_kernel(f2, f2), polynomial_kernel(f1, f2)
        xx = (((v1 @ k11) * v1).sum(axis=1) - v1 @ np.diag(k11)) / (m * (m - 1))
        yy = (((v2 @ k22) * v2).sum(axis=1) - v2 @ np.diag(k22)) / (m * (m - 1))
        xy = ((v1 @ k12) * v2).sum(axis=1) / (m * m)
        values = xx + yy - 2.0 * xy
    else:
        values = np.array([mmd2_unbiased(f1[i], f2[j]) for i, j in idx])
    return float(values.mean()), float(values.std())


def as_log_probs(probs_or_logits: np.ndarray, logits: bool | None = None) -> np.ndarray:
    """log p(y|x) from class probabilities or logits. `logits=None` decides: rows of non-negative values summing
    to 1 are probabilities, anything else logits (softmaxed)."""
    a = np.asarray(probs_or_logits, np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected (N, classes) predictions, got shape {a.shape}")
    if logits is None:
        logits = not (a.min() >= 0 and np.allclose(a.sum(axis=1), 1.0, atol=1e-4))
    if logits:
        return log_softmax(a, axis=1)
    with np.errstate(divide="ignore"):
        return np.log(a / a.sum(axis=1, keepdims=True))


def split_kl(log_p: np.ndarray) -> float:
    """E_x KL(p(y|x) || p(y)) for one split, p(y) the split's mean prediction (0 log 0 = 0)."""
    p = np.exp(log_p)
    p_y = p.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_py = np.where(p_y > 0, np.log(p_y), 0.0)
        terms = np.where(p > 0, p * (log_p - log_py), 0.0)
    return float(terms.sum(axis=1).mean())


def inception_score(probs_or_logits: np.ndarray, splits: int = 10, logits: bool | None = None) -> tuple[float, float]:
    """IS (Salimans et al. 2016): mean and std over `splits` contiguous splits of exp(E_x KL(p(y|x) || p(y)))."""
    log_p = as_log_probs(probs_or_logits, logits)
    splits = max(1, min(splits, len(log_p)))
    scores = np.array([np.exp(split_kl(part)) for part in np.array_split(log_p, splits)])
    return float(scores.mean()), float(scores.std())
