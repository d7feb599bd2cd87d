"""The canary guard (spec statistics.md section 2): promote, roll back, or keep going, at every look.

Usage between looks, e.g. from an activity::

    config = guard_config_from_shadow(shadow_champion_err - shadow_candidate_err)  # before the canary
    state = GuardState()
    ...
    state = observe(state, config, champion_abs_err, candidate_abs_err)  # matured labels only
    decision = check_guardrails(config, ...) or decide(state, config)
    state = decision.state  # carry it to the next look

``GuardState`` is a few numbers (running moments, running-minimum p and q, the look count), JSON-serialisable
so a workflow can carry it. ``decide`` does not mutate its argument: the updated state is ``decision.state``.
"""

from __future__ import annotations

import math

import numpy as np

from evolution.errors import InvalidInput
from evolution.stats.canary_models import Action, Decision, GuardConfig, GuardState, MomentState
from evolution.stats.canary_plan import PlanResult, ScenarioPlan, expected_labels
from evolution.stats.moments import Moments, merge, moments_of
from evolution.stats.msprt import (
    choose_tau,
    lambda_minus,
    lambda_plus,
    log_lambda_minus,
    log_lambda_plus,
    msprt_lambda,
    p_from_log_lambda,
    y_for_alpha,
)

__all__ = [
    "Action",
    "Decision",
    "GuardConfig",
    "GuardState",
    "MomentState",
    "PlanResult",
    "ScenarioPlan",
    "check_guardrails",
    "choose_tau",
    "decide",
    "expected_labels",
    "guard_config_from_shadow",
    "lambda_minus",
    "lambda_plus",
    "msprt_lambda",
    "observe",
    "observe_unpaired",
    "y_for_alpha",
]

DEFAULT_N_OPT = (
    10_000  # promotion mixture sharpest at half of N_max: >= 90 % power for a 1.9 % MAE gain (spec 4)
)
DEFAULT_HARM_N_OPT = 500  # harm mixture sharpest within hundreds of labels, so large regressions stop early
DEFAULT_WINSOR_QUANTILES = (0.001, 0.999)


def _moments(state: MomentState) -> Moments:
    return Moments(state.n, state.mean, state.m2)


def _moment_state(m: Moments) -> MomentState:
    return MomentState(n=m.n, mean=m.mean, m2=m.m2)


def _errors(values: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise InvalidInput(f"{what}: absolute errors must be finite (NaN predictions are a guardrail matter)")
    if np.any(x < 0):
        raise InvalidInput(f"{what}: absolute errors must be non-negative")
    return x


def _clip(x: np.ndarray, config: GuardConfig) -> np.ndarray:
    if config.winsor_low is None and config.winsor_high is None:
        return x
    return np.clip(x, config.winsor_low, config.winsor_high)


def observe(
    state: GuardState, config: GuardConfig, champion_abs_err: np.ndarray, candidate_abs_err: np.ndarray
) -> GuardState:
    """Add a batch of paired matured labels: the same requests scored by both models."""
    if not config.paired:
        raise InvalidInput("observe() is the paired update; this guard is unpaired: use observe_unpaired()")
    a = _errors(champion_abs_err, "champion_abs_err")
    b = _errors(candidate_abs_err, "candidate_abs_err")
    if a.size != b.size:
        raise InvalidInput(f"paired batch: {a.size} champion errors but {b.size} candidate errors")
    d = _clip(a - b, config)
    merged = merge(_moments(state.d), moments_of(d))
    return state.model_copy(update={"d": _moment_state(merged)})


def observe_unpaired(
    state: GuardState, config: GuardConfig, champion_abs_err: np.ndarray, candidate_abs_err: np.ndarray
) -> GuardState:
    """Add matured labels from requests each model served alone (outcomes that depend on who served)."""
    if config.paired:
        raise InvalidInput("observe_unpaired() is the unpaired update; this guard is paired: use observe()")
    a = _clip(_errors(champion_abs_err, "champion_abs_err"), config)
    b = _clip(_errors(candidate_abs_err, "candidate_abs_err"), config)
    return state.model_copy(
        update={
            "a": _moment_state(merge(_moments(state.a), moments_of(a))),
            "b": _moment_state(merge(_moments(state.b), moments_of(b))),
        }
    )


def estimate(state: GuardState, config: GuardConfig) -> tuple[int, float, float]:
    """(n, theta_hat, V) at the current state; V is NaN below two labels (per arm)."""
    if config.paired:
        mo = _moments(state.d)
        v = mo.variance / mo.n if mo.n >= 2 else math.nan
        return mo.n, mo.mean, v
    a, b = _moments(state.a), _moments(state.b)
    n = min(a.n, b.n)
    v = a.variance / a.n + b.variance / b.n if n >= 2 else math.nan
    return n, a.mean - b.mean, v


def decide(state: GuardState, config: GuardConfig) -> Decision:
    """One look: update the running-minimum p and q, then roll back, promote, stop, or continue.

    Order: rollback (n >= min_rollback_n and q < alpha) before promotion (n >= min_promote_n and p < alpha),
    then
    "no significant difference" at n >= n_max. A decided state stays decided.
    """
    n, theta, v = estimate(state, config)
    if state.decided is not None:
        return Decision(
            action=state.decided,
            reason=state.decided_reason or "already decided",
            n=n,
            p_promote=state.p_promote,
            q_rollback=state.q_rollback,
            theta_hat=theta,
            state=state,
        )
    p, q = state.p_promote, state.q_rollback
    if n >= 2:
        p = min(p, float(p_from_log_lambda(log_lambda_plus(theta, v, config.tau))))
        q = min(q, float(p_from_log_lambda(log_lambda_minus(theta, v, config.tau_harm))))
    action: Action
    if n >= config.min_rollback_n and q < config.alpha:
        action = "rollback"
        reason = (
            f"harm test: always-valid q = {q:.3g} < {config.alpha} after {n} labels "
            f"(candidate MAE higher by {-theta:.4g})"
        )
    elif n >= config.min_promote_n and p < config.alpha:
        action = "promote"
        reason = (
            f"always-valid p = {p:.3g} < {config.alpha} after {n} labels (candidate MAE lower by {theta:.4g})"
        )
    elif n >= config.n_max:
        action = "no_significant_difference"
        reason = f"no significant difference by N_max = {config.n_max} labels (p = {p:.3g}, q = {q:.3g})"
    else:
        action = "continue"
        reason = f"{n} labels: p = {p:.3g}, q = {q:.3g}; no decision yet"
    terminal = action != "continue"
    new_state = state.model_copy(
        update={
            "p_promote": p,
            "q_rollback": q,
            "looks": state.looks + 1,
            "decided": action if terminal else None,
            "decided_reason": reason if terminal else None,
        }
    )
    return Decision(
        action=action, reason=reason, n=n, p_promote=p, q_rollback=q, theta_hat=theta, state=new_state
    )


def check_guardrails(
    config: GuardConfig,
    invalid_predictions: int,
    errors: int,
    requests: int,
    p99_latency_ms: float | None,
    elapsed_s: float,
    window_s: float,
    *,
    state: GuardState | None = None,
) -> Decision | None:
    """Hard limits that roll back at once, without statistics; None when all hold.

    Invalid or NaN predictions above ``max_invalid_rate`` (default: any), failed requests above
    ``max_error_rate``,
    p99 latency above ``max_latency_ms``, or the rollout window running out before the test decided.
    """
    if min(invalid_predictions, errors, requests) < 0 or elapsed_s < 0 or window_s <= 0:
        raise InvalidInput("guardrail counts and elapsed time must be non-negative and the window positive")
    if invalid_predictions > requests or errors > requests:
        raise InvalidInput(
            f"guardrails: {invalid_predictions} invalid and {errors} failed of {requests} requests"
        )
    reason: str | None = None
    invalid_rate = invalid_predictions / requests if requests else 0.0
    error_rate = errors / requests if requests else 0.0
    if invalid_predictions > 0 and invalid_rate > config.max_invalid_rate:
        reason = f"guardrail: {invalid_predictions} invalid or NaN predictions in {requests} requests"
    elif errors > 0 and error_rate > config.max_error_rate:
        reason = f"guardrail: error rate {error_rate:.2%} above {config.max_error_rate:.2%}"
    elif (
        config.max_latency_ms is not None
        and p99_latency_ms is not None
        and p99_latency_ms > config.max_latency_ms
    ):
        reason = f"guardrail: p99 latency {p99_latency_ms:.1f} ms above {config.max_latency_ms:.1f} ms"
    elif elapsed_s >= window_s:
        reason = f"guardrail: rollout window of {window_s:.0f} s ran out before the test decided"
    if reason is None:
        return None
    theta = 0.0
    new_state = None
    if state is not None:
        _, theta, _ = estimate(state, config)
        new_state = state.model_copy(update={"decided": "rollback", "decided_reason": reason})
    return Decision(
        action="rollback",
        reason=reason,
        n=requests,
        p_promote=state.p_promote if state else 1.0,
        q_rollback=state.q_rollback if state else 1.0,
        theta_hat=theta,
        state=new_state,
    )


def guard_config_from_shadow(
    d: np.ndarray | None,
    *,
    n_opt: int = DEFAULT_N_OPT,
    harm_n_opt: int = DEFAULT_HARM_N_OPT,
    alpha: float = 0.05,
    paired: bool = True,
    champion_abs_err: np.ndarray | None = None,
    candidate_abs_err: np.ndarray | None = None,
    winsor_quantiles: tuple[float, float] | None = DEFAULT_WINSOR_QUANTILES,
    min_shadow_n: int = 30,
    **overrides: object,
) -> GuardConfig:
    """Fix tau, tau_harm and the winsorizing bounds from shadow (or baseline) data, before the canary.

    Paired: sigma is the standard deviation of the winsorized differences d = a - b. Unpaired: pass both
    models'
    absolute errors; sigma^2 = var(a) + var(b) (so V = sigma^2 / n with n labels per arm) and the bounds are
    quantiles of the pooled absolute errors. ``overrides`` set any other GuardConfig field.
    """
    if paired:
        if d is None:
            raise InvalidInput(
                "paired guard: pass the shadow differences d = champion_abs_err - candidate_abs_err"
            )
        x = np.asarray(d, dtype=np.float64).ravel()
        x = x[np.isfinite(x)]
        if x.size < min_shadow_n:
            raise InvalidInput(
                f"shadow data: {x.size} finite differences, at least {min_shadow_n} needed for tau"
            )
        low = high = None
        if winsor_quantiles is not None:
            low, high = (float(v) for v in np.quantile(x, winsor_quantiles))
            x = np.clip(x, low, high)
        sigma = float(np.std(x, ddof=1))
    else:
        if champion_abs_err is None or candidate_abs_err is None:
            raise InvalidInput(
                "unpaired guard: pass champion_abs_err and candidate_abs_err from shadow or baseline"
            )
        a = _errors(champion_abs_err, "champion_abs_err")
        b = _errors(candidate_abs_err, "candidate_abs_err")
        if min(a.size, b.size) < min_shadow_n:
            raise InvalidInput(
                f"shadow data: {min(a.size, b.size)} errors per model, at least {min_shadow_n} needed"
            )
        low = high = None
        if winsor_quantiles is not None:
            low, high = (float(v) for v in np.quantile(np.concatenate([a, b]), winsor_quantiles))
            a, b = np.clip(a, low, high), np.clip(b, low, high)
        sigma = math.sqrt(float(np.var(a, ddof=1)) + float(np.var(b, ddof=1)))
    if not sigma > 0:
        raise InvalidInput("shadow data has zero variance: tau cannot be sized (are both models identical?)")
    return GuardConfig(
        alpha=alpha,
        tau=choose_tau(sigma, n_opt, alpha),
        tau_harm=choose_tau(sigma, harm_n_opt, alpha),
        paired=paired,
        winsor_low=low,
        winsor_high=high,
        **overrides,  # type: ignore[arg-type]
    )
