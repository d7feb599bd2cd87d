"""Mixture sequential probability ratio test (mSPRT) with always-valid p-values, vectorised.

For an estimate theta_hat ~ N(theta, V) and a mixing density theta ~ N(0, tau^2) (Johari et al., KDD 2017):

    Lambda   = sqrt(V / (V + tau^2)) * exp(tau^2 theta_hat^2 / (2 V (V + tau^2)))
    Lambda+  = 2 Phi( tau theta_hat / sqrt(V (V + tau^2))) * Lambda     (half-normal mixture on theta > 0)
    Lambda-  = 2 Phi(-tau theta_hat / sqrt(V (V + tau^2))) * Lambda     (half-normal mixture on theta < 0)

and the always-valid p-value is the running minimum of 1 / Lambda+ over looks. Everything is computed in log
space, so a decisive look does not overflow, and accepts arrays of any shape (runs x looks in the simulation,
scalars in the live guard) so the guard and its validation share one implementation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import optimize, special

from evolution.errors import InvalidInput

CONTINUE, PROMOTE, ROLLBACK, NO_DIFFERENCE = 0, 1, 2, 3
ACTION_NAMES = {
    CONTINUE: "continue",
    PROMOTE: "promote",
    ROLLBACK: "rollback",
    NO_DIFFERENCE: "no_significant_difference",
}


def y_for_alpha(alpha: float) -> float:
    """The y solving y - ln(1 + y) = 2 ln(1 / alpha) (8.21 at alpha = 0.05)."""
    if not 0.0 < alpha < 1.0:
        raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
    target = 2.0 * math.log(1.0 / alpha)
    return float(optimize.brentq(lambda y: y - math.log1p(y) - target, 1e-12, 1e6, xtol=1e-14, rtol=1e-15))


def choose_tau(sigma_d: float, n_opt: int, alpha: float = 0.05) -> float:
    """tau = sigma_d sqrt(y / n_opt): the mixture that makes the test sharpest around n_opt labels.

    tau is roughly the smallest effect (in MAE units) worth detecting by n_opt. It is fixed before the canary,
    from baseline or shadow data, never tuned on live data.
    """
    if not (sigma_d > 0 and math.isfinite(sigma_d)):
        raise InvalidInput(f"sigma_d must be positive and finite, got {sigma_d}")
    if n_opt < 1:
        raise InvalidInput(f"n_opt must be at least 1, got {n_opt}")
    return sigma_d * math.sqrt(y_for_alpha(alpha) / n_opt)


def _check_tau(tau: float) -> None:
    if not (tau > 0 and math.isfinite(tau)):
        raise InvalidInput(f"tau must be positive and finite, got {tau}")


def log_msprt_lambda(theta_hat: np.ndarray | float, v: np.ndarray | float, tau: float) -> np.ndarray:
    """ln Lambda. V = 0 means an exact estimate: -inf if theta_hat = 0, +inf otherwise; V missing means no
    evidence."""
    _check_tau(tau)
    th = np.asarray(theta_hat, dtype=np.float64)
    var = np.asarray(v, dtype=np.float64)
    t2 = tau * tau
    ok = np.isfinite(th) & np.isfinite(var) & (var > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = 0.5 * np.log(var / (var + t2)) + t2 * th * th / (2.0 * var * (var + t2))
    degenerate = np.where((var == 0) & np.isfinite(th) & (th != 0), np.inf, -np.inf)
    return np.where(ok, value, degenerate)


def _log_lambda_signed(
    theta_hat: np.ndarray | float, v: np.ndarray | float, tau: float, sign: float
) -> np.ndarray:
    th = np.asarray(theta_hat, dtype=np.float64)
    var = np.asarray(v, dtype=np.float64)
    t2 = tau * tau
    ok = np.isfinite(th) & np.isfinite(var) & (var > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        arg = sign * tau * th / np.sqrt(var * (var + t2))
        value = math.log(2.0) + special.log_ndtr(arg) + log_msprt_lambda(th, var, tau)
    degenerate = np.where((var == 0) & np.isfinite(th) & (sign * th > 0), np.inf, -np.inf)
    return np.where(ok, value, degenerate)


def log_lambda_plus(theta_hat: np.ndarray | float, v: np.ndarray | float, tau: float) -> np.ndarray:
    """ln Lambda+ : evidence that theta > 0 (the candidate is better)."""
    _check_tau(tau)
    return _log_lambda_signed(theta_hat, v, tau, 1.0)


def log_lambda_minus(theta_hat: np.ndarray | float, v: np.ndarray | float, tau: float) -> np.ndarray:
    """ln Lambda- : evidence that theta < 0 (the candidate is worse)."""
    _check_tau(tau)
    return _log_lambda_signed(theta_hat, v, tau, -1.0)


def _exp(x: np.ndarray) -> np.ndarray | float:
    with np.errstate(over="ignore"):
        out = np.exp(x)
    return float(out) if out.ndim == 0 else out


def msprt_lambda(theta_hat: np.ndarray | float, v: np.ndarray | float, tau: float) -> np.ndarray | float:
    """Lambda, the two-sided mixture likelihood ratio."""
    return _exp(log_msprt_lambda(theta_hat, v, tau))


def lambda_plus(theta_hat: np.ndarray | float, v: np.ndarray | float, tau: float) -> np.ndarray | float:
    return _exp(log_lambda_plus(theta_hat, v, tau))


def lambda_minus(theta_hat: np.ndarray | float, v: np.ndarray | float, tau: float) -> np.ndarray | float:
    return _exp(log_lambda_minus(theta_hat, v, tau))


def p_from_log_lambda(log_lambda: np.ndarray | float) -> np.ndarray:
    """min(1, 1 / Lambda) for one look (take the running minimum over looks for the always-valid p)."""
    with np.errstate(over="ignore"):
        return np.minimum(1.0, np.exp(-np.asarray(log_lambda, dtype=np.float64)))


class SequentialOutcome(NamedTuple):
    action: np.ndarray  # CONTINUE / PROMOTE / ROLLBACK / NO_DIFFERENCE per run
    stop_look: np.ndarray  # index of the deciding look, -1 when still running
    p: np.ndarray  # running-min p at the deciding (or last) look
    q: np.ndarray


def sequential_outcomes(
    n: np.ndarray,
    theta_hat: np.ndarray,
    v: np.ndarray,
    *,
    tau: float,
    tau_harm: float,
    alpha: float,
    min_promote_n: int,
    min_rollback_n: int,
    n_max: int,
    p_start: np.ndarray | float = 1.0,
    q_start: np.ndarray | float = 1.0,
) -> SequentialOutcome:
    """First decision of each run over a grid of looks (runs x looks arrays; ``n`` per look, shape (looks,)).

    At a look, in this order: roll back if n >= min_rollback_n and q < alpha; promote if n >= min_promote_n
    and
    p < alpha; stop with "no significant difference" once n >= n_max. p and q are running minima from the
    first
    look on (``p_start``/``q_start`` carry them in from earlier looks).
    """
    th = np.atleast_2d(np.asarray(theta_hat, dtype=np.float64))
    var = np.atleast_2d(np.asarray(v, dtype=np.float64))
    ns = np.asarray(n).reshape(1, -1)
    p_look = p_from_log_lambda(log_lambda_plus(th, var, tau))
    q_look = p_from_log_lambda(log_lambda_minus(th, var, tau_harm))
    p = np.minimum.accumulate(np.minimum(p_look, np.reshape(p_start, (-1, 1))), axis=1)
    q = np.minimum.accumulate(np.minimum(q_look, np.reshape(q_start, (-1, 1))), axis=1)
    rollback = (ns >= min_rollback_n) & (q < alpha)
    promote = (ns >= min_promote_n) & (p < alpha)
    done = rollback | promote | (ns >= n_max)
    decided = done.any(axis=1)
    first = np.where(decided, done.argmax(axis=1), -1)
    rows = np.arange(th.shape[0])
    at = np.where(decided, first, th.shape[1] - 1)
    action = np.where(
        ~decided,
        CONTINUE,
        np.where(rollback[rows, at], ROLLBACK, np.where(promote[rows, at], PROMOTE, NO_DIFFERENCE)),
    )
    return SequentialOutcome(action=action, stop_look=first, p=p[rows, at], q=q[rows, at])
