"""The post-promotion watch's steps against a real registry: start refuses anything but a real promotion after a
canary, and ending on harm rolls back exactly once even when the step is retried after the rollback landed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from evolution.canary.watch_models import WatchEndIn, WatchStartIn, WatchStepIn
from evolution.contracts import WatchPolicy
from evolution.errors import InvalidInput
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.db import transaction
from evolution.registry.schema import PostPromotionWatch
from evolution.security import Principal, Role
from evolution.stats.canary_models import GuardConfig, GuardState
from tests.support.promotions import GUARD, promoted

S = ModelState
SYSTEM = Principal.system("acme")
ADMIN = Principal.for_tenant("root", Role.ADMIN, "acme")
MANAGER = Principal.for_tenant("maria", Role.MANAGER, "acme")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=tmp_path / "home"))
    svc.tenants.ensure_tenant(ADMIN, "acme")
    yield svc
    svc.close()


def start(services: Services, champion: str, previous: str) -> str:
    return services.watches.start(
        WatchStartIn(
            tenant_id="acme",
            model_name="yield",
            champion_version_id=champion,
            previous_version_id=previous,
            workflow_id="watch/acme/yield",
            policy=WatchPolicy(min_labels=10),
        )
    ).watch_id


def test_a_watch_starts_only_for_a_real_promotion_after_a_canary_and_takes_the_canarys_guard(
    services: Services,
) -> None:
    first = promoted(services)
    second = promoted(services)
    with pytest.raises(InvalidInput, match="is not the champion"):
        start(services, first.id, second.id)
    with pytest.raises(InvalidInput, match="is not a former champion"):
        start(services, second.id, second.id)
    watch_id = start(services, second.id, first.id)
    assert start(services, second.id, first.id) == watch_id  # a retried start finds the one it made
    with transaction(services.factory, "acme") as session:
        row = session.get(PostPromotionWatch, watch_id)
        assert row is not None and GuardConfig.model_validate(row.guard_config) == GUARD
    third = promoted(services, canary=False)
    with pytest.raises(InvalidInput, match="had no canary"):
        start(services, third.id, second.id)


def test_ending_on_harm_rolls_back_once_even_when_the_step_is_retried(services: Services) -> None:
    first = promoted(services)
    second = promoted(services)
    watch_id = start(services, second.id, first.id)
    assert services.watches.look(WatchStepIn(tenant_id="acme", watch_id=watch_id)).verdict == "continue"
    harmed = GuardState(decided="rollback", decided_reason="harm test: always-valid q = 0.001 < 0.05")
    with transaction(services.factory, "acme") as session:
        row = session.get(PostPromotionWatch, watch_id)
        assert row is not None
        row.guard_state = harmed.model_dump(mode="json")
    end = WatchEndIn(tenant_id="acme", watch_id=watch_id, request_id="watch/acme/yield/end")
    # The rollback lands but the step is lost before the row ends: the retry must still end it rolled back.
    reason = harmed.decided_reason or ""
    services.registry.watch_rollback(SYSTEM, "acme", "yield", (second.id, first.id), end.request_id, reason)
    ended = services.watches.end(end)
    assert ended.status == "rolled_back", ended
    champion = services.registry.current(SYSTEM, "acme", "yield", S.CHAMPION)
    assert champion is not None and champion.id == first.id
    restorations = [
        e
        for e in services.registry.audit_trail(ADMIN, "acme", subject_id=first.id)
        if e.to_state == "CHAMPION"
    ]
    assert len(restorations) == 2  # its promotion, and one restoration: the retry applied nothing twice
    assert services.watches.end(end).status == "rolled_back"  # ending again changes nothing
    (progress,) = services.watches.progress(ADMIN, "acme", "yield")
    assert progress.status == "rolled_back" and progress.ended_at is not None
