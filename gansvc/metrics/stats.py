"""Streaming statistics: features arrive in batches and are never all held at once.

`FeatureStats` keeps the count, mean and centred scatter matrix in float64, merged batch by batch with the parallel
update of Chan, Golub & LeVeque (1979) (the same mean/covariance as a running sum and sum of outer products, without
the cancellation of sum(xx^T) - n mu mu^T), plus the first `keep` feature rows for KID.
`ISStats` accumulates the Inception Score of Salimans et al. 2016 split by split, given the total count in advance
(and, like torch-fidelity, optionally a seeded shuffle of which sample goes to which split).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gansvc.metrics.distances import as_log_probs, is_order, split_bounds


@dataclass
class FeatureStats:
    """Running mean / covariance of (N, D) feature batches and the first `keep` rows (for KID)."""

    dim: int
    keep: int = 2048
    n: int = 0
    mean: np.ndarray = field(init=False)
    scatter: np.ndarray = field(init=False)  # sum_i (x_i - mean)(x_i - mean)^T
    _kept: list[np.ndarray] = field(init=False, default_factory=list)
    _n_kept: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.dim)
        self.scatter = np.zeros((self.dim, self.dim))

    def update(self, feats: np.ndarray) -> None:
        x = np.asarray(feats, np.float64).reshape(len(feats), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"features have {x.shape[1]} dimensions, the statistics {self.dim}")
        nb = len(x)
        if nb == 0:
            return
        mb = x.mean(axis=0)
        xc = x - mb
        delta = mb - self.mean
        total = self.n + nb
        # Chan et al. 1979: M2 = M2_a + M2_b + delta delta^T * n_a n_b / n
        self.scatter += xc.T @ xc + np.outer(delta, delta) * (self.n * nb / total)
        self.mean = self.mean + delta * (nb / total)
        self.n = total
        if self._n_kept < self.keep:
            part = x[: self.keep - self._n_kept].astype(np.float32)
            self._kept.append(part)
            self._n_kept += len(part)

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (ddof=1, as np.cov)."""
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.n}")
        return self.scatter / (self.n - 1)

    @property
    def kept(self) -> np.ndarray:
        """The first min(n, keep) feature rows, float32."""
        return np.concatenate(self._kept) if self._kept else np.zeros((0, self.dim), np.float32)


@dataclass
class ISStats:
    """Inception Score over `total` samples in `splits` splits, streamed (same numbers as `inception_score`).

    Sample k of the stream belongs to the split holding its position in `is_order(total, shuffle_seed)` (split s
    covers positions s*total//splits .. (s+1)*total//splits - 1, torch-fidelity's bounds). Per split: the sum of
    p(y|x) and of sum_y p log p; then E_x KL(p(y|x) || p(y)) = E_x sum p log p - sum p_y log p_y.
    """

    total: int
    splits: int = 10
    shuffle_seed: int | None = None
    n: int = 0
    _p_sum: list[np.ndarray] = field(init=False, default_factory=list)
    _plogp_sum: list[float] = field(init=False, default_factory=list)
    _bounds: np.ndarray = field(init=False)
    _split_of: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.splits = max(1, min(self.splits, self.total))
        self._bounds = split_bounds(self.total, self.splits)
        position = np.empty(self.total, np.int64)
        position[is_order(self.total, self.shuffle_seed)] = np.arange(self.total)  # sample -> its shuffled position
        self._split_of = np.searchsorted(self._bounds[1:], position, side="right")
        self._p_sum, self._plogp_sum = [], [0.0] * self.splits

    def update(self, probs_or_logits: np.ndarray, logits: bool | None = None) -> None:
        log_p = as_log_probs(probs_or_logits, logits)
        if self.n + len(log_p) > self.total:
            raise ValueError(f"ISStats was told {self.total} samples and got more")
        if not self._p_sum:
            self._p_sum = [np.zeros(log_p.shape[1]) for _ in range(self.splits)]
        split = self._split_of[self.n : self.n + len(log_p)]
        p = np.exp(log_p)
        with np.errstate(invalid="ignore"):
            plogp = np.where(p > 0, p * log_p, 0.0).sum(axis=1)
        for s in np.unique(split):
            rows = split == s
            self._p_sum[s] += p[rows].sum(axis=0)
            self._plogp_sum[s] += float(plogp[rows].sum())
        self.n += len(log_p)

    def result(self) -> tuple[float, float]:
        if self.n != self.total:
            raise ValueError(f"ISStats got {self.n} of the {self.total} samples it was told")
        sizes = np.diff(self._bounds)
        scores = []
        for s in range(self.splits):
            p_y = self._p_sum[s] / sizes[s]
            with np.errstate(divide="ignore", invalid="ignore"):
                ent = float(np.where(p_y > 0, p_y * np.log(p_y), 0.0).sum())
            scores.append(np.exp(self._plogp_sum[s] / sizes[s] - ent))
        return float(np.mean(scores)), float(np.std(scores))
