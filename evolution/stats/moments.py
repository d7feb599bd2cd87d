"""Mergeable running moments (count, mean, sum of squared deviations).

Chunks of a stream, or looks of a canary, are summarised by ``(n, mean, m2)`` and merged with Chan's formula,
which stays accurate where the textbook ``sum(x**2) - sum(x)**2 / n`` cancels catastrophically (errors of 1000
+- 0.01).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Moments(NamedTuple):
    n: int
    mean: float
    m2: float  # sum of squared deviations from the mean

    @property
    def variance(self) -> float:
        """Unbiased sample variance (ddof=1); 0.0 below two observations."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


EMPTY = Moments(0, 0.0, 0.0)


def moments_of(values: np.ndarray) -> Moments:
    """Moments of one batch (two passes over a batch that is already in memory)."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return EMPTY
    mean = float(x.mean())
    dev = x - mean
    return Moments(n, mean, float(np.dot(dev, dev)))


def merge(a: Moments, b: Moments) -> Moments:
    """Moments of the union of two disjoint samples (Chan, Golub and LeVeque 1979)."""
    if b.n == 0:
        return a
    if a.n == 0:
        return b
    n = a.n + b.n
    delta = b.mean - a.mean
    mean = a.mean + delta * b.n / n
    m2 = a.m2 + b.m2 + delta * delta * a.n * b.n / n
    return Moments(n, mean, m2)
