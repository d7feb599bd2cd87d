"""A promotion after a canary made by the registry alone (no training, no workflow): what the post-promotion watch's
start step accepts, in milliseconds."""

from __future__ import annotations

import uuid

from evolution.lifecycle import ModelState, TransitionRequest, VersionView
from evolution.platform.wiring import Services
from evolution.security import Principal, Role
from evolution.stats.canary_models import GuardConfig

GUARD = GuardConfig(tau=0.05, tau_harm=0.2)


def promoted(services: Services, tenant: str = "acme", canary: bool = True) -> VersionView:
    """A new version of ``yield`` through SHADOW and CANARY (with the guard the watch takes) to CHAMPION."""
    system = Principal.system(tenant)
    version = services.registry.register_version(system, tenant, "yield", request_id=uuid.uuid4().hex)
    for state in (ModelState.TRAINING, ModelState.VALIDATED, ModelState.SHADOW, ModelState.CANARY):
        details = {"guard_config": GUARD.model_dump()} if state == ModelState.CANARY and canary else {}
        version = services.registry.transition(
            system,
            TransitionRequest(
                version_id=version.id,
                to_state=state,
                expected_version=version.lock_version,
                request_id=uuid.uuid4().hex,
                details=details,
            ),
        ).version
    manager = Principal.for_tenant("maria", Role.MANAGER, tenant)
    return services.registry.promote(manager, version.id, version.lock_version, uuid.uuid4().hex).version
