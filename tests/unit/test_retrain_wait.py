"""`evolution retrain` waits for its run: one line per change of phase (never the same look twice), and an exit code
that is the outcome: 0 only for a new champion, 1 for every other end, with the run's own reason."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evolution.cli.retrain_wait import display, exit_code, outcome, phase_line, wait_until_over
from evolution.contracts import RetrainingStatus
from evolution.stats.canary_models import Decision


class Script:
    """The engine's answers to successive looks at the tenant's run (None: not visible yet)."""

    def __init__(self, looks: list[RetrainingStatus | None]) -> None:
        self._looks: Iterator[RetrainingStatus | None] = iter(looks)
        self.asked = 0

    async def retraining_status(self, tenant_id: str) -> RetrainingStatus | None:
        assert tenant_id == "acme"
        self.asked += 1
        return next(self._looks)


def look(phase: str, **fields: object) -> RetrainingStatus:
    return RetrainingStatus(phase=phase, version_number=3, model_name="yield", **fields)  # type: ignore[arg-type]


def guard(n: int, p: float) -> Decision:
    return Decision(action="continue", reason="keep looking", n=n, p_promote=p, q_rollback=0.9)  # type: ignore[arg-type]


async def test_each_change_of_phase_is_one_line_and_a_promotion_exits_0() -> None:
    script = Script(
        [
            None,
            look("training", state="TRAINING"),
            look("training", state="TRAINING"),
            look("shadow", state="SHADOW", shadow_pairs=120),
            look("canary", state="CANARY", guard=guard(400, 0.2)),
            look("canary", state="CANARY", guard=guard(400, 0.2)),
            look("canary", state="CANARY", guard=guard(900, 0.01), awaiting_approval=True),
            look("finished", state="CHAMPION", message="promoted: approved by maria"),
        ]
    )
    lines: list[str] = []
    final = await wait_until_over(script, "acme", lines.append, poll_s=0)
    assert final is not None and script.asked == 8
    assert lines == [
        "training v3 (TRAINING)",
        "shadow v3 (SHADOW): 120 labelled shadow pairs",
        "canary v3 (CANARY): n=400  p(promote)=0.2  q(rollback)=0.9",
        "canary v3 (CANARY): n=900  p(promote)=0.01  q(rollback)=0.9: waiting for approval: "
        "evolution approve --tenant acme --model yield (or reject, or on the dashboard)",
        "finished v3 (CHAMPION): promoted: approved by maria",
    ]
    assert outcome(final) == "promoted" and exit_code(final) == 0


@pytest.mark.parametrize(
    ("phase", "message", "word"),
    [
        ("finished", "failed: InsufficientData: tenant 'acme' has no sealed snapshot", "failed"),
        ("finished", "blocked: CIRCUIT_OPEN: 3 consecutive failures", "blocked"),
        ("finished", "rejected: rejected by maria", "rejected"),
        ("finished", "no_significant_difference: the champion stays", "no_significant_difference"),
        ("finished", "approval_timeout: nobody decided in 24 h", "approval_timeout"),
        ("terminated", "the run was terminated from outside before it finished", "terminated"),
    ],
)
async def test_every_end_but_a_promotion_exits_1_with_its_reason(phase: str, message: str, word: str) -> None:
    lines: list[str] = []
    final = await wait_until_over(Script([look(phase, message=message)]), "acme", lines.append, poll_s=0)
    assert final is not None and outcome(final) == word and exit_code(final) == 1
    assert lines == [f"{phase} v3: {message}"]


async def test_a_deadline_returns_none_and_leaves_the_run_alone() -> None:
    ticks = iter(range(100))
    script = Script([look("training")] * 10)
    final = await wait_until_over(
        script, "acme", lambda _: None, poll_s=0, clock=lambda: float(next(ticks)), timeout_s=3
    )
    assert final is None and script.asked == 3


def test_piped_output_is_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    with display(tty=False) as shown:
        shown.line("training v3 (TRAINING)")
    assert capsys.readouterr().out == "training v3 (TRAINING)\n"


def test_a_terminal_gets_the_lines_above_a_spinner(capsys: pytest.CaptureFixture[str]) -> None:
    with display(tty=True) as shown:
        shown.line("shadow v3 (SHADOW): 12 labelled shadow pairs")
    assert "shadow v3 (SHADOW): 12 labelled shadow pairs" in capsys.readouterr().out


def test_a_line_is_the_same_for_the_same_look() -> None:
    once = look("canary", guard=guard(5, 0.5))
    assert phase_line(once, "acme") == phase_line(once.model_copy(), "acme")


def test_a_candidate_in_shadow_says_how_many_labelled_pairs_it_still_waits_for() -> None:
    status = RetrainingStatus(
        phase="shadow", version_number=3, state="SHADOW", shadow_pairs=40, shadow_pairs_needed=200
    )
    assert phase_line(status, "acme") == (
        "shadow v3 (SHADOW): 40 of 200 labelled shadow pairs (live predictions whose outcomes have arrived)"
    )
