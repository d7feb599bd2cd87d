"""Governance: model versions and their history, the live retraining, and approve / reject / rollback."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import auth, governance, tables
from evolution.contracts import ApprovalDecision
from evolution.errors import EvolutionError
from evolution.security import Role

page = auth.page_context()
services, tenant, principal = page.services, page.tenant, page.principal
role = principal.role

st.title(f"Governance · {tenant}")
intact, chain_text = governance.chain_status(services, principal, tenant)
(st.success if intact else st.error)(chain_text)

breaker = governance.breaker_warning(services, principal, tenant)
if breaker:
    st.error(f"**Retraining disabled by the circuit breaker.** {breaker}")

st.subheader("Model versions")
tables.show(
    governance.version_rows(services, principal, tenant),
    wrap=["why"],
    help={
        "when (UTC)": "When the version last changed state (UTC, 24-hour clock).",
        "holdout MAE": "Mean absolute error on the held-out rows at training time, in the target's unit.",
        "model hash": "The first characters of the signed model's SHA-256; the full hashes are listed below.",
        "why": "The reason recorded with the last state change.",
    },
)
tables.full_values("Full model hashes", governance.version_hashes(services, principal, tenant))

failures = governance.failed_candidates(services, principal, tenant)
if failures:
    st.subheader("Failed candidates")
    for failure in failures:
        with st.expander(f"{failure.model} v{failure.number} · {failure.at} · {failure.headline}"):
            st.code(failure.reason, language=None)  # a trainer's last output lines keep their line breaks

watches = governance.watch_rows(services, principal, tenant)
if watches:
    st.subheader("Post-promotion watch")
    st.caption(
        "After a promotion the previous champion keeps scoring the same requests; the harm test (always-valid q) "
        "rolls the new champion back if its error is significantly higher. A watch ends kept once both its days "
        "and its labels are reached."
    )
    tables.show(
        watches,
        wrap=["why"],
        help={
            "days": "Days watched so far (until the end for a finished watch).",
            "of days": "Days the watch lasts at least.",
            "labels": "Labelled requests (outcomes arrived) compared so far.",
            "of labels": "Labelled requests the watch needs at least.",
            "harm q (worse)": "Always-valid p-value of 'the new champion is worse'; below the level: roll back.",
        },
    )

st.subheader("Live retraining")
try:
    status = governance.live_status(tenant)
except EvolutionError as unreachable:
    status = None
    st.warning(f"The workflow engine cannot be reached: {unreachable}")
if status is None:
    st.write("No retraining has run for this tenant yet.")
else:
    st.write(f"Phase **{status.phase}** · version v{status.version_number} · state **{status.state}**")
    if status.phase == "finished" and status.message:
        st.caption("How it ended")
        st.code(status.message, language=None)
    if status.refused_approvals:
        st.warning(
            f"{status.refused_approvals} approval(s) refused by the ticket check (audited); last: {status.last_refusal}"
        )
    if status.shadow_pairs:
        st.write(f"Shadow phase collected {status.shadow_pairs} labelled pairs (τ fixed from them).")
    outcome = governance.canary_outcome(status)
    if outcome is not None:
        st.write(f"**Canary outcome.** {outcome.sentence}")
        if outcome.labels:
            st.caption(f"Guard: {outcome.reason}")
    progress = governance.canary_progress(status)
    if progress is not None:
        st.caption(
            "The canary's sequential test, live (labelled requests: forecasts whose outcome has arrived)."
        )
        cols = st.columns(4)
        cols[0].metric(
            "Labels collected",
            f"{progress.labels:,}",
            help="Labelled requests the test has seen so far (count).",
        )
        cols[1].metric(
            "Always-valid p (better)",
            f"{progress.p_value:.3g}",
            help=f"Probability-scale evidence that the candidate is better. {progress.promote_rule}.",
        )
        cols[2].metric(
            "Always-valid q (worse)",
            f"{progress.q_value:.3g}",
            help=f"Probability-scale evidence that the candidate is worse. {progress.rollback_rule}.",
        )
        cols[3].metric(
            "Labels until promotion can be tested",
            f"{progress.labels_to_promotion_test:,}",
            help="Labelled requests still needed before the promotion test may decide (count).",
        )
        st.caption(f"Guard: {progress.reason}")
    if status.awaiting_approval:
        st.info("The candidate passed its canary and waits for a manager's decision.")
        if role in (Role.MANAGER, Role.ADMIN):
            reason = st.text_input("Reason (recorded in the audit log)", key="approval_reason")
            approve, reject = st.columns(2)
            choices: tuple[tuple[Any, ApprovalDecision, str], ...] = (
                (approve, "approve", "Approve"),
                (reject, "reject", "Reject"),
            )
            for column, decision, label in choices:
                if column.button(
                    label,
                    key=f"decision_{decision}",
                    type="primary" if decision == "approve" else "secondary",
                ):
                    try:
                        answer = governance.decide(services, principal, tenant, decision, reason)
                    except EvolutionError as refused:
                        st.error(str(refused))
                    else:
                        if answer.accepted:
                            st.success(f"{label}d: {answer.message} → {answer.final_state}")
                        else:
                            st.error(f"{label} {answer.message}")

if role == Role.ADMIN:
    st.subheader("Administration")
    models = governance.model_names(services, principal, tenant)
    if models:
        model = st.selectbox("Model", models, key="admin_model")
        admin_reason = st.text_input("Reason (required, recorded in the audit log)", key="admin_reason")
        rollback, reset = st.columns(2)
        if rollback.button("Force rollback to the previous champion", key="force_rollback"):
            try:
                result = governance.force_rollback(services, principal, tenant, model, admin_reason)
            except EvolutionError as refused:
                st.error(str(refused))
            else:
                st.success(f"{model} v{result.version.number} is CHAMPION again")
        if reset.button("Reset the drift baseline to the latest window", key="reset_baseline"):
            try:
                override = governance.reset_baseline(services, principal, tenant, model, admin_reason)
            except EvolutionError as refused:
                st.error(str(refused))
            else:
                st.success(f"Baseline reset from snapshot {override.snapshot_id}, signed")

st.subheader("Audit history")
st.caption("The latest 50 entries, newest first; times in UTC (24-hour clock).")
tables.show(
    governance.audit_rows(services, principal, tenant),
    wrap=["reason"],
    help={
        "entry hash": "The first characters of the entry's chained SHA-256; the full hashes are listed below."
    },
)
tables.full_values("Full entry hashes", governance.audit_hashes(services, principal, tenant))
