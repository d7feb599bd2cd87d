"""What `evolution demo` tells: the canary's decision and the traffic, each worded once.

The progress line that reports the canary's decision and the summary's canary line are made by
:func:`decision_text` from the same :class:`~evolution.stats.canary_models.Decision` (the one the retraining
waits for approval with), so they cannot disagree. The traffic is counted in one :class:`TrafficLedger`: every
batch of predictions the demo reports adds to it, and the summary's total and its split by role are its sums.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from evolution.stats.canary_models import Decision

ROLE_MEANINGS: dict[str, str] = {
    "champion": "the champion answered; no candidate, or outside the canary's share",
    "shadow": "the champion answered, the candidate was scored alongside, not served",
    "canary": "the candidate answered",
    "watch": "the new champion answered, the old one scored alongside",
}


def decision_text(guard: Decision) -> str:
    """The guard's decision with the figures it was taken on: n labelled requests, always-valid p and q."""
    return (
        f"{guard.action} after {guard.n} labelled requests, always-valid p = {guard.p_promote:.3g}, "
        f"q = {guard.q_rollback:.3g} (candidate MAE lower by {guard.theta_hat:.3f} t/ha)"
    )


@dataclass
class TrafficLedger:
    """The demo's predictions, batch by batch (what each progress line reported) and by serving role."""

    batches: list[tuple[str, int]] = field(default_factory=list)
    roles: Counter[str] = field(default_factory=Counter)

    def add(self, label: str, roles: Mapping[str, int]) -> int:
        """Record one reported batch; returns its size (the sum of its roles)."""
        size = sum(roles.values())
        self.batches.append((label, size))
        self.roles.update(roles)
        return size

    @property
    def total(self) -> int:
        return sum(size for _, size in self.batches)

    def summary(self) -> dict[str, str]:
        """The summary's traffic lines: the total as the batches reported it, then the split by role, explained."""
        parts = " + ".join(f"{size:,} {label}" for label, size in self.batches)
        split = "; ".join(
            f"{self.roles[role]:,} {role} ({ROLE_MEANINGS.get(role, role)})"
            for role in sorted(self.roles, key=_role_order)
            if self.roles[role]
        )
        return {"traffic": f"{self.total:,} predictions = {parts}", "served as": split}


def role_split(roles: Mapping[str, int]) -> str:
    """``1,200 champion, 300 canary``: a batch's predictions by role, in the order of a rollout."""
    return ", ".join(f"{roles[r]:,} {r}" for r in sorted(roles, key=_role_order) if roles[r])


def _role_order(role: str) -> tuple[int, str]:
    order = list(ROLE_MEANINGS)
    return (order.index(role) if role in order else len(order), role)
