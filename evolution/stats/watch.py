"""The post-promotion harm test: statistics.md §2's rollback mirror alone, run after the promotion.

Once a candidate is promoted, the champion it replaced keeps shadow-scoring the same requests. The watch tests the
paired differences d = a - b with a = |y - ŷ_previous| and b = |y - ŷ_champion| (the new champion in the
candidate's place), so "harm" means exactly what it means in the canary: the new model's MAE is higher. Only the
mirror test runs: a promotion test or an N_max stop would end the watch early, and the watch's period is fixed in
advance (statistics.md §2: looking again and again stays valid because q is always-valid).
"""

from __future__ import annotations

import numpy as np

from evolution.stats.canary import estimate, observe
from evolution.stats.canary_models import Decision, GuardConfig, GuardState
from evolution.stats.msprt import log_lambda_minus, p_from_log_lambda


def observe_watch(
    state: GuardState, config: GuardConfig, previous_abs_err: np.ndarray, champion_abs_err: np.ndarray
) -> GuardState:
    """Add matured labels: the same requests scored by the previous champion and the champion."""
    return observe(state, config, previous_abs_err, champion_abs_err)


def harm_look(state: GuardState, config: GuardConfig) -> Decision:
    """One look of the harm test: update the running-minimum q; "rollback" at n ≥ min_rollback_n with q < alpha.

    Anything else is "continue", whatever p would say. A decided state stays decided.
    """
    n, theta, v = estimate(state, config)
    if state.decided == "rollback":
        return Decision(
            action="rollback",
            reason=state.decided_reason or "harm found",
            n=n,
            q_rollback=state.q_rollback,
            theta_hat=theta,
            state=state,
        )
    q = state.q_rollback
    if n >= 2:
        q = min(q, float(p_from_log_lambda(log_lambda_minus(theta, v, config.tau_harm))))
    harmful = n >= config.min_rollback_n and q < config.alpha
    reason = (
        f"harm test: always-valid q = {q:.3g} < {config.alpha} after {n} labels "
        f"(the new champion's MAE is higher by {-theta:.4g})"
        if harmful
        else f"{n} labels: q = {q:.3g}; no harm found"
    )
    new_state = state.model_copy(
        update={
            "q_rollback": q,
            "looks": state.looks + 1,
            "decided": "rollback" if harmful else None,
            "decided_reason": reason if harmful else None,
        }
    )
    return Decision(
        action="rollback" if harmful else "continue",
        reason=reason,
        n=n,
        q_rollback=q,
        theta_hat=theta,
        state=new_state,
    )
