"""What a backend's ``check()`` reports to ``evolution doctor``: one named result per thing checked."""

from __future__ import annotations

from typing import NamedTuple


class CheckResult(NamedTuple):
    """One line of ``evolution doctor``: what was checked, whether it passed, and what was seen."""

    name: str
    ok: bool
    detail: str
