"""Secret settings read from files: ``EVOLUTION_<NAME>_FILE`` names a file holding the secret.

Kubernetes mounts a Secret as a volume of files; reading them keeps the secrets out of the process environment
(``/proc/<pid>/environ``, ``kubectl describe``, crash reports). Which settings are secret is derived from the
model (every ``SecretStr`` field, plus fields marked ``json_schema_extra={"secret": True}``), so a new secret
setting gets its ``_FILE`` variable without anyone remembering to add it.

Errors name the variable and the path, never the content.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from evolution.errors import InvalidInput

ENV_PREFIX = "EVOLUTION_"
NESTED_DELIMITER = "__"
FILE_SUFFIX = "_FILE"


class SecretFileError(InvalidInput):
    """A ``…_FILE`` variable that cannot be used; the message names the variable and the path only."""


def why_unreadable(error: OSError) -> str:
    """Why a file named by a setting could not be read, in the words of what the operator must fix."""
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(error, PermissionError):
        return "not readable by this process (permission denied)"
    return f"cannot be read ({error.strerror or type(error).__name__})"


@dataclass(frozen=True)
class SecretSetting:
    """One secret setting: where it sits in the settings and the two variables that can give it."""

    path: tuple[str, ...]

    @property
    def variable(self) -> str:
        return ENV_PREFIX + NESTED_DELIMITER.join(self.path).upper()

    @property
    def file_variable(self) -> str:
        return self.variable + FILE_SUFFIX

    @property
    def label(self) -> str:
        return ".".join(self.path)


def _is_secret(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and extra.get("secret") is True:
        return True
    return SecretStr in _members(field.annotation)


def _members(annotation: Any) -> tuple[Any, ...]:
    # `X | None` and `Optional[X]`: look at each member of the union.
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def secret_settings(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[SecretSetting]:
    """Every secret setting of ``model`` and of the models nested in it, in declaration order."""
    found: list[SecretSetting] = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        if _is_secret(field):
            found.append(SecretSetting(path))
        for nested in _models(field.annotation):
            found += secret_settings(nested, path)
    return found


def read_secret_file(variable: str, path: str) -> str:
    """The file's text with one trailing newline removed (``echo secret > file`` adds one)."""
    where = f"{variable}={path}"
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise SecretFileError(f"{where}: {why_unreadable(error)}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"{where}: not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise SecretFileError(f"{where}: the file is empty")
    return text


Origin = Literal["file", "environment", "config"]


@dataclass(frozen=True)
class SecretOrigin:
    setting: SecretSetting
    origin: Origin
    file: str | None = None


def _lookup(environ: Mapping[str, str]) -> dict[str, str]:
    # Like the settings' own environment source: variable names are case-insensitive.
    return {key.upper(): value for key, value in environ.items()}


def _nest(path: tuple[str, ...], value: str, into: dict[str, Any]) -> None:
    for key in path[:-1]:
        into = into.setdefault(key, {})
    into[path[-1]] = value


class SecretFilesSource(PydanticBaseSettingsSource):
    """The values of every set ``…_FILE`` variable, nested like the settings; refuses a secret given twice."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None) -> None:
        super().__init__(settings_cls)
        self._environ = _lookup(os.environ if environ is None else environ)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ builds the whole nested dict at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for setting in secret_settings(self.settings_cls):
            path = self._environ.get(setting.file_variable)
            if path is None:
                continue
            if setting.variable in self._environ:
                raise SecretFileError(
                    f"{setting.variable} and {setting.file_variable} are both set: give the secret one way"
                )
            _nest(setting.path, read_secret_file(setting.file_variable, path), values)
        return values


class EnvWithoutSecretFiles(EnvSettingsSource):
    """The ordinary environment source, blind to the ``…_FILE`` variables: with the nested delimiter it would read
    ``EVOLUTION_S3__ACCESS_KEY_ID_FILE`` as a setting ``s3.access_key_id_file``, which the section forbids."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        files = {s.file_variable.lower() for s in secret_settings(self.settings_cls)}
        return {k: v for k, v in super()._load_env_vars().items() if k.lower() not in files}


def secret_origins(settings: BaseModel, environ: Mapping[str, str] | None = None) -> Iterator[SecretOrigin]:
    """Where each secret that is set came from (a file, the environment, the TOML config), never its value."""
    variables = _lookup(os.environ if environ is None else environ)
    for setting in secret_settings(type(settings)):
        if setting.file_variable in variables:
            yield SecretOrigin(setting, "file", variables[setting.file_variable])
        elif setting.variable in variables:
            yield SecretOrigin(setting, "environment")
        elif _value(settings, setting.path) is not None:
            yield SecretOrigin(setting, "config")


def _value(model: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        model = getattr(model, key, None)
        if model is None:
            return None
    return model
