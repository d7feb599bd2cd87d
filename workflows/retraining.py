"""RetrainingWorkflow (id ``retrain/{tenant}``): breaker → quota → train → validate → shadow → canary → approval.

Before anything runs, the tenant's circuit breaker and then its quota are checked; a closed gate ends the run at
once with outcome ``blocked`` and the code (CIRCUIT_OPEN or BLOCK_RETRAINING), audited and notified. The training
activity re-checks the quota before every attempt (retries included) and charges each attempt's measured time.
Every finished run reports its outcome to the circuit breaker (see evolution.registry.circuit_breaker for what
counts).

It runs past 450 lines because it is one lifecycle read top to bottom (gates, training, shadow, canary, approval
and every way each can end): split across modules, the order of the steps, which is what a replay checks, would
no longer show in one place.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar, overload

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType, WorkflowAlreadyStartedError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError
from temporalio.types import MethodAsyncSingleParam, MethodSyncSingleParam
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.approvals import ApprovalActivities
    from activities.breaker import BreakerActivities
    from activities.canary import CanaryActivities
    from activities.quality import QualityHoldActivities
    from activities.reconciler import ReconcilerActivities
    from activities.registry import RegistryActivities
    from activities.training import TrainingActivities
    from evolution.canary.watch_models import WatchInput, watch_workflow_id
    from evolution.contracts import (
        ApprovalRequest,
        ApprovalResponse,
        BreakerCheckIn,
        BreakerRecordIn,
        CurrentVersionIn,
        HoldCheckIn,
        LookIn,
        NotifyIn,
        PairsIn,
        PrincipalRef,
        PromoteIn,
        QuarantineIn,
        QuotaCheckIn,
        ReconcileIn,
        RegisterCandidateIn,
        RetrainingBlockIn,
        RetrainingInput,
        RetrainingResult,
        RetrainingStatus,
        ShadowOut,
        TicketCheckIn,
        TicketCheckOut,
        TrainIn,
        TransitionIn,
        ValidateIn,
    )
    from evolution.lifecycle import VersionView
    from evolution.stats.canary_models import Decision, GuardState

from workflows.policies import (
    HEARTBEAT_TIMEOUT,
    INTEGRITY_ERROR,
    LOOK_TIMEOUT,
    QUOTA_ERROR,
    REGISTRY_TIMEOUT,
    TRAINING_HEARTBEAT,
    TRAINING_RETRY,
    TRANSIENT_RETRY,
    VALIDATION_TIMEOUT,
)

WATCH_START_ATTEMPTS = 3
BLOCK_RETRAINING = "BLOCK_RETRAINING"
CIRCUIT_OPEN = "CIRCUIT_OPEN"
DATA_QUALITY_HOLD = "DATA_QUALITY_HOLD"
# Patch ids (workflow.patched): executions recorded before a change replay along the old path.
PATCH_GATES = "circuit-breaker"  # breaker check, audited blocks, quota re-checked per training attempt
PATCH_BREAKER_RECORD = "circuit-breaker-record"  # each finished run reports its outcome to the breaker
PATCH_OUTCOME_METRICS = "record-outcome-metrics"  # each finished run records its outcome in the metrics
PATCH_APPROVAL_TICKETS = "approval-tickets"  # a decision needs a signed ticket, checked by an activity
PATCH_RECONCILE = "reconcile-stranded-candidates"  # first fail what runs ended from outside left behind
# One ticket check at a time, so that a replay sent while the first check runs finds the nonce spent.
PATCH_SERIAL_TICKET_CHECKS = "serial-ticket-checks"
# A promotion after a canary starts the post-promotion watch of the new champion (watch/{tenant}/{model}).
PATCH_POST_PROMOTION_WATCH = "post-promotion-watch"
PATCH_QUALITY_HOLD = (
    "data-quality-hold"  # a drift-started run waits while its window is held for data quality
)


@dataclass(frozen=True)
class _Decided:
    """The decision a verified ticket (or, replaying runs from before tickets, the caller's claims) took."""

    decision: str
    approver: PrincipalRef
    reason: str


P = TypeVar("P")
R = TypeVar("R")


def retraining_workflow_id(tenant_id: str) -> str:
    return f"retrain/{tenant_id}"


def _error_type(error: BaseException) -> str | None:
    cause = error.cause if isinstance(error, ActivityError) else error
    return cause.type if isinstance(cause, ApplicationError) else None


def _error_message(error: BaseException) -> str:
    cause = error.cause if isinstance(error, ActivityError) and error.cause else error
    # An ApplicationError's str() starts with its type, which every caller here names already: the message alone
    # ("failed: TrainingFailed: TrainingFailed: …" otherwise, in the status, the audit and the CLI).
    return cause.message if isinstance(cause, ApplicationError) else str(cause)


@workflow.defn(name="RetrainingWorkflow")
class RetrainingWorkflow:
    def __init__(self) -> None:
        self._status = RetrainingStatus()
        self._input: RetrainingInput | None = None
        self._decision: _Decided | None = None
        self._approval_answer: ApprovalResponse | None = None
        self._version: VersionView | None = None
        self._had_canary = False  # only a promotion after a canary is watched: the watch reuses its guard
        self._used_nonces: set[str] = set()
        # Two checks of one ticket in flight at once would both find its nonce unused (a signal and an update sent
        # together): the lock makes the second wait until the first has spent it.
        self._ticket_check_lock = asyncio.Lock()

    # --------------------------------------------------------------- queries, updates and signals
    @workflow.query(name="status")
    def status(self) -> RetrainingStatus:
        return self._status

    @workflow.update(name="approval")
    async def approval(self, request: ApprovalRequest) -> ApprovalResponse:
        """Approve or reject with a ticket and wait for the outcome (the CLI and the dashboard use this)."""
        if not workflow.patched(PATCH_APPROVAL_TICKETS):
            # Replays of runs recorded before tickets: the claims decided (the validator checked the role).
            self._decision = _Decided(
                decision=request.decision or "",
                approver=PrincipalRef(
                    user=request.user or "", role=request.role or "", tenant_id=request.tenant_id or ""
                ),
                reason=request.reason,
            )
            await workflow.wait_condition(lambda: self._approval_answer is not None)
            assert self._approval_answer is not None
            return self._approval_answer
        return await self._consider("update", request)

    @approval.validator
    def validate_approval(self, request: ApprovalRequest) -> None:
        # Refused here, an update never enters the history: only approvals that cannot decide anything now. Whether
        # one may decide is the ticket check's, which audits every refusal.
        if self._input is None or not self._status.awaiting_approval:
            raise ValueError(f"nothing is waiting for approval (phase: {self._status.phase})")
        if self._decision is not None:
            raise ValueError("a decision was already taken for this candidate")

    @workflow.signal(name="approve")
    async def approve(self, request: ApprovalRequest) -> None:
        """Approve with a ticket, for plain Temporal tooling and other SDKs (``evolution approve --ticket-only``)."""
        await self._consider("approve", request)

    @workflow.signal(name="reject")
    async def reject(self, request: ApprovalRequest) -> None:
        """Reject with a ticket, for plain Temporal tooling and other SDKs (``evolution reject --ticket-only``)."""
        await self._consider("reject", request)

    async def _consider(
        self, channel: Literal["update", "approve", "reject"], request: ApprovalRequest
    ) -> ApprovalResponse:
        """Decide only on a ticket the check accepts; a refusal is audited there and shows in the status."""
        await workflow.wait_condition(lambda: self._input is not None)
        if not workflow.patched(PATCH_SERIAL_TICKET_CHECKS):
            return await self._check_and_decide(channel, request)
        async with self._ticket_check_lock:
            checked = await self._check_ticket(channel, request)
        return await self._decide(channel, request, checked)

    async def _check_and_decide(
        self, channel: Literal["update", "approve", "reject"], request: ApprovalRequest
    ) -> ApprovalResponse:
        return await self._decide(channel, request, await self._check_ticket(channel, request))

    async def _check_ticket(
        self, channel: Literal["update", "approve", "reject"], request: ApprovalRequest
    ) -> TicketCheckOut:
        assert self._input is not None
        info = workflow.info()
        check = await self._activity(
            ApprovalActivities.check_approval_ticket,
            TicketCheckIn(
                channel=channel,
                request=request,
                tenant_id=self._input.tenant_id,
                model_name=self._input.model_name,
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                candidate_version_id=self._version.id if self._version else None,
                waiting=self._status.awaiting_approval and self._decision is None,
                used_nonces=sorted(self._used_nonces),
            ),
        )
        if check.nonce:
            self._used_nonces.add(check.nonce)
        return check

    async def _decide(
        self, channel: Literal["update", "approve", "reject"], request: ApprovalRequest, check: TicketCheckOut
    ) -> ApprovalResponse:
        refusal = check.reason if not check.accepted else None
        if refusal is None and self._decision is not None:  # two tickets checked at once: the first decides
            refusal = "a decision was already taken for this candidate"
        if refusal is not None or check.decision is None or check.approver is None:
            self._status.refused_approvals += 1
            self._status.last_refusal = f"{channel}: {refusal}"
            return ApprovalResponse(
                accepted=False,
                decision=check.decision or request.decision or channel,
                final_state=self._status.state,
                message=f"refused: {refusal}",
            )
        self._decision = _Decided(decision=check.decision, approver=check.approver, reason=check.note)
        await workflow.wait_condition(lambda: self._approval_answer is not None)
        assert self._approval_answer is not None
        return self._approval_answer

    # --------------------------------------------------------------- the run
    @workflow.run
    async def run(self, inp: RetrainingInput) -> RetrainingResult:
        try:
            result = await self._run(inp)
        except ActivityError as error:
            # A run that ends in an error is a technical failure for the circuit breaker.
            if workflow.patched(PATCH_BREAKER_RECORD):
                await self._record_breaker(
                    "failed", f"{_error_type(error) or 'error'}: {_error_message(error)}"
                )
            raise
        if workflow.patched(PATCH_BREAKER_RECORD):
            await self._record_breaker(result.outcome, result.reason)
        if workflow.patched(PATCH_OUTCOME_METRICS):
            await self._activity(RegistryActivities.record_outcome, result)
        # Let an approval update deliver its answer before the workflow completes.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _run(self, inp: RetrainingInput) -> RetrainingResult:
        self._input = inp
        info = workflow.info()
        self._status.workflow_id, self._status.run_id = info.workflow_id, info.run_id
        self._status.model_name = inp.model_name
        if workflow.patched(PATCH_RECONCILE):
            # A run terminated from outside left its candidate in SHADOW or CANARY: it would block this one's.
            await self._activity(
                ReconcilerActivities.reconcile_candidates,
                ReconcileIn(tenant_id=inp.tenant_id, except_run=info.run_id),
            )
        if inp.snapshot_id is not None and workflow.patched(PATCH_QUALITY_HOLD):
            # A window whose data-quality checks fired is not trained on until an admin accepts it.
            held = await self._await_window_acceptance(inp, inp.snapshot_id)
            if held is not None:
                return held
        gates = workflow.patched(PATCH_GATES)
        if gates:
            breaker = await self._activity(
                BreakerActivities.check_circuit_breaker, BreakerCheckIn(tenant_id=inp.tenant_id)
            )
            if not breaker.allowed:
                return await self._blocked(
                    CIRCUIT_OPEN, breaker.reason or f"{CIRCUIT_OPEN}: retraining disabled"
                )
        quota = await self._activity(RegistryActivities.check_quota, QuotaCheckIn(tenant_id=inp.tenant_id))
        if not quota.allowed:
            if gates:
                return await self._blocked(
                    BLOCK_RETRAINING, quota.reason or f"{BLOCK_RETRAINING}: quota exceeded"
                )
            await self._notify(
                "warning", "retraining.blocked", f"Retraining of {inp.model_name} blocked: {quota.reason}"
            )
            return self._finish("blocked", quota.reason or "quota exceeded")

        self._set("registering")
        self._version = await self._activity(
            RegistryActivities.register_candidate,
            RegisterCandidateIn(
                tenant_id=inp.tenant_id,
                model_name=inp.model_name,
                request_id=self._rid("register"),
                reason=f"{inp.trigger}: {inp.reason}".strip(": ")
                + (f" (requested by {inp.requested_by.user})" if inp.requested_by else ""),
            ),
        )
        champion = (
            await self._activity(
                RegistryActivities.current_version,
                CurrentVersionIn(tenant_id=inp.tenant_id, model_name=inp.model_name, state="CHAMPION"),
            )
        ).version
        try:
            return await self._lifecycle(inp, champion)
        except ActivityError as error:
            if _error_type(error) == QUOTA_ERROR and workflow.patched(PATCH_GATES):
                # The quota ran out between the start and a training attempt: the candidate never trained.
                reason = _error_message(error)
                await self._fail(reason)
                return await self._blocked(BLOCK_RETRAINING, reason)
            if _error_type(error) == INTEGRITY_ERROR:
                await self._quarantine(_error_message(error))
                return self._finish("quarantined", _error_message(error))
            if isinstance(error.cause, ActivityTimeoutError) and self._status.phase == "training":
                # SLO: a retraining over its limit is cancelled (the compute job is killed) and alerts. A training
                # whose worker stopped heartbeating on every attempt (killed, starved) is another failure: say so.
                if error.cause.type == TimeoutType.HEARTBEAT:
                    kind = "retraining.worker_lost"
                    reason = (
                        f"training lost its worker on each of its {TRAINING_RETRY.maximum_attempts} attempts "
                        "(no heartbeat in time) and was given up"
                    )
                else:
                    kind = "slo.retraining_duration"
                    reason = f"training exceeded its {inp.timing.training_timeout_s / 3600:g} h limit and was cancelled"
                await self._notify("critical", kind, f"Retraining of {inp.model_name}: {reason}")
                await self._fail(reason)
                return self._finish("failed", reason)
            await self._fail(f"{_error_type(error) or 'error'}: {_error_message(error)}")
            return self._finish("failed", _error_message(error), error_type=_error_type(error))

    async def _await_window_acceptance(
        self, inp: RetrainingInput, snapshot_id: str
    ) -> RetrainingResult | None:
        """Wait, looking every ``look_interval_s``, until no window training would read is held for data quality.

        None once none is (the run goes on); a ``blocked`` result (DATA_QUALITY_HOLD) when no admin accepted the
        window within the approval deadline. Nothing is registered or trained while it waits.
        """
        deadline = workflow.now() + timedelta(seconds=inp.timing.approval_timeout_s)
        told = False
        while True:
            hold = await self._activity(
                QualityHoldActivities.check_quality_hold,
                HoldCheckIn(tenant_id=inp.tenant_id, snapshot_id=snapshot_id),
            )
            self._status.held_windows = hold.held
            if not hold.held:
                if told:
                    self._set("starting", "the held window was accepted")
                return None
            self._set("awaiting_snapshot_acceptance", hold.reason)
            if not told:
                await self._notify(
                    "warning",
                    "retraining.held_for_data_quality",
                    f"Retraining of {inp.model_name} waits: {hold.reason}"[:900],
                )
                told = True
            if workflow.now() >= deadline:
                return await self._blocked(
                    DATA_QUALITY_HOLD, f"{DATA_QUALITY_HOLD}: no admin accepted in time: {hold.reason}"[:900]
                )
            await workflow.sleep(timedelta(seconds=inp.timing.look_interval_s))

    async def _lifecycle(self, inp: RetrainingInput, champion: VersionView | None) -> RetrainingResult:
        await self._move("TRAINING", "training started")
        self._set("training")
        assert self._version is not None
        trained = await workflow.execute_activity_method(
            TrainingActivities.train_candidate,
            TrainIn(
                tenant_id=inp.tenant_id,
                model_name=inp.model_name,
                version_id=self._version.id,
                seed=inp.seed,
                run_id=self._rid("train"),
            ),
            # The SLO bounds the whole retraining, retries included.
            start_to_close_timeout=timedelta(seconds=inp.timing.training_timeout_s),
            schedule_to_close_timeout=timedelta(seconds=inp.timing.training_timeout_s),
            heartbeat_timeout=self._step_timeout(TRAINING_HEARTBEAT),
            retry_policy=TRAINING_RETRY,
        )
        self._set("validating")
        validation = await self._activity(
            TrainingActivities.validate_candidate,
            ValidateIn(
                tenant_id=inp.tenant_id,
                model_name=inp.model_name,
                candidate_version_id=self._version.id,
                signed_manifest=trained.signed_manifest,
                model_hash=trained.model_hash,
            ),
            timeout=VALIDATION_TIMEOUT,
        )
        metrics: dict[str, Any] = {**trained.metrics, "validation": validation.model_dump()}
        if not validation.passed:
            await self._fail(f"validation failed: {validation.reason}")
            return self._finish("validation_failed", validation.reason)
        await self._move(
            "VALIDATED",
            validation.reason,
            changes={
                "model_hash": trained.model_hash,
                "manifest": trained.signed_manifest,
                "metrics": metrics,
                "dataset_snapshot_id": trained.snapshot_id,
            },
        )
        await self._move("SHADOW", "shadow scoring started")

        if champion is None:
            decision = Decision(action="promote", reason="bootstrap: no champion to compare against", n=0)
        else:
            decision_or_none = await self._shadow_and_canary(inp)
            if decision_or_none.action != "promote":
                await self._fail(
                    f"canary: {decision_or_none.reason}",
                    details={"guard": decision_or_none.model_dump(exclude={"state"})},
                )
                outcome = (
                    "rolled_back" if decision_or_none.action == "rollback" else "no_significant_difference"
                )
                await self._notify(
                    "warning",
                    f"canary.{outcome}",
                    f"Candidate {self._label()} not promoted: {decision_or_none.reason}",
                )
                return self._finish(outcome, decision_or_none.reason, decision_or_none)
            decision = decision_or_none
        if self._status.state == "SHADOW":
            await self._move("CANARY", decision.reason)
        self._status.guard = decision
        return await self._await_approval(inp, decision)

    async def _shadow_and_canary(self, inp: RetrainingInput) -> Decision:
        assert self._version is not None
        timing = inp.timing
        self._set("shadow")
        self._status.shadow_pairs_needed = timing.shadow_min_pairs
        cursor = 0
        started = workflow.now()
        shadow = ShadowOut(pairs=0, cursor=0, guard_config=None)
        pairs = 0
        while True:
            shadow = await self._activity(
                CanaryActivities.collect_shadow,
                PairsIn(
                    tenant_id=inp.tenant_id,
                    model_name=inp.model_name,
                    candidate_version_id=self._version.id,
                    cursor=cursor,
                    min_pairs=timing.shadow_min_pairs,
                ),
                timeout=LOOK_TIMEOUT,
            )
            pairs = shadow.pairs
            self._status.shadow_pairs = pairs
            if shadow.guard_config is not None:
                cursor = shadow.cursor
                self._had_canary = True
                break
            if (workflow.now() - started).total_seconds() > timing.shadow_max_s:
                return Decision(
                    action="no_significant_difference",
                    reason=f"shadow phase collected only {pairs} labelled pairs",
                    n=pairs,
                )
            await workflow.sleep(timedelta(seconds=timing.look_interval_s))

        await self._move(
            "CANARY",
            f"tau fixed from {pairs} shadow pairs",
            details={"guard_config": shadow.guard_config.model_dump()},
        )
        self._set("canary")
        state = GuardState()
        canary_started = workflow.now()
        while True:
            await workflow.sleep(timedelta(seconds=timing.look_interval_s))
            look = await self._activity(
                CanaryActivities.canary_look,
                LookIn(
                    tenant_id=inp.tenant_id,
                    model_name=inp.model_name,
                    candidate_version_id=self._version.id,
                    cursor=cursor,
                    config=shadow.guard_config,
                    state=state,
                    elapsed_s=(workflow.now() - canary_started).total_seconds(),
                    window_s=timing.rollout_window_s,
                ),
                timeout=LOOK_TIMEOUT,
            )
            cursor, state = look.cursor, look.state
            self._status.guard = look.decision
            if look.decision.action != "continue":
                return look.decision
            if (workflow.now() - canary_started).total_seconds() > timing.rollout_window_s:
                return Decision(
                    action="rollback",
                    reason=f"rollout window of {timing.rollout_window_s:.0f}s ran out",
                    n=look.decision.n,
                    p_promote=look.decision.p_promote,
                    q_rollback=look.decision.q_rollback,
                    theta_hat=look.decision.theta_hat,
                )

    async def _await_approval(self, inp: RetrainingInput, decision: Decision) -> RetrainingResult:
        self._set("awaiting_approval", f"guard: {decision.reason}")
        self._status.awaiting_approval = True
        await self._notify(
            "info",
            "approval.requested",
            f"Candidate {self._label()} of {inp.model_name} passed the canary ({decision.reason}); approval needed",
        )
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None, timeout=timedelta(seconds=inp.timing.approval_timeout_s)
            )
        except TimeoutError:
            self._status.awaiting_approval = False
            await self._fail("approval deadline passed")
            return self._finish("approval_timeout", "approval deadline passed", decision)
        self._status.awaiting_approval = False
        request = self._decision
        assert request is not None and self._version is not None
        approver = request.approver
        approved = request.decision == "approve"
        step = "promote" if approved else "reject"
        try:
            result = await self._activity(
                RegistryActivities.promote if approved else RegistryActivities.reject,
                PromoteIn(
                    version_id=self._version.id,
                    expected_version=self._version.lock_version,
                    request_id=self._rid(step),
                    approver=approver,
                    reason=request.reason or ("approved" if approved else "rejected"),
                ),
            )
        except ActivityError as error:
            self._approval_answer = ApprovalResponse(
                accepted=False,
                decision=request.decision,
                final_state=self._status.state,
                message=_error_message(error),
            )
            raise
        self._version = result.result.version
        self._status.state = self._version.state
        outcome = "promoted" if approved else "rejected"
        reason = (
            f"approved by {approver.user}" if approved else f"rejected by {approver.user}: {request.reason}"
        )
        self._approval_answer = ApprovalResponse(
            accepted=True, decision=request.decision, final_state=self._version.state, message=reason
        )
        await self._notify(
            "info",
            f"candidate.{outcome}",
            f"Candidate {self._label()} of {inp.model_name} {outcome}: {reason}",
        )
        demoted = result.result.demoted
        if approved and demoted is not None and workflow.patched(PATCH_POST_PROMOTION_WATCH):
            await self._start_watch(inp, demoted)
        return self._finish(outcome, reason, decision)  # type: ignore[arg-type]

    async def _start_watch(self, inp: RetrainingInput, previous: VersionView) -> None:
        """Start watching the new champion against ``previous`` (a child that outlives this run)."""
        assert self._version is not None
        if not inp.timing.watch.enabled or not self._had_canary:
            return
        watch = WatchInput(
            tenant_id=inp.tenant_id,
            model_name=inp.model_name,
            champion_version_id=self._version.id,
            previous_version_id=previous.id,
            policy=inp.timing.watch,
        )
        for _ in range(WATCH_START_ATTEMPTS):
            try:
                await workflow.start_child_workflow(
                    "PostPromotionWatch",
                    watch,
                    id=watch_workflow_id(inp.tenant_id, inp.model_name),
                    parent_close_policy=ParentClosePolicy.ABANDON,
                )
                return
            except WorkflowAlreadyStartedError:
                # The previous champion's watch ends at its next look (its champion changed): wait for it.
                await workflow.sleep(timedelta(seconds=inp.timing.watch.look_interval_s))
        await self._notify(
            "warning",
            "watch.not_started",
            f"{inp.model_name}: the post-promotion watch of {self._label()} could not start: an older watch of "
            "the model is still running",
        )

    # --------------------------------------------------------------- helpers
    @overload
    async def _activity(
        self, activity: MethodAsyncSingleParam[Any, P, R], arg: P, timeout: timedelta = REGISTRY_TIMEOUT
    ) -> R: ...

    @overload
    async def _activity(
        self, activity: MethodSyncSingleParam[Any, P, R], arg: P, timeout: timedelta = REGISTRY_TIMEOUT
    ) -> R: ...

    async def _activity(self, activity: Any, arg: Any, timeout: timedelta = REGISTRY_TIMEOUT) -> Any:
        """A step: the activity's own result type, the transient retry policy, capped timeouts."""
        return await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=self._step_timeout(timeout),
            heartbeat_timeout=self._step_timeout(HEARTBEAT_TIMEOUT),
            retry_policy=TRANSIENT_RETRY,
        )

    def _step_timeout(self, default: timedelta) -> timedelta:
        # A step whose worker was killed is retried once its heartbeat timeout runs out (every activity heartbeats);
        # RolloutTiming.step_timeout_s caps that, and the start-to-close timeout, further for tests.
        cap = self._input.timing.step_timeout_s if self._input is not None else None
        return min(default, timedelta(seconds=cap)) if cap else default

    def _rid(self, step: str) -> str:
        # Deterministic per workflow run and step: activity retries reuse it, so their effect is applied once.
        info = workflow.info()
        return f"{info.workflow_id}/{info.run_id}/{step}"

    def _set(self, phase: str, message: str = "") -> None:
        self._status.phase = phase
        self._status.message = message

    def _label(self) -> str:
        return f"v{self._version.number}" if self._version else "?"

    async def _move(
        self,
        state: str,
        reason: str,
        changes: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        assert self._version is not None
        out = await self._activity(
            RegistryActivities.transition,
            TransitionIn(
                tenant_id=self._version.tenant_id,
                version_id=self._version.id,
                to_state=state,
                expected_version=self._version.lock_version,
                request_id=self._rid(f"to-{state}"),
                reason=reason,
                changes=changes,
                details=details or {},
            ),
        )
        self._version = out.result.version
        self._status.version_id = self._version.id
        self._status.version_number = self._version.number
        self._status.state = self._version.state

    async def _fail(self, reason: str, details: dict[str, Any] | None = None) -> None:
        if self._version is None or self._status.state in ("FAILED", "QUARANTINED"):
            return
        await self._move("FAILED", reason, details=details)

    async def _quarantine(self, reason: str) -> None:
        if self._version is None:
            return
        out = await self._activity(
            RegistryActivities.quarantine,
            QuarantineIn(
                tenant_id=self._version.tenant_id,
                version_id=self._version.id,
                request_id=self._rid("quarantine"),
                reason=reason,
            ),
        )
        self._version = out.result.version
        self._status.state = self._version.state
        await self._notify(
            "critical", "integrity.quarantined", f"Candidate {self._label()} quarantined: {reason}"
        )

    async def _notify(self, severity: str, kind: str, subject: str) -> None:
        assert self._input is not None
        await self._activity(
            RegistryActivities.notify,
            NotifyIn(tenant_id=self._input.tenant_id, severity=severity, kind=kind, subject=subject),  # type: ignore[arg-type]
        )

    async def _blocked(self, code: str, reason: str) -> RetrainingResult:
        """End a run that may not train: audited once (by run id) and notified, outcome ``blocked``."""
        assert self._input is not None
        await self._activity(
            BreakerActivities.record_retraining_block,
            RetrainingBlockIn(
                tenant_id=self._input.tenant_id,
                model_name=self._input.model_name,
                code=code,  # type: ignore[arg-type]
                reason=reason,
                request_id=f"{workflow.info().run_id}/blocked",
            ),
        )
        return self._finish("blocked", reason, blocked_by=code)

    async def _record_breaker(self, outcome: str, reason: str) -> None:
        assert self._input is not None
        try:
            await self._activity(
                BreakerActivities.record_breaker_outcome,
                BreakerRecordIn(
                    tenant_id=self._input.tenant_id,
                    model_name=self._input.model_name,
                    run_id=workflow.info().run_id,
                    outcome=outcome,  # type: ignore[arg-type]
                    reason=reason[:500],
                ),
            )
        except ActivityError as error:
            # The retraining's own result matters more than the bookkeeping: report it, keep the result.
            workflow.logger.error("could not record the outcome with the circuit breaker: %s", error)

    def _finish(
        self,
        outcome: str,
        reason: str,
        decision: Decision | None = None,
        blocked_by: str | None = None,
        error_type: str | None = None,
    ) -> RetrainingResult:
        assert self._input is not None
        # The status (what `evolution status` shows) names a failed step's error type, so its next step is known.
        self._set("finished", f"{outcome}: {error_type}: {reason}" if error_type else f"{outcome}: {reason}")
        return RetrainingResult(
            tenant_id=self._input.tenant_id,
            model_name=self._input.model_name,
            version_id=self._version.id if self._version else None,
            final_state=self._version.state if self._version else None,
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
            guard=decision.model_copy(update={"state": None}) if decision else None,
            blocked_by=blocked_by,  # type: ignore[arg-type]
        )
