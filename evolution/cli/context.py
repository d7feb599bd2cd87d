"""What every CLI command shares: settings, services, the local operator, clear errors."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from evolution.cli.exit_codes import EXIT_BAD_INPUT, EXIT_FAILURE
from evolution.errors import EvolutionError, InvalidInput, NotFound, PermissionDenied
from evolution.platform.secret_files import SecretFileError
from evolution.platform.settings import HOME_DIR_NAME, Settings, find_home, home_is_configured, load_settings
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal, Role

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

NO_HOME = (
    f"no {HOME_DIR_NAME} home here or in any parent directory; "
    "run evolution init (or up/demo) or set EVOLUTION_HOME"
)


def error(message: str) -> None:
    """The one style of an error line: ``error: …`` on stderr (red on a terminal)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print ``error: message`` on stderr and leave with ``code``."""
    error(message)
    raise typer.Exit(code)


def echo_json(value: Any) -> None:
    """Machine-readable output of a read command's ``--json``: one JSON document on stdout.

    Pydantic models, lists of them and plain data alike; times as ISO 8601 strings."""
    from pydantic import BaseModel, TypeAdapter

    if isinstance(value, BaseModel):
        typer.echo(value.model_dump_json(indent=2))
        return
    typer.echo(TypeAdapter(Any).dump_json(value, indent=2).decode())


def settings(create_home: bool = False) -> Settings:
    """The settings, with the home found as git finds ``.git``: ``EVOLUTION_HOME`` (or the config file) if set,
    else the nearest ``.evolution`` in the current directory or a parent. Invalid settings are one line naming
    the problem, exit 2 (never a traceback, never a value).

    Only `init`, `up` and `demo` pass ``create_home``: any other command run in the wrong folder would otherwise
    create an empty home there and then report every tenant as missing.
    """
    try:
        cfg = load_settings()
        if home_is_configured(cfg):
            return cfg
        found = find_home(Path.cwd())
        if found is not None:
            return load_settings(home=found)
        if not create_home:
            fail(NO_HOME, EXIT_BAD_INPUT)
        home = Path.cwd().resolve() / HOME_DIR_NAME
        home.mkdir(parents=True, exist_ok=True)
        typer.echo(f"created a new home at {home}", err=True)
        return load_settings(home=home)
    except (SecretFileError, ValidationError) as error:
        fail(f"invalid settings: {settings_error_line(error)}", EXIT_BAD_INPUT)


def settings_error_line(error: BaseException) -> str | None:
    """One line per settings problem: the setting and the complaint, never the value (it may be a secret)."""
    if isinstance(error, SecretFileError):
        return str(error)
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'settings'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        ).replace("\n", " ")
    return None


def services() -> Services:
    return build_services(settings())


def require_tenant(svc: Services, tenant: str) -> None:
    """NotFound (exit 2) for a tenant the registry does not have, before a command acts on or reports about it."""
    if tenant not in svc.tenants.tenant_ids():
        raise NotFound(f"tenant {tenant!r} does not exist")


def operator(cfg: Settings) -> Principal:
    """The CLI acts as the configured local operator (EVOLUTION_OPERATOR_USER / _ROLE / _TENANTS)."""
    try:
        role = Role(cfg.operator_role)
    except ValueError:
        raise InvalidInput(
            f"EVOLUTION_OPERATOR_ROLE={cfg.operator_role!r}: use viewer, manager or admin"
        ) from None
    return Principal(user=cfg.operator_user, role=role, tenants=tuple(cfg.operator_tenants))


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def friendly_errors(fn: F) -> F:
    """Domain errors become one clear line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InvalidInput, NotFound, PermissionDenied) as problem:
            fail(str(problem), EXIT_BAD_INPUT)
        except EvolutionError as problem:
            fail(f"{problem} ({problem.error_type})", EXIT_FAILURE)
        except BrokenPipeError:
            # Not a service out of reach (it is a ConnectionError too): stdout's reader went away (`| head`).
            # Click ends the command quietly with exit 1, as it does for commands without this wrapper.
            raise
        except ConnectionError as problem:
            fail(f"cannot reach a service: {problem}", EXIT_FAILURE)

    return wrapper  # type: ignore[return-value]


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain fixed-width table (no colours, so it pastes into tickets)."""
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)
