"""Limits that can be switched off: an environment variable cannot hold None, so "none" (or empty) says it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from evolution.platform.settings import Settings

LIMITS = {
    "EVOLUTION_MAX_CONCURRENT_TRAININGS": "max_concurrent_trainings",
    "EVOLUTION_TRAINING_MEMORY_LIMIT_MB": "training_memory_limit_mb",
}


@pytest.mark.parametrize("spelling", ["none", "None", "", " null ", "unlimited"])
def test_no_limit_can_be_spelled_in_the_environment(
    spelling: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable in LIMITS:
        monkeypatch.setenv(variable, spelling)
    settings = Settings(home=tmp_path)
    assert all(getattr(settings, field) is None for field in LIMITS.values())


def test_limits_default_to_four_trainings_and_four_gib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in LIMITS:
        monkeypatch.delenv(variable, raising=False)
    settings = Settings(home=tmp_path)
    assert (settings.max_concurrent_trainings, settings.training_memory_limit_mb) == (4, 4096)


def test_a_limit_of_zero_trainings_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EVOLUTION_MAX_CONCURRENT_TRAININGS", "0")
    with pytest.raises(ValidationError, match="max_concurrent_trainings"):
        Settings(home=tmp_path)
