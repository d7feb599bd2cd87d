"""The demo scenario: a tenant's history, a champion, drift injected at a known time, live traffic and outcomes.

The same driver runs in `evolution demo` (over HTTP against the serving process) and in the workflow tests (in
process), so the tests exercise exactly what the demo does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from evolution.data.event_schema import IngestSummary
from evolution.data.events import EventIngestor
from evolution.data.sources import records_to_events
from evolution.demo.synthetic import TARGET, DriftSpec, generate_rows
from evolution.security import Principal
from evolution.serving.predictor import PredictInstance, Predictor
from evolution.timeutil import utcnow


class Transport(Protocol):
    def predict(
        self, tenant_id: str, model_name: str, instances: list[dict[str, Any]]
    ) -> list[dict[str, Any]]: ...

    def send_events(self, tenant_id: str, events: list[dict[str, Any]]) -> IngestSummary: ...


class InProcessTransport:
    def __init__(self, predictor: Predictor, ingestor: EventIngestor) -> None:
        self._predictor = predictor
        self._ingestor = ingestor

    def predict(
        self, tenant_id: str, model_name: str, instances: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        outs = self._predictor.predict(
            Principal.system(tenant_id, "serving"),
            tenant_id,
            model_name,
            [PredictInstance.model_validate(i) for i in instances],
        )
        return [o.model_dump() for o in outs]

    def send_events(self, tenant_id: str, events: list[dict[str, Any]]) -> IngestSummary:
        return self._ingestor.ingest_objects(
            Principal.system(tenant_id, "ingest-api"), tenant_id, events, "demo"
        )


class HttpTransport:
    """The serving API over HTTP, authenticated with an API token (``evolution users token create``)."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 60.0) -> None:
        import httpx

        self._client = httpx.Client(
            base_url=base_url, timeout=timeout_s, headers={"Authorization": f"Bearer {token}"}
        )

    def predict(
        self, tenant_id: str, model_name: str, instances: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        response = self._client.post(
            f"/v1/tenants/{tenant_id}/models/{model_name}/predict", json={"instances": instances}
        )
        response.raise_for_status()
        return list(response.json()["predictions"])

    def send_events(self, tenant_id: str, events: list[dict[str, Any]]) -> IngestSummary:
        response = self._client.post(f"/v1/tenants/{tenant_id}/events", json={"events": events})
        response.raise_for_status()
        return IngestSummary.model_validate(response.json())

    def close(self) -> None:
        self._client.close()


@dataclass
class Scenario:
    tenant_id: str = "acme-agro"
    model_name: str = "yield"
    seed: int = 7
    history_rows: int = 3000
    drift_rows: int = 1500
    round_rows: int = 500
    history_days: int = 120


def history_records(scenario: Scenario, now: datetime | None = None) -> list[dict[str, Any]]:
    """The tenant's pre-drift past, spread over ``history_days`` ending an hour ago."""
    now = now or utcnow()
    start = now - timedelta(days=scenario.history_days)
    period = (scenario.history_days * 86400 - 3600) / max(scenario.history_rows, 1)
    return generate_rows(scenario.history_rows, scenario.seed, start, period_s=period)


@dataclass
class TrafficDriver:
    """Live traffic after the drift: each round predicts fresh drifted rows, then reports their outcomes."""

    scenario: Scenario
    transport: Transport
    key_id: str
    private_pem: bytes
    drift: DriftSpec
    rounds: int = 0
    sent: int = 0
    roles: dict[str, int] = field(default_factory=dict)
    last_roles: dict[str, int] = field(default_factory=dict)  # the latest round's predictions by serving role

    def round(self, rows: int | None = None) -> IngestSummary:
        count = rows or self.scenario.round_rows
        self.rounds += 1
        records = generate_rows(
            count, self.scenario.seed * 1000 + self.rounds, utcnow(), drift=self.drift, period_s=0.001
        )
        prefix = f"live-{self.rounds:05d}"
        instances = [
            {"request_id": f"{prefix}-{i:06d}", "features": _features(r)} for i, r in enumerate(records)
        ]
        predictions = [
            p
            for batch in _batches(instances, 500)
            for p in self.transport.predict(self.scenario.tenant_id, self.scenario.model_name, batch)
        ]
        self.last_roles = {}
        for p in predictions:
            self.roles[p["role"]] = self.roles.get(p["role"], 0) + 1
            self.last_roles[p["role"]] = self.last_roles.get(p["role"], 0) + 1
        for record, instance, prediction in zip(records, instances, predictions, strict=True):
            record["request_id"] = instance["request_id"]
            record["prediction_id"] = prediction["prediction_id"]
        summary = IngestSummary()
        for batch in _batches(records, 1000):
            events = list(
                records_to_events(
                    batch,
                    self.scenario.tenant_id,
                    self.key_id,
                    self.private_pem,
                    target=TARGET,
                    request_prefix=prefix,
                )
            )
            summary.add(self.transport.send_events(self.scenario.tenant_id, events))
        self.sent += count
        return summary


def _features(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("event_time", TARGET)}


def _batches(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
