"""Every secret setting can be given as ``EVOLUTION_<NAME>_FILE`` (a Kubernetes Secret volume); the errors name the
variable and the path, never the secret."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from evolution.platform.secret_files import SecretFileError, secret_origins, secret_settings
from evolution.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

# What else a section needs before its secrets can be set; a new section with a secret needs an entry here.
COMPANIONS = {
    "kms": {"EVOLUTION_KMS__KEY_ID": "test-key"},
    "notifications": {
        "EVOLUTION_NOTIFICATIONS__SMTP__HOST": "smtp.example.com",
        "EVOLUTION_NOTIFICATIONS__SMTP__SENDER": "evolution@example.com",
        "EVOLUTION_NOTIFICATIONS__SMTP__USERNAME": "evolution",
        "EVOLUTION_NOTIFICATIONS__WEBHOOK__URL": "https://hooks.example.com/evolution",
    },
    "lineage": {"EVOLUTION_LINEAGE__TRANSPORT": "http", "EVOLUTION_LINEAGE__URL": "http://marquez:5000"},
}
SECRETS = secret_settings(Settings)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("EVOLUTION_"):
            monkeypatch.delenv(name)


def _value(settings: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        settings = getattr(settings, key)
    return settings.get_secret_value() if hasattr(settings, "get_secret_value") else settings


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def test_the_secret_settings_are_derived_from_the_model() -> None:
    assert [s.file_variable for s in SECRETS] == [
        "EVOLUTION_DATABASE_URL_FILE",
        "EVOLUTION_DATABASE_OWNER_URL_FILE",
        "EVOLUTION_S3__ACCESS_KEY_ID_FILE",
        "EVOLUTION_S3__SECRET_ACCESS_KEY_FILE",
        "EVOLUTION_S3__SESSION_TOKEN_FILE",
        "EVOLUTION_KMS__ACCESS_KEY_ID_FILE",
        "EVOLUTION_KMS__SECRET_ACCESS_KEY_FILE",
        "EVOLUTION_KMS__SESSION_TOKEN_FILE",
        "EVOLUTION_NOTIFICATIONS__SMTP__PASSWORD_FILE",
        "EVOLUTION_NOTIFICATIONS__WEBHOOK__SECRET_FILE",
        "EVOLUTION_LINEAGE__API_KEY_FILE",
        "EVOLUTION_TEMPORAL_TLS__CLIENT_KEY_FILE",
        "EVOLUTION_TEMPORAL_API_KEY_FILE",
    ]


def test_every_secretstr_in_the_json_schema_has_a_file_variable() -> None:
    """Independent of the model walk: the JSON schema marks SecretStr as format=password."""
    schema = Settings.model_json_schema()
    definitions = schema.get("$defs", {})

    def passwords(node: dict[str, Any], path: tuple[str, ...]) -> set[tuple[str, ...]]:
        found: set[tuple[str, ...]] = set()
        for name, prop in node.get("properties", {}).items():
            for option in [prop, *prop.get("anyOf", [])]:
                if option.get("format") == "password":
                    found.add((*path, name))
                ref = option.get("$ref")
                if ref:
                    found |= passwords(definitions[ref.split("/")[-1]], (*path, name))
        return found

    assert passwords(schema, ()) <= {s.path for s in SECRETS}


@pytest.mark.parametrize("secret", SECRETS, ids=lambda s: s.label)
def test_each_secret_can_be_read_from_a_file(
    secret: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in COMPANIONS.get(secret.path[0], {}).items():
        monkeypatch.setenv(name, value)
    # The pairs that go together (access key and secret key, SMTP user and password, webhook secret) all from files.
    content = "canary-" + "-".join(secret.path) + "-0123456789"
    for other in SECRETS:
        if other.path[0] == secret.path[0]:
            monkeypatch.setenv(other.file_variable, str(_write(tmp_path, other.label, content + "\n")))
    settings = Settings(home=tmp_path)
    assert _value(settings, secret.path) == content
    origins = {o.setting.path: o for o in secret_origins(settings)}
    assert origins[secret.path].origin == "file"
    assert origins[secret.path].file == str(tmp_path / secret.label)


def test_only_one_trailing_newline_is_stripped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVOLUTION_DATABASE_URL_FILE", str(_write(tmp_path, "url", "sqlite:///x.db \n\n")))
    assert Settings(home=tmp_path).database_url == "sqlite:///x.db \n"
    monkeypatch.setenv("EVOLUTION_DATABASE_URL_FILE", str(_write(tmp_path, "url2", "sqlite:///y.db\r\n")))
    assert Settings(home=tmp_path).database_url == "sqlite:///y.db"


def test_a_secret_given_twice_is_refused_naming_both_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVOLUTION_DATABASE_URL", "sqlite:///env-canary.db")
    monkeypatch.setenv(
        "EVOLUTION_DATABASE_URL_FILE", str(_write(tmp_path, "url", "sqlite:///file-canary.db"))
    )
    with pytest.raises(SecretFileError) as raised:
        Settings(home=tmp_path)
    message = str(raised.value)
    assert "EVOLUTION_DATABASE_URL and EVOLUTION_DATABASE_URL_FILE are both set" in message
    assert "canary" not in message


def test_the_variable_names_are_case_insensitive_like_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("evolution_database_url_file", str(_write(tmp_path, "url", "sqlite:///lower.db")))
    assert Settings(home=tmp_path).database_url == "sqlite:///lower.db"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"\n", "the file is empty"),
        (b"canary-\xff\xfe-secret", "not UTF-8 text"),
        ("directory", "is a directory"),
    ],
)
def test_an_unusable_file_is_refused_naming_the_variable_and_path(
    content: bytes | str | None, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "smtp-password"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "directory":
        path.mkdir()
    monkeypatch.setenv("EVOLUTION_NOTIFICATIONS__SMTP__PASSWORD_FILE", str(path))
    with pytest.raises(SecretFileError) as raised:
        Settings(home=tmp_path)
    message = str(raised.value)
    assert message.startswith(f"EVOLUTION_NOTIFICATIONS__SMTP__PASSWORD_FILE={path}: ")
    assert problem in message
    assert "canary" not in message


def test_an_invalid_secret_from_a_file_is_reported_without_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evolution.cli.context import settings_error_line

    monkeypatch.setenv("EVOLUTION_NOTIFICATIONS__WEBHOOK__URL", "https://hooks.example.com/x")
    monkeypatch.setenv("EVOLUTION_NOTIFICATIONS__WEBHOOK__SECRET_FILE", str(_write(tmp_path, "s", "canary")))
    with pytest.raises(Exception) as raised:
        Settings(home=tmp_path)
    line = settings_error_line(raised.value)
    assert line is not None
    assert "notifications.webhook.secret" in line and "at least 16 characters" in line
    assert "canary" not in line and "\n" not in line


def test_the_production_guide_lists_every_file_variable() -> None:
    guide = (ROOT / "docs" / "production.md").read_text(encoding="utf-8")
    section = guide.split("## Secrets from files", 1)[1]
    missing = [s.file_variable for s in SECRETS if not re.search(rf"\b{s.file_variable}\b", section)]
    assert not missing, f"docs/production.md 'Secrets from files' lacks {missing}"


def test_the_cli_reports_a_bad_secret_file_in_one_line_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    from evolution.cli.context import settings

    missing = tmp_path / "nowhere" / "webhook-secret"
    monkeypatch.setenv("EVOLUTION_HOME", str(tmp_path))
    monkeypatch.setenv("EVOLUTION_NOTIFICATIONS__WEBHOOK__SECRET_FILE", str(missing))
    with pytest.raises(typer.Exit) as raised:
        settings()
    assert raised.value.exit_code == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: invalid settings: EVOLUTION_NOTIFICATIONS__WEBHOOK__SECRET_FILE={missing}: no such file\n"
    )


def test_doctor_says_where_each_secret_came_from_and_never_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evolution.platform.doctor import secret_checks

    monkeypatch.setenv("EVOLUTION_NOTIFICATIONS__WEBHOOK__URL", "https://hooks.example.com/x")
    monkeypatch.setenv(
        "EVOLUTION_NOTIFICATIONS__WEBHOOK__SECRET_FILE",
        str(_write(tmp_path, "hook", "canary-webhook-0123456789\n")),
    )
    monkeypatch.setenv("EVOLUTION_DATABASE_URL", "sqlite:///canary-db.db")
    checks = {c.name: c for c in secret_checks(Settings(home=tmp_path))}
    assert checks["notifications.webhook.secret"].detail == f"from file {tmp_path / 'hook'} (set)"
    assert checks["database_url"].detail == "from the environment (set)"
    assert set(checks) == {"notifications.webhook.secret", "database_url"}
    assert all(c.ok and "canary" not in c.detail for c in checks.values())
    monkeypatch.delenv("EVOLUTION_NOTIFICATIONS__WEBHOOK__URL")
    monkeypatch.delenv("EVOLUTION_NOTIFICATIONS__WEBHOOK__SECRET_FILE")
    monkeypatch.delenv("EVOLUTION_DATABASE_URL")
    assert [c.name for c in secret_checks(Settings(home=tmp_path))] == ["none set"]
