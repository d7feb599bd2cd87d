"""Alembic environment: the URL comes from the Alembic config that evolution.registry.db builds (`evolution db
upgrade`, and every process at start), else, when a developer runs the `alembic` command with the repository's
alembic.ini, from ``-x url=...``. (It does not read the project's settings: the registry does not import the
platform room.)"""

from __future__ import annotations

from contextlib import nullcontext

from alembic import context

from evolution.registry.db import make_engine
from evolution.registry.schema import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit(
            "no database URL: run `evolution db upgrade` (it reads EVOLUTION_DATABASE_OWNER_URL / "
            "EVOLUTION_DATABASE_URL / EVOLUTION_HOME), or pass one: alembic -x url=sqlite:///.evolution/registry.db ..."
        )
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    # SQLite: the whole upgrade is one transaction, begun IMMEDIATE (make_engine), so processes that start together
    # (`evolution up`) migrate one after the other and the later ones find the head. Left to itself Alembic commits
    # after each migration there, and a process could start from another's half-way revision while that one goes
    # on, both running the next migration. (PostgreSQL: one transaction already.)
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection, connection.begin() if sqlite else nullcontext():
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
