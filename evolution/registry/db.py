"""Engines, sessions and migrations for the registry (SQLite embedded, PostgreSQL in production)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

# The Alembic scripts ship inside the package (evolution/registry/migrations/), so an installed wheel can migrate.
# Alembic reads them from a directory, which a pip-installed package always is.
MIGRATIONS_DIR = Path(str(resources.files("evolution.registry.migrations")))
_REVISION = re.compile(r"""^revision(?:: str)? = ["']([^"']+)["']""", re.M)
_DOWN_REVISION = re.compile(r"""^down_revision(?:: [^=]+)? = (?:["']([^"']+)["']|None)$""", re.M)
# Set only while consistent_reading() begins: its SQLite transaction begins deferred (a WAL snapshot, no lock).
_SQLITE_DEFERRED_BEGIN: ContextVar[bool] = ContextVar("sqlite_deferred_begin", default=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings the registry relies on.

    SQLite: WAL so readers never block the writer, a long busy timeout, foreign keys on, and ``BEGIN IMMEDIATE`` so
    that a transaction takes the write lock up front instead of failing when it upgrades from read to write.
    """
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN" if _SQLITE_DEFERRED_BEGIN.get() else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 60)
    return create_engine(url, **kwargs)


# The PostgreSQL setting row-level security policies compare each row's tenant with (see migration 0006).
TENANT_SETTING = "evolution.tenant_id"
_TENANT_INFO = "evolution.tenant_id"


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that, on PostgreSQL, tell the database which tenant each transaction acts for.

    The tenant goes in as a transaction-local setting at the start of every transaction, so a pooled connection
    never carries one tenant's scope into another's work. A session opened without a tenant sees no tenant rows.
    """
    factory = sessionmaker(engine, expire_on_commit=False)
    if engine.dialect.name == "postgresql":
        event.listen(factory, "after_begin", _set_tenant_scope)
    return factory


def _set_tenant_scope(session: Session, _transaction: Any, connection: Any) -> None:
    tenant = session.info.get(_TENANT_INFO) or ""
    connection.exec_driver_sql(
        "SELECT set_config(%(name)s, %(tenant)s, true)", {"name": TENANT_SETTING, "tenant": tenant}
    )


def tenant_session(factory: sessionmaker[Session], tenant_id: str | None) -> Session:
    """A session whose transactions act for ``tenant_id`` (row-level security on PostgreSQL)."""
    return factory(info={_TENANT_INFO: tenant_id}) if tenant_id else factory()


def act_for_tenant(session: Session, tenant_id: str) -> None:
    """Within an open transaction, act for another tenant from now on.

    Only for the few operations that span tenants by nature (a user's grants on several tenants, audited in each
    tenant's chain); everything else names its tenant once, when the session is opened.
    """
    session.info[_TENANT_INFO] = tenant_id
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT set_config(:name, :tenant, true)"), {"name": TENANT_SETTING, "tenant": tenant_id}
        )


@contextmanager
def transaction(factory: sessionmaker[Session], tenant_id: str | None = None) -> Iterator[Session]:
    """A session for ``tenant_id`` whose work commits on success and rolls back on any error."""
    with tenant_session(factory, tenant_id) as session, session.begin():
        yield session


@contextmanager
def reading(factory: sessionmaker[Session], tenant_id: str | None) -> Iterator[Session]:
    """A session for reads on behalf of ``tenant_id``."""
    with tenant_session(factory, tenant_id) as session:
        yield session


@contextmanager
def consistent_reading(factory: sessionmaker[Session], tenant_id: str | None) -> Iterator[Session]:
    """A session for long reads on behalf of ``tenant_id``: one snapshot of the database, and no write lock.

    Every statement sees the same state: on SQLite the transaction begins deferred, a WAL read snapshot (every other
    transaction begins IMMEDIATE, taking the database's one write lock up front); on PostgreSQL it runs at
    REPEATABLE READ. It must not write.
    """
    with tenant_session(factory, tenant_id) as session:
        token = _SQLITE_DEFERRED_BEGIN.set(True)
        try:
            # Begins this session's transaction now, so that only it begins deferred.
            if session.get_bind().dialect.name == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            else:
                session.connection()
        finally:
            _SQLITE_DEFERRED_BEGIN.reset(token)
        yield session


@contextmanager
def connected(engine: Engine, url: str) -> Iterator[Connection]:
    """``engine.connect()``; on PostgreSQL, TLS files are checked first and a failure to connect becomes one
    :class:`~evolution.registry.pg_tls.DatabaseUnreachable` line (a wrong CA, a host-name mismatch, a refused
    certificate…) instead of the driver's multi-line report."""
    if engine.dialect.name != "postgresql":
        with engine.connect() as connection:
            yield connection
        return
    from evolution.registry.pg_tls import DatabaseUnreachable, check_files, explain_connection_failure

    check_files(url)
    try:
        connection = engine.connect()
    except OperationalError as error:
        raise DatabaseUnreachable(explain_connection_failure(error, url)) from None
    with connection:
        yield connection


def alembic_config(url: str) -> Any:
    """The Alembic configuration, built here rather than read from an alembic.ini (an installed wheel has none)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_to_head(url: str) -> None:
    """Apply every migration (the only way the schema is ever created).

    A database already at the packaged head is left alone without loading Alembic: every process and CLI command
    starts with this call, and Alembic would spend a quarter of a second finding nothing to do.
    """
    head = packaged_head()
    if head is not None and database_revisions(url) == {head}:
        return
    from alembic import command

    command.upgrade(alembic_config(url), "head")


def packaged_head() -> str | None:
    """The revision no packaged migration builds on, read from the scripts' text; None if that is not one revision
    (then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        if script.name == "__init__.py":
            continue
        source = script.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        if down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def database_revisions(url: str) -> set[str] | None:
    """The revisions the database is at (Alembic's own table), read without taking SQLite's write lock; None if
    the table is not there yet. A PostgreSQL server that cannot be connected to raises
    :class:`~evolution.registry.pg_tls.DatabaseUnreachable` naming the cause (this is every process's first
    contact with the database)."""
    engine = make_engine(url)
    token = _SQLITE_DEFERRED_BEGIN.set(True)
    try:
        with connected(engine, url) as connection:
            try:
                return set(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
            except SQLAlchemyError:
                return None
    finally:
        _SQLITE_DEFERRED_BEGIN.reset(token)
        engine.dispose()
