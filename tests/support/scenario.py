"""A seeded tenant for workflow tests: history events ingested and sealed, a source key to sign more."""

from __future__ import annotations

from dataclasses import dataclass

from evolution.data.sources import create_source_key, records_to_events
from evolution.demo.scenario import Scenario, history_records
from evolution.demo.synthetic import TARGET
from evolution.platform.wiring import Services
from evolution.security import Principal, Role

ADMIN = Principal.for_tenant("root", Role.ADMIN, "*")


@dataclass
class SeededTenant:
    scenario: Scenario
    key_id: str
    private_pem: bytes


def seed_tenant(services: Services, scenario: Scenario) -> SeededTenant:
    tenant = scenario.tenant_id
    services.tenants.ensure_tenant(ADMIN, tenant)
    key_id, public_pem, path = create_source_key(services.settings.keys_dir, tenant, "field-sensors")
    services.events.register_source_key(ADMIN, tenant, key_id, public_pem)
    private_pem = path.read_bytes()
    events = records_to_events(
        history_records(scenario), tenant, key_id, private_pem, target=TARGET, request_prefix="hist"
    )
    summary = services.events.ingest_objects(ADMIN, tenant, list(events), "test")
    assert summary.accepted == scenario.history_rows, summary
    return SeededTenant(scenario, key_id, private_pem)
