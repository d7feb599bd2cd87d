"""Limits that can be switched off: an environment variable cannot hold None, so "none" (or empty) says it. Limits
that cannot: the serving body limits, bounded on both sides."""

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


def test_serving_body_limits_default_to_one_mib_for_predictions_and_sixteen_for_ingestion(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path)
    assert (settings.serve_max_predict_bytes, settings.serve_max_ingest_bytes) == (1024**2, 16 * 1024**2)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("EVOLUTION_SERVE_MAX_PREDICT_BYTES", "1000", "greater than or equal to 16384"),
        ("EVOLUTION_SERVE_MAX_PREDICT_BYTES", str(65 * 1024**2), "less than or equal to 67108864"),
        ("EVOLUTION_SERVE_MAX_INGEST_BYTES", "65535", "greater than or equal to 65536"),
        ("EVOLUTION_SERVE_MAX_INGEST_BYTES", str(1024**3), "less than or equal to 268435456"),
    ],
)
def test_a_body_limit_out_of_range_stops_the_serving_process_with_one_message_naming_it(
    variable: str, value: str, problem: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from workers import serving  # the whole serving stack: imported by this test only

    monkeypatch.setenv("EVOLUTION_HOME", str(tmp_path))
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:  # sys.exit(message): the message on stderr, exit status 1
        serving.main()
    message = str(stopped.value.code)
    assert message.startswith("evolution serve: invalid settings:")
    assert variable.removeprefix("EVOLUTION_").lower() in message and problem in message
