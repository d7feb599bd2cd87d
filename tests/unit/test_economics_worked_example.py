"""The worked example of docs/economics.md, figure by figure, through the same pure math the Executive page uses."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evolution.governance.economics import LineFacts, LineTransition, PairedErrors, summarize
from evolution.lifecycle import ModelState, VersionView
from evolution.registry.quota import QuotaStatus
from evolution.registry.tenant_settings import Economics

DOC = Path(__file__).resolve().parents[2] / "docs" / "economics.md"
NOW = datetime(2026, 4, 30, tzinfo=UTC)
V1_PROMOTED = datetime(2026, 3, 2, 9, tzinfo=UTC)
V2_PROMOTED = datetime(2026, 4, 2, 9, tzinfo=UTC)
ECONOMICS = Economics(value_per_unit_error_usd=0.04, serving_cost_per_1k_usd=1.00, target_unit="t/ha")


def version(number: int, state: ModelState) -> VersionView:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    return VersionView(
        id=f"v{number}", tenant_id="acme", model_name="yield", number=number, state=state, lock_version=1,
        created_at=at, updated_at=at,
    )  # fmt: skip


def transition(seq: int, at: datetime, version_id: str, src: str | None, dst: str) -> LineTransition:
    return LineTransition(seq=seq, at=at, actor="maria", version_id=version_id, from_state=src, to_state=dst)


@pytest.fixture(scope="module")
def example():  # type: ignore[no-untyped-def]
    run = timedelta(hours=1)
    facts = LineFacts(
        versions={
            "v1": version(1, ModelState.DEPRECATED),
            "v2": version(2, ModelState.CHAMPION),
            "v3": version(3, ModelState.FAILED),
        },
        transitions=[
            transition(1, V1_PROMOTED, "v1", "CANARY", "CHAMPION"),
            transition(2, V2_PROMOTED - timedelta(days=1), "v2", "SHADOW", "CANARY"),
            transition(3, V2_PROMOTED, "v2", "CANARY", "CHAMPION"),
            transition(4, V2_PROMOTED, "v1", "CHAMPION", "DEPRECATED"),
        ],
        runs=[
            ("v1", datetime(2026, 3, 1, 10, tzinfo=UTC), run.total_seconds(), 4.00),
            ("v2", datetime(2026, 4, 1, 10, tzinfo=UTC), run.total_seconds(), 6.00),
            ("v3", datetime(2026, 4, 15, 10, tzinfo=UTC), run.total_seconds(), 2.00),
        ],
        checkpoints=[V1_PROMOTED, V2_PROMOTED, NOW],
        volumes={"v1": [0, 20_000, 20_000], "v2": [0, 0, 12_000]},
        paired={("v2", "v1"): PairedErrors(n=400, champion_mae=1.25, candidate_mae=1.00)},
        drift=[],
        decisions=[],
    )
    quota = QuotaStatus(
        tenant_id="acme", month="2026-04", gpu_hours_used=3.2, gpu_hours_quota=100, cost_usd=8.00,
        budget_cap_usd=500,
    )  # fmt: skip
    return summarize(
        facts, tenant_id="acme", model_name="yield", now=NOW, economics=ECONOMICS, quota_now=quota,
        availability=None, slo_period=timedelta(days=30),
    )  # fmt: skip


def test_each_promotion_is_valued_as_the_worked_example_says(example) -> None:  # type: ignore[no-untyped-def]
    v1, v2 = example.promotions
    assert (v1.error_source, v1.value_usd, v1.training_cost_usd, v1.serving_cost_usd) == (
        "none",
        0.0,
        4.0,
        20.0,
    )
    assert (round(v1.net_value_usd, 2), round(v1.roi_percent, 1)) == (-24.00, -100.0)
    assert (v2.error_source, v2.labelled_requests, v2.error_reduction) == ("paired_outcomes", 400, 0.25)
    assert (round(v2.value_usd, 2), v2.training_cost_usd, v2.serving_cost_usd) == (120.00, 6.0, 12.0)
    assert (round(v2.cost_usd, 2), round(v2.net_value_usd, 2), round(v2.roi_percent, 1)) == (
        18.00,
        102.00,
        566.7,
    )


def test_the_line_is_capitalized_as_the_worked_example_says(example) -> None:  # type: ignore[no-untyped-def]
    cap = example.capitalization
    assert (cap.period_start, cap.period_end) == (V1_PROMOTED, NOW)
    assert (cap.value_usd, cap.training_cost_usd, cap.unpromoted_training_cost_usd) == (120.0, 12.0, 2.0)
    assert (cap.serving_cost_usd, cap.cost_usd, round(cap.net_value_usd, 2)) == (32.0, 44.0, 76.00)
    assert round(cap.index, 1) == 272.7
    assert [(round(p.cost_usd, 2), p.index and round(p.index, 1)) for p in cap.series] == [
        (4.00, 0.0),
        (30.00, 0.0),
        (44.00, 272.7),
    ]
    assert (example.quota.budget_used_usd, example.quota.budget_cap_usd) == (8.0, 500)


def test_the_documented_figures_are_the_ones_computed() -> None:
    """The doc states its results; a change to the math that changes them must change the doc too."""
    text = DOC.read_text(encoding="utf-8")
    for figure in ("$120.00", "$18.00", "566.7 %", "$44.00", "272.7", "$76.00", "$8.00 of $500", "−$24.00"):
        assert figure in text, figure
    assert re.search(r"2026-03-02 09:00 UTC to 2026-04-30 00:00 UTC", text)
