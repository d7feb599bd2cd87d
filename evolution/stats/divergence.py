"""PSI, KL and their chi-square significance, on binned counts (spec statistics.md section 1).

Conventions, fixed here once:

* Counts are smoothed per bin, ``p_i = (c_i + 0.5) / (n + 0.5 B)``. A constant epsilon (1e-4) instead
  inflates PSI badly in small windows, because an empty bin then contributes ``q ln(q / 1e-4)``.
* Bins that are empty in *both* samples are dropped before smoothing. They carry no information, yet
  smoothing would give them a spurious share on each side (an always-empty ``__missing__`` bin adds about
  0.001 to PSI at m = 1,000, a tenth of the null mean) and they would add a degree of freedom that the null
  distribution does not have.
* KL is reported as KL(current || baseline) = sum q ln(q / p); PSI = KL(p || q) + KL(q || p).
* Under no drift, PSI / (1/n + 1/m) is approximately chi-square with B - 1 degrees of freedom (Yurdakul
  2018); 2 KL / (1/n + 1/m) likewise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from evolution.errors import InvalidInput

ArrayLike = Sequence[float] | Sequence[int] | np.ndarray


def _as_counts(counts: ArrayLike, what: str) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64).ravel()
    if c.size == 0 or not np.all(np.isfinite(c)) or np.any(c < 0):
        raise InvalidInput(f"{what} must be a non-empty vector of finite, non-negative counts")
    return c


def _paired_counts(base_counts: ArrayLike, window_counts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validated counts with the bins that are empty in both samples removed."""
    b = _as_counts(base_counts, "baseline counts")
    w = _as_counts(window_counts, "window counts")
    if b.size != w.size:
        raise InvalidInput(f"baseline has {b.size} bins but the window has {w.size}")
    if b.sum() <= 0 or w.sum() <= 0:
        raise InvalidInput("both samples need at least one counted row to compare distributions")
    keep = (b > 0) | (w > 0)
    return b[keep], w[keep]


def active_bins(base_counts: ArrayLike, window_counts: ArrayLike) -> int:
    """Number of bins that are non-empty in at least one sample: the B of the smoothing and of the
    chi-square."""
    b, _ = _paired_counts(base_counts, window_counts)
    return int(b.size)


def smoothed_shares(counts: ArrayLike) -> np.ndarray:
    """``(c_i + 0.5) / (n + 0.5 B)`` over the bins given (drop both-empty bins first; see the module
    docstring)."""
    c = _as_counts(counts, "counts")
    return (c + 0.5) / (c.sum() + 0.5 * c.size)


def psi_shares(p: ArrayLike, q: ArrayLike) -> float:
    """PSI of two strictly positive share vectors: sum (q - p) ln(q / p) = KL(p||q) + KL(q||p)."""
    pp, qq = _positive_shares(p, q)
    return float(np.sum((qq - pp) * np.log(qq / pp)))


def kl_shares(q: ArrayLike, p: ArrayLike) -> float:
    """KL(q || p) = sum q ln(q / p) of two strictly positive share vectors (scipy.stats.entropy(q, p)
    order)."""
    pp, qq = _positive_shares(p, q)
    return float(np.sum(qq * np.log(qq / pp)))


def _positive_shares(p: ArrayLike, q: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    pp = np.asarray(p, dtype=np.float64).ravel()
    qq = np.asarray(q, dtype=np.float64).ravel()
    if pp.size != qq.size or pp.size == 0:
        raise InvalidInput("share vectors must be non-empty and of equal length")
    if not (np.all(pp > 0) and np.all(qq > 0) and np.all(np.isfinite(pp)) and np.all(np.isfinite(qq))):
        raise InvalidInput("shares must be finite and strictly positive (smooth counts first)")
    return pp / pp.sum(), qq / qq.sum()


def psi(base_counts: ArrayLike, window_counts: ArrayLike) -> float:
    """Population stability index of two binned samples with +0.5 smoothing."""
    b, w = _paired_counts(base_counts, window_counts)
    if b.size < 2:
        return 0.0
    return psi_shares(smoothed_shares(b), smoothed_shares(w))


def kl_divergence(base_counts: ArrayLike, window_counts: ArrayLike) -> float:
    """KL(window || baseline) of two binned samples with +0.5 smoothing. Note the direction: current first."""
    b, w = _paired_counts(base_counts, window_counts)
    if b.size < 2:
        return 0.0
    return kl_shares(smoothed_shares(w), smoothed_shares(b))


def psi_p_value(psi_value: float, n: int, m: int, bins: int) -> float:
    """P(PSI >= observed | no drift) from PSI / (1/n + 1/m) ~ chi2(B - 1)."""
    if bins < 2:
        return 1.0
    return float(stats.chi2.sf(psi_value / (1.0 / n + 1.0 / m), bins - 1))


def kl_p_value(kl_value: float, n: int, m: int, bins: int) -> float:
    """P(KL >= observed | no drift) from 2 KL / (1/n + 1/m) ~ chi2(B - 1)."""
    if bins < 2:
        return 1.0
    return float(stats.chi2.sf(2.0 * kl_value / (1.0 / n + 1.0 / m), bins - 1))


def psi_critical_value(alpha: float, n: int, m: int, bins: int) -> float:
    """The PSI above which the chi-square test rejects at level alpha (0.0622 for n=1000, m=180, B=5, 5 %)."""
    return float(stats.chi2.isf(alpha, bins - 1) * (1.0 / n + 1.0 / m))
