"""`evolution doctor`: is every configured backend reachable, with valid credentials and the state we rely on?

Each check is reported, none raises: an operator setting up PostgreSQL, S3, KMS and Kubernetes wants the whole
picture at once, not the first failure.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, text

from evolution.errors import EvolutionError
from evolution.platform.secret_files import secret_origins
from evolution.platform.settings import Settings
from evolution.registry.db import MIGRATIONS_DIR, alembic_config, connected, make_engine
from evolution.registry.pg_tls import (
    SETTING_OF,
    DatabaseUnreachable,
    Endpoint,
    is_postgresql,
    sslmode_of,
    tls_parameters,
)
from evolution.registry.row_security import IDENTITY_TABLES


class Check(BaseModel):
    component: str
    name: str
    ok: bool
    detail: str


def _checks(component: str, results: Iterable[Sequence[Any]]) -> list[Check]:
    return [Check(component=component, name=str(r[0]), ok=bool(r[1]), detail=str(r[2])) for r in results]


def _guarded(component: str, name: str, run: Callable[[], list[Check]]) -> list[Check]:
    """A check that blows up is a failed check, named, never a traceback."""
    try:
        return run()
    except Exception as error:  # report, never raise: the point is the whole picture
        return [Check(component=component, name=name, ok=False, detail=f"{type(error).__name__}: {error}")]


def database_checks(settings: Settings) -> list[Check]:
    url = settings.resolved_database_url
    checks = database_tls_file_checks(url, "") + _tls_settings_unused(settings, url)
    engine = make_engine(url)
    try:
        checks += _database_checks(engine, url)
    except DatabaseUnreachable as error:
        checks.append(Check(component="database", name="reachable", ok=False, detail=str(error)))
    finally:
        engine.dispose()
    if settings.database_owner_url and settings.resolved_owner_database_url != url:
        checks += database_owner_checks(settings.resolved_owner_database_url)
    return checks


def _tls_settings_unused(settings: Settings, url: str) -> list[Check]:
    """PostgreSQL TLS settings beside a registry that is not PostgreSQL: they do nothing, and whoever set them
    most likely meant a PostgreSQL URL that is missing (the registry would be a local SQLite file instead)."""
    given = [SETTING_OF[name] for name, value in settings.database_tls.items() if value is not None]
    if not given or is_postgresql(url):
        return []
    where = (
        "EVOLUTION_DATABASE_URL is not set"
        if not settings.database_url
        else "EVOLUTION_DATABASE_URL is not PostgreSQL"
    )
    return [
        Check(
            component="database",
            name="TLS",
            ok=False,
            detail=f"{', '.join(given)} set, but {where}: the registry is {url.partition(':')[0]}, which they do not "
            "apply to; set the PostgreSQL URL or unset them",
        )
    ]


def _database_checks(engine: Engine, url: str) -> list[Check]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    backend = engine.dialect.name
    checks: list[Check] = []
    with connected(engine, url) as connection:
        connection.execute(text("SELECT 1"))
        if backend == "postgresql":
            checks.append(database_tls_in_use(connection, url, ""))
        checks.append(Check(component="database", name="reachable", ok=True, detail=f"{backend} answered"))
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        current = MigrationContext.configure(connection).get_current_revision()
        checks.append(
            Check(
                component="database",
                name="migrations at head",
                ok=current == head,
                detail=f"at {current}, head {head}"
                + (
                    ""
                    if current == head
                    else f": run `evolution db upgrade` (migrations in {MIGRATIONS_DIR})"
                ),
            )
        )
        if backend == "postgresql":
            checks += _row_security_checks(connection)
    return checks


def _row_security_checks(connection: Any) -> list[Check]:
    user, superuser, bypass = connection.execute(
        text("SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    ).one()
    fenced = not superuser and not bypass
    checks = [
        Check(
            component="database",
            name="application role fenced",
            ok=fenced,
            detail=f"{user}: no SUPERUSER, no BYPASSRLS"
            if fenced
            else f"{user} has {'SUPERUSER' if superuser else 'BYPASSRLS'}: row-level security does not apply; "
            "connect as a member of evolution_app (EVOLUTION_DATABASE_URL) and migrate as the owner "
            "(EVOLUTION_DATABASE_OWNER_URL)",
        )
    ]
    rows = connection.execute(
        text(
            "SELECT c.relname, c.relrowsecurity AND c.relforcerowsecurity FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND (c.relname = 'tenants' OR EXISTS "
            "(SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped))"
        )
    ).all()
    tables = {name: forced for name, forced in rows if name not in IDENTITY_TABLES}
    open_tables = sorted(name for name, forced in tables.items() if not forced)
    checks.append(
        Check(
            component="database",
            name="row-level security forced",
            ok=bool(tables) and not open_tables,
            detail=f"on all {len(tables)} tenant tables"
            if not open_tables
            else f"missing on {', '.join(open_tables)}",
        )
    )
    return checks


def database_owner_checks(url: str) -> list[Check]:
    """The schema owner's URL (set where migrations run): its TLS files, and whether it connects over TLS."""
    checks = database_tls_file_checks(url, " (owner)")
    engine = make_engine(url)
    try:
        with connected(engine, url) as connection:
            checks.append(database_tls_in_use(connection, url, " (owner)"))
    except DatabaseUnreachable as error:
        checks.append(Check(component="database", name="reachable (owner)", ok=False, detail=str(error)))
    finally:
        engine.dispose()
    return checks


def database_tls_file_checks(url: str, role: str) -> list[Check]:
    """The CA and the client certificate a PostgreSQL URL names: whose, signed by whom, until when (failed if
    expired, not yet valid or unreadable). A missing file is reported by the connection ("reachable")."""
    import datetime as dt

    from evolution.platform.pem_certificates import CertificateFileError, read_certificate_file

    parameters = tls_parameters(url)
    now = dt.datetime.now(dt.UTC)
    checks: list[Check] = []
    for parameter, name in (("sslrootcert", "server CA"), ("sslcert", "client certificate")):
        value = parameters.get(parameter)
        if value is None or value == "system" or not Path(value).is_file():
            continue
        try:
            summary = read_certificate_file(Path(value))
        except CertificateFileError as error:
            checks.append(Check(component="database", name=name + role, ok=False, detail=str(error)))
            continue
        problem = summary.problem(now)
        detail = f"{value}: " + (
            f"{problem}: renew it ({SETTING_OF[parameter]})" if problem else summary.describe(now)
        )
        checks.append(Check(component="database", name=name + role, ok=problem is None, detail=detail))
    return checks


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def database_tls_in_use(connection: Any, url: str, role: str) -> Check:
    """The TLS the connection actually has (pg_stat_ssl), beside the mode asked for. Unencrypted fails except to
    this host (loopback or a socket); encrypted without verify-full passes with a warning."""
    parameters = tls_parameters(url)
    mode = sslmode_of(parameters)
    row = connection.execute(
        text("SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    ).one_or_none()
    encrypted = bool(row and row[0])
    endpoint = Endpoint.of(url)
    if not encrypted:
        local = endpoint.host in _LOOPBACK or endpoint.host.startswith("/")
        return Check(
            component="database",
            name="TLS" + role,
            ok=local,
            detail=f"sslmode={mode}: not encrypted"
            + ("" if local else f" to {endpoint.host}")
            + ": set EVOLUTION_DATABASE_SSLMODE=verify-full and EVOLUTION_DATABASE_SSLROOTCERT",
        )
    assert row is not None
    detail = f"sslmode={mode}, {row[1]} {row[2]}"
    if mode == "verify-full":
        detail += f", server certificate verified for {endpoint.host}"
    else:
        detail += ": the server's identity is not verified (use sslmode=verify-full)"
    if "sslcert" in parameters:
        detail += ", client certificate presented"
    return Check(component="database", name="TLS" + role, ok=True, detail=detail)


def artifact_checks(settings: Settings) -> list[Check]:
    if settings.artifact_backend == "s3":
        from evolution.platform.wiring import build_artifact_store

        store: Any = build_artifact_store(settings)
        return _checks("artifacts", store.check())
    root = settings.artifacts_dir
    root.mkdir(parents=True, exist_ok=True)
    writable = os.access(root, os.W_OK)
    return [Check(component="artifacts", name="filesystem store writable", ok=writable, detail=str(root))]


def signer_checks(settings: Settings) -> list[Check]:
    from evolution.platform.wiring import build_signer

    signer: Any = build_signer(settings)
    if settings.signer_backend == "kms":
        return _checks("signer", signer.check())
    mode = oct(signer.path.stat().st_mode & 0o777)
    private = mode == "0o600"
    return [
        Check(component="signer", name="local signing key", ok=True, detail=signer.key_id),
        Check(component="signer", name="key file private", ok=private, detail=f"{signer.path} mode {mode}"),
        Check(
            component="signer",
            name="OpenSSF model signatures",
            ok=signer.algorithm == "ecdsa-p256-sha256",
            detail="ECDSA P-256: every new version gets a model.sig bundle"
            if signer.algorithm == "ecdsa-p256-sha256"
            else f"the key is {signer.algorithm}, which model_signing cannot verify: run `evolution keys rotate`",
        ),
    ]


def compute_checks(settings: Settings) -> list[Check]:
    if settings.compute_backend == "kubernetes":
        from evolution.platform.wiring import build_compute_backend

        backend: Any = build_compute_backend(settings)
        return _checks("compute", backend.check())
    return [
        Check(
            component="compute",
            name="local subprocess",
            ok=os.access(sys.executable, os.X_OK),
            detail=f"{sys.executable}; work dir {settings.work_dir}",
        )
    ]


def notification_checks(settings: Settings) -> list[Check]:
    config = settings.notifications
    checks = [Check(component="notifications", name="outbox", ok=True, detail="in the registry database")]
    if config.smtp is not None or config.webhook is not None:
        from evolution.notifications.fanout import FanOutNotifier
        from evolution.registry.db import make_session_factory

        engine = make_engine(settings.resolved_database_url)
        try:
            notifier = FanOutNotifier.from_config(config, make_session_factory(engine))
            checks += _checks("notifications", notifier.check())
        finally:
            engine.dispose()
    return checks


def lineage_checks(settings: Settings) -> list[Check]:
    """The lineage transport, whether it can take events, and how many wait in the outbox."""
    from evolution.notifications.lineage import LineageDelivery
    from evolution.registry.db import make_session_factory

    engine = make_engine(settings.resolved_database_url)
    try:
        delivery = LineageDelivery(make_session_factory(engine), settings.lineage, settings.lineage_file)
        checks = [
            Check(
                component="lineage",
                name="transport",
                ok=True,
                detail=f"{delivery.where()}, namespace {settings.lineage.namespace} (OpenLineage, from the outbox)",
            )
        ]
        checks += _checks("lineage", delivery.check())
        try:
            waiting = Check(
                component="lineage",
                name="outbox",
                ok=True,
                detail=f"{delivery.pending()} event(s) waiting for delivery",
            )
        except Exception as error:  # the database's own checks above say why
            first_line = str(error).splitlines()[0][:200] if str(error) else ""
            waiting = Check(
                component="lineage",
                name="outbox",
                ok=False,
                detail=f"not counted: {type(error).__name__}: {first_line}",
            )
        return [*checks, waiting]
    finally:
        engine.dispose()


ORIGINS = {
    "file": "from file {file}",
    "environment": "from the environment",
    "config": "from the config file",
}


def secret_checks(settings: Settings) -> list[Check]:
    """Where each secret that is set came from, so an operator can see the Secret volume is used: never a value."""
    checks = [
        Check(
            component="secrets",
            name=origin.setting.label,
            ok=True,
            detail=ORIGINS[origin.origin].format(file=origin.file) + " (set)",
        )
        for origin in secret_origins(settings)
    ]
    return checks or [
        Check(component="secrets", name="none set", ok=True, detail="no secret setting is given")
    ]


def temporal_checks(settings: Settings) -> list[Check]:
    """How this installation authenticates to Temporal, whether its client certificate is still valid, and
    whether Temporal lets it in (each refusal named: wrong CA, refused certificate or key)."""
    checks = temporal_auth_checks(settings)
    if any(check.name == TLS_FILES for check in checks):
        return checks  # a missing or unusable file: connecting would only repeat it
    return [*checks, temporal_reachable(settings)]


CERT_RENEW_DAYS = 14
TLS_FILES = "TLS files"


def temporal_auth_checks(settings: Settings) -> list[Check]:
    from evolution.platform.pem_certificates import certificate_summary
    from evolution.platform.temporal_config import TemporalConfigError, auth_of
    from evolution.timeutil import utcnow

    tls = settings.temporal_tls
    cert_set = tls is not None and tls.client_cert is not None
    auth = auth_of(tls is not None, cert_set, settings.temporal_api_key)
    parts = []
    if tls is not None:
        parts.append(f"server CA {tls.server_ca}" if tls.server_ca else "server CA: the system's roots")
        if tls.server_name:
            parts.append(f"server name {tls.server_name}")
        if tls.client_cert:
            parts.append(f"client certificate {tls.client_cert}")
    elif settings.temporal_api_key is not None:
        parts.append("TLS with the system's roots")
    if settings.temporal_api_key is not None:
        parts.append("API key set (never shown)")
    if auth == "none":
        parts.append("plaintext, unauthenticated: only for the dev server of `evolution up`")
    checks = [Check(component="temporal", name="auth", ok=True, detail=f"{auth}: {'; '.join(parts)}")]
    try:
        connection = settings.temporal_connection()
    except TemporalConfigError as error:
        return [*checks, Check(component="temporal", name=TLS_FILES, ok=False, detail=str(error))]
    material = connection.tls
    if material is None or material.client_cert is None:
        return checks
    try:
        validity = certificate_summary(material.client_cert)
    except ValueError as error:
        return [*checks, Check(component="temporal", name="client certificate", ok=False, detail=str(error))]
    now = utcnow()
    days = validity.days_left(now)
    until = (
        f"{validity.subject}, issued by {validity.issuer}, valid until {validity.not_after:%Y-%m-%d %H:%M}Z"
    )
    if validity.not_before > now:
        ok, detail = False, f"not valid yet (from {validity.not_before:%Y-%m-%d %H:%M}Z): {until}"
    elif days <= 0:
        ok, detail = False, f"EXPIRED {-days:.0f} days ago: {until}; issue a new one (docs/production.md)"
    elif days <= CERT_RENEW_DAYS:
        ok, detail = True, f"expires in {days:.1f} days, renew now: {until}"
    else:
        ok, detail = True, f"{until} ({days:.0f} days left)"
    return [*checks, Check(component="temporal", name="client certificate", ok=ok, detail=detail)]


def temporal_reachable(settings: Settings) -> Check:
    import asyncio

    from evolution.platform.orchestrator import connect_orchestrator

    async def probe() -> None:
        orchestrator = await connect_orchestrator(settings)
        await orchestrator.close()

    try:
        asyncio.run(probe())
    except EvolutionError as error:
        # The adapter names the problem: unreachable, wrong CA, refused certificate or key.
        return Check(component="temporal", name="reachable", ok=False, detail=str(error))
    mode = "cluster" if settings.temporal_external else "dev server of `evolution up`"
    return Check(
        component="temporal",
        name="reachable",
        ok=True,
        detail=f"{settings.temporal_address} namespace {settings.temporal_namespace} ({mode}), let in",
    )


CHECKS: dict[str, Callable[[Settings], list[Check]]] = {
    "secrets": secret_checks,
    "database": database_checks,
    "temporal": temporal_checks,
    "artifacts": artifact_checks,
    "signer": signer_checks,
    "compute": compute_checks,
    "notifications": notification_checks,
    "lineage": lineage_checks,
}


def run_checks(settings: Settings, skip: Iterable[str] = ()) -> list[Check]:
    skipped = set(skip)
    results: list[Check] = []
    for component, check in CHECKS.items():
        if component not in skipped:
            name = {"database": "reachable", "temporal": "reachable", "secrets": "sources"}.get(
                component, "configured"
            )
            results += _guarded(component, name, lambda check=check: check(settings))  # type: ignore[misc]
    return results


def render_table(checks: Sequence[Check]) -> str:
    headers = ("component", "check", "status", "detail")
    rows = [(c.component, c.name, "ok" if c.ok else "FAIL", c.detail) for c in checks]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers[:3])]
    lines = []
    for row in [headers, *rows]:
        head = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3]))
        lines.append(f"{head}  {row[3]}")  # never cut: the detail is the cause and what to do about it
    return "\n".join(lines)
