"""Shadow and canary looks: join outcomes to paired predictions and feed the sequential guard."""

from __future__ import annotations

import numpy as np

from evolution.contracts import LookOut, ShadowOut
from evolution.data.outcomes import OutcomeJoiner
from evolution.observability import metrics
from evolution.security import Principal
from evolution.stats.canary import (
    GuardConfig,
    GuardState,
    check_guardrails,
    decide,
    guard_config_from_shadow,
    observe,
)

SHADOW_ROLE = "shadow"
CANARY_ROLE = "canary"
WATCH_ROLE = (
    "watch"  # after a promotion: the champion served, the previous champion scored (a post-promotion watch)
)


class CanaryService:
    def __init__(self, outcomes: OutcomeJoiner) -> None:
        self._outcomes = outcomes

    def collect_shadow(self, tenant_id: str, candidate_version_id: str, min_pairs: int) -> ShadowOut:
        """Once enough shadow pairs have matured, fix tau and the winsorizing bounds from them (never from canary data)."""
        pairs = self._outcomes.paired_errors(
            Principal.system(tenant_id), tenant_id, candidate_version_id, 0, [SHADOW_ROLE]
        )
        if pairs.pairs < min_pairs:
            return ShadowOut(pairs=pairs.pairs, cursor=pairs.cursor, guard_config=None)
        d = np.asarray(pairs.champion_abs_errors) - np.asarray(pairs.candidate_abs_errors)
        return ShadowOut(pairs=pairs.pairs, cursor=pairs.cursor, guard_config=guard_config_from_shadow(d))

    def look(
        self,
        tenant_id: str,
        model_name: str,
        candidate_version_id: str,
        cursor: int,
        config: GuardConfig,
        state: GuardState,
        elapsed_s: float,
        window_s: float,
    ) -> LookOut:
        pairs = self._outcomes.paired_errors(
            Principal.system(tenant_id), tenant_id, candidate_version_id, cursor, [CANARY_ROLE]
        )
        champion = np.asarray(pairs.champion_abs_errors, dtype=float)
        candidate = np.asarray(pairs.candidate_abs_errors, dtype=float)
        scored, invalid = self._outcomes.candidate_health(tenant_id, candidate_version_id)
        guardrail = check_guardrails(
            config,
            invalid_predictions=invalid,
            errors=0,
            requests=max(scored, 1),
            p99_latency_ms=None,
            elapsed_s=elapsed_s,
            window_s=window_s,
        )
        metrics.ROLLOUT_WINDOW.labels(tenant_id, model_name).set(elapsed_s)
        if guardrail is not None:
            return LookOut(cursor=pairs.cursor, state=state, decision=guardrail)
        if len(champion):
            state = observe(state, config, champion, candidate)
        decision = decide(state, config)
        metrics.CANARY_LABELS.labels(tenant_id, model_name).set(decision.n)
        metrics.CANARY_P_VALUE.labels(tenant_id, model_name).set(decision.p_promote)
        return LookOut(
            cursor=pairs.cursor,
            state=decision.state or state,
            decision=decision.model_copy(update={"state": None}),
        )
