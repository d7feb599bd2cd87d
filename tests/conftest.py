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


# The test files that share one demo state (tests/e2e/conftest.py `demo_stack`, a session fixture): with the suite in
# two processes they must run in one, in this order (the first asserts the demo's fresh state), or each process
# would run the demo again.
SHARED_DEMO_STATE_FILES = (
    "tests/e2e/test_demo_cli.py",
    "tests/e2e/test_docs_commands.py",
    "tests/e2e/test_json_output.py",
    "tests/e2e/test_retrain_waits.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    strays = {
        item.nodeid.split("::", 1)[0]
        for item in items
        if "demo_stack" in getattr(item, "fixturenames", ())
        and item.nodeid.split("::", 1)[0] not in SHARED_DEMO_STATE_FILES
    }
    if strays:
        raise pytest.UsageError(
            f"{', '.join(sorted(strays))} use the shared demo state: add them to SHARED_DEMO_STATE_FILES"
        )


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadfile`, with the files of the shared demo state sent to one process as one unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedDemoStateFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_DEMO_STATE_FILES[0] if path in SHARED_DEMO_STATE_FILES else path

    return SharedDemoStateFirst(config, log)  # type: ignore[arg-type]
