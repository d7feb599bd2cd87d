"""Serving through a registry outage, in-process: the prediction buffer (write-through while up, bounded queue with
drop-oldest while down, retry until back) and the predictor's model cache (background refresh keeps cached models,
never-loaded models get ModelUnavailable, one log line per outage). Over real processes and a real PostgreSQL:
tests/reliability/test_serving_availability.py."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from evolution.data.outcomes import PredictionRecord
from evolution.lifecycle import ModelState, VersionView
from evolution.observability import metrics
from evolution.security import Principal, Role
from evolution.serving import predictor as predictor_module
from evolution.serving.buffer import PredictionBuffer
from evolution.serving.predictor import ModelUnavailable, PredictInstance, Predictor
from evolution.training.loader import LoadedModel

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def unreachable() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def record(i: int, tenant: str = "acme") -> PredictionRecord:
    return PredictionRecord(
        id=f"p-{i}",
        tenant_id=tenant,
        model_name="yield",
        request_id=f"q-{i}",
        served_role="champion",
        champion_version_id="v1",
        champion_prediction=1.0,
        candidate_version_id=None,
        candidate_prediction=None,
        served_prediction=1.0,
        latency_ms=0.1,
        created_at=NOW,
    )


class Store:
    """Stands in for OutcomeJoiner.record_predictions: a table keyed by id that can be made unreachable."""

    def __init__(self) -> None:
        self.down = False
        self.rows: dict[str, PredictionRecord] = {}
        self.refuse: set[str] = set()
        self.calls = 0
        self.threads: set[str] = set()

    def write(self, records: Sequence[PredictionRecord]) -> None:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.down:
            raise unreachable()
        for r in records:
            if r.id in self.rows:
                raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed: predictions.id"))
            if r.id in self.refuse:
                raise IntegrityError("INSERT", {}, Exception("FOREIGN KEY constraint failed"))
        self.rows.update({r.id: r for r in records})


def dropped(tenant: str, reason: str) -> float:
    value = metrics.PREDICTIONS_DROPPED.labels(tenant, reason)._value.get()
    return float(value)


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def buffer(store: Store) -> Iterator[PredictionBuffer]:
    buf = PredictionBuffer(store.write, capacity=10, batch_size=4, retry_first_s=0.01, retry_max_s=0.05)
    yield buf
    store.down = False
    buf.close(5.0)


# ------------------------------------------------------------------------------------------ prediction buffer


def test_while_the_registry_is_up_records_are_written_in_the_request(
    buffer: PredictionBuffer, store: Store
) -> None:
    buffer.record([record(1), record(2)])
    assert set(store.rows) == {"p-1", "p-2"} and buffer.pending == 0
    assert store.threads == {threading.current_thread().name}


def test_while_it_is_down_records_wait_in_memory_and_are_written_in_order_when_it_is_back(
    buffer: PredictionBuffer, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    store.down = True
    with caplog.at_level(logging.INFO, logger="evolution.serving.buffer"):
        for i in range(8):
            buffer.record([record(i)])  # never raises, never blocks on the registry
        assert buffer.pending == 8 and not store.rows
        wait_for(lambda: store.calls >= 5)  # the writer keeps retrying
        store.down = False
        assert buffer.flush(30.0)
    assert list(store.rows) == [f"p-{i}" for i in range(8)]
    assert buffer.dropped == 0 and buffer.written_late == 8
    warnings = [
        r for r in caplog.records if r.name == "evolution.serving.buffer" and r.levelno == logging.WARNING
    ]
    # Once per outage, not per attempt.
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    calls = store.calls
    buffer.record([record(99)])  # back to writing in the request
    assert "p-99" in store.rows and store.calls == calls + 1


def test_a_full_buffer_drops_the_oldest_records_counts_them_and_warns_once(
    buffer: PredictionBuffer, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    before = dropped("tenant-full", "buffer_full")
    store.down = True
    with caplog.at_level(logging.WARNING, logger="evolution.serving.buffer"):
        for i in range(25):
            buffer.record([record(i, "tenant-full")])
    assert buffer.pending <= 10 + 4  # capacity plus the batch being written
    store.down = False
    assert buffer.flush(30.0)
    kept = sorted(int(key.removeprefix("p-")) for key in store.rows)
    assert kept == list(range(25 - len(kept), 25)), "the newest records are kept"
    assert buffer.dropped == 25 - len(kept) >= 11
    assert dropped("tenant-full", "buffer_full") - before == buffer.dropped
    full = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(full) == 1 and "will not join" in full[0].getMessage()


def test_a_refused_record_is_dropped_alone_and_one_already_stored_is_not_written_twice(
    buffer: PredictionBuffer, store: Store
) -> None:
    before = dropped("acme", "rejected")
    store.down = True
    buffer.record([record(1), record(2), record(3)])
    store.rows["p-1"] = record(1)  # its commit went through although the answer never arrived
    store.refuse.add("p-2")
    store.down = False
    assert buffer.flush(30.0)
    assert set(store.rows) == {"p-1", "p-3"}
    assert buffer.dropped == 1 and dropped("acme", "rejected") - before == 1


def test_buffer_sizes_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError, match="capacity"):
        PredictionBuffer(store.write, capacity=0)


# ------------------------------------------------------------------------------------------ predictor cache


class Model:
    features = ["x"]  # what ONE sends: the predictor refuses features its model does not know

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, rows: list[dict[str, Any]]) -> list[float]:
        return [self.value for _ in rows]


class Registry:
    """Answers in_states like ModelRegistryService; can be made unreachable; counts calls."""

    def __init__(self) -> None:
        self.down = False
        self.versions: dict[tuple[str, str], list[VersionView]] = {}
        self.calls = 0
        self.threads: set[str] = set()

    def in_states(self, _principal: Principal, tenant: str, model: str, _states: Any) -> list[VersionView]:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if self.down:
            raise unreachable()
        return list(self.versions.get((tenant, model), []))

    def champion(self, tenant: str, number: int) -> None:
        version = VersionView(
            id=f"{tenant}-v{number}",
            tenant_id=tenant,
            model_name="yield",
            number=number,
            state=ModelState.CHAMPION,
            lock_version=number,
            created_at=NOW,
            updated_at=NOW,
        )
        self.versions[(tenant, "yield")] = [version]


class Loader:
    def load(self, version: VersionView) -> LoadedModel:
        return LoadedModel(
            version_id=version.id,
            number=version.number,
            model_hash="h",
            model=Model(float(version.number)),  # type: ignore[arg-type]
            baseline=None,
            card={},
        )


VIEWER = Principal.for_tenant("vic", Role.VIEWER, "*")
ONE = [PredictInstance(request_id="q-1", features={"x": 1.0})]


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    registry.champion("acme", 1)
    registry.champion("globex", 1)
    return registry


def make_predictor(registry: Registry, store: Store, refresh_s: float) -> Predictor:
    return Predictor(
        registry,  # type: ignore[arg-type]
        Loader(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        canary_share=0.1,
        refresh_s=refresh_s,
        records=PredictionBuffer(store.write, retry_first_s=0.01, retry_max_s=0.05),
    )


def test_with_background_refresh_requests_never_ask_the_registry_and_cached_models_serve_through_an_outage(
    registry: Registry, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    predictor = make_predictor(registry, store, refresh_s=0.02)
    try:
        assert predictor.predict(VIEWER, "acme", "yield", ONE)[0].version_number == 1  # first use loads
        predictor.start()
        registry.threads.clear()
        with caplog.at_level(logging.INFO, logger="evolution.serving.predictor"):
            registry.down = True
            store.down = True
            calls = registry.calls
            wait_for(lambda: registry.calls >= calls + 5)  # the refresher keeps trying
            for i in range(50):
                out = predictor.predict(
                    VIEWER, "acme", "yield", [PredictInstance(request_id=f"r{i}", features={})]
                )
                assert out[0].version_number == 1
            assert predictor.records.pending == 50
            assert registry.threads == {"model-refresh"}  # the requests themselves never asked
            with pytest.raises(ModelUnavailable, match="globex/yield has not been loaded"):
                predictor.predict(VIEWER, "globex", "yield", ONE)
            registry.champion("acme", 2)  # promoted while serving was cut off from the registry
            registry.down = False
            store.down = False
            wait_for(lambda: predictor.predict(VIEWER, "acme", "yield", ONE)[0].version_number == 2)
            assert predictor.records.flush(30.0)
        warnings = [
            r for r in caplog.records if r.name == predictor_module.log.name and r.levelno >= logging.WARNING
        ]
        assert len(warnings) == 1 and "serving the cached models" in warnings[0].getMessage()
        assert len(store.rows) >= 51
    finally:
        predictor.close(5.0)


def test_requests_never_wait_on_the_registry_when_the_model_is_cached_and_the_refresher_runs(
    registry: Registry, store: Store
) -> None:
    predictor = make_predictor(registry, store, refresh_s=3600.0)
    try:
        predictor.predict(VIEWER, "acme", "yield", ONE)
        predictor.start()
        registry.down = True
        calls = registry.calls
        for _ in range(20):
            predictor.predict(VIEWER, "acme", "yield", ONE)
        assert registry.calls == calls  # served from memory; the refresher alone asks, once an hour here
    finally:
        predictor.close(5.0)


def test_inline_refresh_keeps_the_cache_and_a_never_loaded_model_fails_fast_during_an_outage(
    registry: Registry, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predictor_module, "MISS_RETRY_S", 3600.0)
    predictor = make_predictor(registry, store, refresh_s=0.0)  # no refresher: each request re-reads
    predictor.predict(VIEWER, "acme", "yield", ONE)
    registry.down = True
    calls = registry.calls
    for _ in range(10):
        assert predictor.predict(VIEWER, "acme", "yield", ONE)[0].version_number == 1
    for _ in range(3):
        with pytest.raises(ModelUnavailable):
            predictor.predict(VIEWER, "globex", "yield", ONE)
    assert registry.calls == calls + 1  # the first failure; the others do not wait for the registry to fail


def test_written_behind_records_never_touch_the_request_thread_and_land_in_one_batch(store: Store) -> None:
    buf = PredictionBuffer(store.write, batch_size=100, write_behind_s=0.2)
    try:
        for i in range(5):
            buf.record([record(i)])  # returns at once: nothing written yet, in this thread or any
        assert not store.rows and buf.pending == 5
        assert buf.flush(10.0)
        assert list(store.rows) == [f"p-{i}" for i in range(5)]
        assert store.calls == 1, "what arrived within the window went in one transaction"
        assert threading.current_thread().name not in store.threads
    finally:
        buf.close(5.0)


def test_a_write_behind_buffer_keeps_records_through_an_outage_and_closes_promptly(store: Store) -> None:
    buf = PredictionBuffer(store.write, write_behind_s=0.0, retry_first_s=0.01, retry_max_s=0.05)
    store.down = True
    buf.record([record(1)])
    wait_for(lambda: store.calls >= 2)
    store.down = False
    assert buf.flush(10.0) and "p-1" in store.rows
    started = time.monotonic()
    buf.close(5.0)
    assert time.monotonic() - started < 1.0, "the idle writer wakes up to close"
