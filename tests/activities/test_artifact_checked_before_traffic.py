"""A model is re-verified when it is about to meet traffic: entering CANARY and being promoted to CHAMPION.

A file changed after validation is refused with IntegrityViolation (the workflow then quarantines the candidate);
an intact one moves on. Real registry (SQLite), real artifact store and signatures, ActivityEnvironment.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.registry import RegistryActivities
from evolution.contracts import PrincipalRef, PromoteIn, TransitionIn
from evolution.lifecycle import ModelState, VersionView
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal, Role
from tests.support.models import install_model

TENANT = "acme"


@pytest.fixture
def services(tmp_path: Path) -> Services:
    built = build_services(Settings(home=tmp_path / "state"))
    built.tenants.ensure_tenant(Principal(user="root", role=Role.ADMIN, tenants=("*",)), TENANT)
    return built


def activities(services: Services) -> RegistryActivities:
    return RegistryActivities(services.registry, services.quota, services.notifier, verifier=services.loader)


def tamper(services: Services, version: VersionView) -> None:
    digest = version.manifest["manifest"]["files"][0]["sha256"]  # type: ignore[index]
    path = next(Path(services.settings.artifacts_dir, TENANT).rglob(digest))
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def to_canary(version: VersionView) -> TransitionIn:
    return TransitionIn(
        tenant_id=TENANT,
        version_id=version.id,
        to_state="CANARY",
        expected_version=version.lock_version,
        request_id=uuid.uuid4().hex,
        reason="canary",
    )


def promotion(version: VersionView) -> PromoteIn:
    return PromoteIn(
        version_id=version.id,
        expected_version=version.lock_version,
        request_id=uuid.uuid4().hex,
        approver=PrincipalRef(user="maria", role="manager", tenant_id=TENANT),
        reason="approved",
    )


def test_a_tampered_shadow_model_is_refused_entry_to_canary(services: Services, tmp_path: Path) -> None:
    shadow = install_model(services, TENANT, tmp_path, ModelState.SHADOW)
    tamper(services, shadow)
    with pytest.raises(ApplicationError) as refused:
        ActivityEnvironment().run(activities(services).transition, to_canary(shadow))
    assert refused.value.type == "IntegrityViolation" and refused.value.non_retryable
    assert services.registry.get_version(Principal.system(TENANT), shadow.id).state == ModelState.SHADOW


def test_a_tampered_canary_is_refused_promotion(services: Services, tmp_path: Path) -> None:
    canary = install_model(services, TENANT, tmp_path, ModelState.CANARY)
    tamper(services, canary)
    with pytest.raises(ApplicationError) as refused:
        ActivityEnvironment().run(activities(services).promote, promotion(canary))
    assert refused.value.type == "IntegrityViolation"
    assert services.registry.get_version(Principal.system(TENANT), canary.id).state == ModelState.CANARY


def test_an_intact_model_enters_canary_and_is_promoted(services: Services, tmp_path: Path) -> None:
    shadow = install_model(services, TENANT, tmp_path, ModelState.SHADOW)
    env = ActivityEnvironment()
    canary = env.run(activities(services).transition, to_canary(shadow)).result.version
    champion = env.run(activities(services).promote, promotion(canary)).result.version
    assert champion.state == ModelState.CHAMPION
