from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from evolution.registry.db import make_engine, make_session_factory, upgrade_to_head
from tests.support.postgres import app_role_url, create_database, postgres_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def _migrated_factory(url: str) -> Iterator[sessionmaker[Session]]:
    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def sqlite_factory(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    yield from _migrated_factory(sqlite_url)


@pytest.fixture
def pg_url(pg_server: str) -> str:
    return create_database(pg_server)


@pytest.fixture
def pg_factory(pg_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade_to_head(pg_url)
    engine = make_engine(app_role_url(pg_url))
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry_factory(request: pytest.FixtureRequest) -> sessionmaker[Session]:
    """The same migrations and behaviour on both databases."""
    name = "sqlite_factory" if request.param == "sqlite" else "pg_factory"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]
