"""SLO guards that need no server: the rollout window rolls a canary back; outcomes map to bounded metric labels."""

from __future__ import annotations

from evolution.canary.service import CanaryService
from evolution.contracts import RetrainingResult
from evolution.data.outcomes import PairedErrors
from evolution.observability import metrics
from evolution.stats.canary import GuardConfig, GuardState


class NoOutcomes:
    """No labelled outcomes yet: the canary has seen nothing when its window runs out."""

    def paired_errors(self, *args: object, **kwargs: object) -> PairedErrors:
        return PairedErrors(champion_abs_errors=[], candidate_abs_errors=[], cursor=0, pairs=0)

    def candidate_health(self, *args: object) -> tuple[int, int]:
        return (10, 0)


def test_a_canary_past_its_rollout_window_is_rolled_back() -> None:
    service = CanaryService(NoOutcomes())  # type: ignore[arg-type]
    config = GuardConfig(tau=0.1, tau_harm=0.3)
    within = service.look("acme", "yield", "mv-1", 0, config, GuardState(), elapsed_s=10.0, window_s=3600.0)
    assert within.decision.action == "continue"
    over = service.look("acme", "yield", "mv-1", 0, config, GuardState(), elapsed_s=3601.0, window_s=3600.0)
    assert over.decision.action == "rollback" and "window" in over.decision.reason


def test_invalid_candidate_predictions_roll_back_at_once() -> None:
    class Broken(NoOutcomes):
        def candidate_health(self, *args: object) -> tuple[int, int]:
            return (10, 3)

    service = CanaryService(Broken())  # type: ignore[arg-type]
    look = service.look(
        "acme", "yield", "mv-1", 0, GuardConfig(tau=0.1, tau_harm=0.3), GuardState(), 5.0, 3600.0
    )
    assert look.decision.action == "rollback" and "invalid" in look.decision.reason


def test_rollback_reasons_are_a_bounded_label_set() -> None:
    assert metrics.rollback_reason("rollout window of 3600s ran out") == "rollout_window"
    assert metrics.rollback_reason("guardrail: 3 invalid or NaN predictions") == "guardrail"
    assert metrics.rollback_reason("always-valid q = 0.01 < 0.05: candidate worse") == "harm"
    before = metrics.ROLLBACKS.labels("acme", "harm")._value.get()
    metrics.record_retraining_outcome(
        RetrainingResult(
            tenant_id="acme",
            model_name="yield",
            version_id="mv-1",
            final_state="FAILED",
            outcome="rolled_back",
            reason="candidate worse",
        )
    )
    assert metrics.ROLLBACKS.labels("acme", "harm")._value.get() == before + 1
