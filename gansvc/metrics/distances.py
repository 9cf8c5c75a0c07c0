"""The math of FID, KID and IS as pure functions on numpy arrays (float64).

- FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"):
  the Frechet distance between two Gaussians N(mu1, S1), N(mu2, S2):
  ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).
- KID (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased estimator of the squared MMD with the cubic
  polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets (mean and std over subsets).
- IS (Salimans et al. 2016, "Improved Techniques for Training GANs"): exp(E_x KL(p(y|x) || p(y))), computed on
  `splits` splits of the samples; mean and std over splits.

Where the reference tools leave a choice, gansvc follows torch-fidelity 0.4.0 (metric_fid / metric_kid / metric_isc),
so its numbers equal torch-fidelity's on the same features: FID's trace term from eigenvalues; KID's subsets drawn
with numpy's legacy `RandomState(seed).choice(..., replace=False)`, first from set 1 then from set 2, per subset
(seed 2020 = torch-fidelity's `rng_seed` default); IS split boundaries i*N//splits after an optional
`RandomState(seed).permutation(N)` shuffle (torch-fidelity's `samples_shuffle`, default on, seed 2020).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017).

    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, as torch-fidelity 0.4.0 computes it
    (metric_fid.fid_statistics_to_metric; no matrix square root, so it stays exact for the singular covariances of
    fewer samples than dimensions, where TTUR / pytorch-fid's sqrtm needs an eps retry). For covariances (symmetric
    PSD) S1 S2 has the eigenvalues of the symmetric R S2 R, R = S1^(1/2) (similar matrices); gansvc takes them with
    `eigvalsh` (symmetric solver: several times faster than the general `eigvals` at 2048 dimensions), clipping
    round-off negatives to 0 as torch-fidelity's complex square root does (it keeps the real part).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    if not (np.isfinite(sigma1).all() and np.isfinite(sigma2).all()):
        raise ValueError("Frechet distance: the covariances hold non-finite values (non-finite features?)")
    diff = mu1 - mu2
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    tr_covmean = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None))))
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3, the KID kernel (Binkowski et al. 2018), for all pairs of rows."""
    k: np.ndarray = (x @ y.T / x.shape[1] + 1.0) ** 3  # numpy types `@` of untyped-shape arrays as Any
    return k


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


KID_SEED = 2020  # torch-fidelity defaults.py rng_seed
IS_SHUFFLE_SEED = 2020  # torch-fidelity defaults.py rng_seed (with samples_shuffle=True)


def kid_subset_indices(
    n1: int, n2: int, subsets: int, subset_size: int, seed: int = KID_SEED
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (rows of set 1, rows of set 2) of each KID subset, drawn as torch-fidelity's kid_features_to_metric does:
    one `RandomState(seed)`, per subset first choice(n1, m, replace=False) then choice(n2, m, replace=False)."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(subsets):
        i = rng.choice(n1, subset_size, replace=False)
        out.append((i, rng.choice(n2, subset_size, replace=False)))
    return out


def kernel_inception_distance(
    f1: np.ndarray,
    f2: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = KID_SEED,
    precompute: bool | None = None,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): mean and std over `subsets` random subsets (without replacement, each of
    `subset_size` rows, clipped to the smaller set; see `kid_subset_indices`) of the unbiased MMD^2 with the cubic
    polynomial kernel. Pass the generated features as `f1` and the real ones as `f2` (torch-fidelity's input1 /
    input2), so the subsets are the ones torch-fidelity draws.

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
    idx = kid_subset_indices(len(f1), len(f2), subsets, m, seed)
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
    out: np.ndarray  # scipy's log_softmax and numpy's keepdims sum are typed Any
    if logits:
        out = log_softmax(a, axis=1)
    else:
        with np.errstate(divide="ignore"):
            out = np.log(a / a.sum(axis=1, keepdims=True))
    return out


def split_kl(log_p: np.ndarray) -> float:
    """E_x KL(p(y|x) || p(y)) for one split, p(y) the split's mean prediction (0 log 0 = 0)."""
    p = np.exp(log_p)
    p_y = p.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_py = np.where(p_y > 0, np.log(p_y), 0.0)
        terms = np.where(p > 0, p * (log_p - log_py), 0.0)
    return float(terms.sum(axis=1).mean())


def split_bounds(n: int, splits: int) -> np.ndarray:
    """Start of each IS split and the end: i * n // splits for i = 0..splits (torch-fidelity's metric_isc)."""
    return np.array([i * n // splits for i in range(splits + 1)])


def is_order(n: int, shuffle_seed: int | None) -> np.ndarray:
    """The order IS splits read the samples in: `RandomState(seed).permutation(n)` (torch-fidelity), or as given."""
    return np.random.RandomState(shuffle_seed).permutation(n) if shuffle_seed is not None else np.arange(n)


def inception_score(
    probs_or_logits: np.ndarray, splits: int = 10, logits: bool | None = None, shuffle_seed: int | None = None
) -> tuple[float, float]:
    """IS (Salimans et al. 2016): mean and std over `splits` splits (bounds i*N//splits) of exp(E_x KL(p(y|x) ||
    p(y))), of the samples in the order `is_order(N, shuffle_seed)` (None: as given, contiguous splits)."""
    log_p = as_log_probs(probs_or_logits, logits)
    log_p = log_p[is_order(len(log_p), shuffle_seed)]
    splits = max(1, min(splits, len(log_p)))
    b = split_bounds(len(log_p), splits)
    scores = np.array([np.exp(split_kl(log_p[b[s] : b[s + 1]])) for s in range(splits)])
    return float(scores.mean()), float(scores.std())
