"""Reading `evolution demo`'s output as a user does: does it tell one consistent story?

The last progress line that gives the canary's figures must be the decision the summary states (same n, same p),
and the predictions the progress lines report must add up to the summary's traffic total and to its split by role.
"""

from __future__ import annotations

import re

PROGRESS = re.compile(r"^\[\s*[\d.]+s\] (?P<message>.*)$")
# A canary look while it runs ("n=900, p=7.55e-23") or a decision ("after 1123 labelled requests, … p = 7.23e-32").
GUARD = re.compile(
    r"n=(?P<n>\d+), p=(?P<p>[^,)\s]+)|after (?P<n2>\d+) labelled requests, always-valid p = (?P<p2>[^,\s]+)"
)
SERVED = re.compile(r"\bserved (?P<count>\d[\d,]*) (?:live )?(?:predictions|forecasts)\b")
SPLIT = re.compile(r"(?P<count>\d[\d,]*) (?P<role>[a-z]+) \(")


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def summary_of(output: str) -> dict[str, str]:
    """The summary block's key → value (keys are padded to one width; values never start with two spaces)."""
    block = output.split("\nsummary\n", 1)[1]
    found: dict[str, str] = {}
    for line in block.splitlines():
        if not line.startswith("  "):
            break
        key, _, value = line.strip().partition("  ")
        found[key] = value.strip()
    return found


def story_problems(output: str) -> list[str]:
    """Where the demo's progress lines and its summary disagree (empty: one consistent story)."""
    problems: list[str] = []
    progress = [m["message"] for line in output.splitlines() if (m := PROGRESS.match(line))]
    summary = summary_of(output)

    looks = [m for line in progress if (m := GUARD.search(line))]
    decided = GUARD.search(summary.get("canary", ""))
    if not looks or decided is None:
        problems.append(f"no canary figures: progress {len(looks)} lines, summary {summary.get('canary')!r}")
    else:
        last, final = looks[-1], decided
        said = (last["n"] or last["n2"], last["p"] or last["p2"])
        summed = (final["n"] or final["n2"], final["p"] or final["p2"])
        if said != summed:
            problems.append(
                f"the last progress line says n={said[0]}, p={said[1]}; the summary n={summed[0]}, "
                f"p={summed[1]}"
            )

    reported = sum(_number(m["count"]) for line in progress for m in SERVED.finditer(line))
    total = re.match(r"(?P<count>\d[\d,]*) predictions", summary.get("traffic", ""))
    if total is None:
        problems.append(f"no traffic total in the summary: {summary.get('traffic')!r}")
    elif _number(total["count"]) != reported:
        problems.append(f"the progress lines report {reported} predictions; the summary {total['count']}")
    by_role = sum(_number(m["count"]) for m in SPLIT.finditer(summary.get("served as", "")))
    if by_role != reported:
        problems.append(f"the summary's split by role adds up to {by_role}, not the {reported} reported")
    return problems
