"""The demo's story pieces: one wording of the canary decision, one ledger of its traffic, and the reader the e2e test
uses (tests/e2e/test_demo_cli.py) catching the inconsistent output issue 17 reported."""

from __future__ import annotations

from evolution.demo.story import TrafficLedger, decision_text, role_split
from evolution.stats.canary_models import Decision
from tests.support.demo_story import story_problems

DECISION = Decision(
    action="promote", reason="p below alpha", n=1123, p_promote=7.23e-32, q_rollback=1.0, theta_hat=0.512
)


def transcript(last_guard_line: str, summary: dict[str, str], served: tuple[int, ...]) -> str:
    lines = [f"[{i:6.1f}s] served {n:,} live predictions (…)" for i, n in enumerate(served)]
    lines += [
        "[  50.0s] retraining: canary (n=900, p=7.55e-23, q=1)",
        f"[  51.0s] {last_guard_line}",
        "[  52.0s] demo-manager approved: yield v2 is CHAMPION; v1 DEPRECATED",
        "",
        "summary",
        *(f"  {key:<15} {value}" for key, value in summary.items()),
        "",
        "state kept in /tmp/x",
    ]
    return "\n".join(lines)


def test_the_ledger_adds_up_and_explains_each_role() -> None:
    ledger = TrafficLedger()
    assert ledger.add("after the drift", {"champion": 1500}) == 1500
    assert ledger.add("during shadow and canary", {"shadow": 700, "canary": 310, "champion": 690}) == 1700
    assert ledger.add("after the promotion", {"watch": 1000}) == 1000
    out = ledger.summary()
    assert out["traffic"] == (
        "4,200 predictions = 1,500 after the drift + 1,700 during shadow and canary + 1,000 after the promotion"
    )
    assert out["served as"].startswith("2,190 champion (the champion answered; no candidate")
    assert (
        "700 shadow (the champion answered, the candidate was scored alongside, not served)"
        in out["served as"]
    )
    assert out["served as"].endswith("1,000 watch (the new champion answered, the old one scored alongside)")
    assert role_split({"canary": 310, "shadow": 0, "champion": 690}) == "690 champion, 310 canary"


def test_a_consistent_demo_output_passes_the_reader() -> None:
    ledger = TrafficLedger()
    ledger.add("after the drift", {"champion": 1500})
    ledger.add("during shadow and canary", {"shadow": 500, "canary": 300, "champion": 700})
    summary = {"canary": decision_text(DECISION), **ledger.summary()}
    output = transcript(
        f"retraining: awaiting approval; the canary decided {decision_text(DECISION)}", summary, (1500, 1500)
    )
    assert story_problems(output) == []


def test_the_reader_catches_the_inconsistent_output_issue_17_reported() -> None:
    # Before the fix: the last guard figures came from a look before the decision, and the traffic summary
    # counted rounds no progress line reported.
    summary = {
        "canary": "promote after 1123 labelled requests, always-valid p = 7.23e-32 (candidate MAE lower by 0.5)",
        "traffic": "4,100 predictions = 4,100 in all",
        "served as": "2,600 champion (x); 500 shadow (x); 1,000 watch (x)",
    }
    output = transcript("retraining: awaiting_approval", summary, (1500, 1000))
    problems = story_problems(output)
    assert any("n=900, p=7.55e-23" in p and "n=1123, p=7.23e-32" in p for p in problems), problems
    assert any("report 2500 predictions; the summary 4,100" in p for p in problems), problems
