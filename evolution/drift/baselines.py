"""Baseline reset: an admin accepts the current world as the new normal for drift scans, with a reason, signed.

The reset baseline is built from the latest sealed snapshot (and the champion's errors on it), signed, stored in the
artifact store, and recorded in the tenant's settings for that champion. A new champion brings its own baseline, so a
reset applies only while the champion it was made for stays in place.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel

from evolution.canonical import canonical_json
from evolution.data.snapshots import DatasetSnapshotService
from evolution.errors import IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.artifacts import ArtifactStore
from evolution.integrity.signing import KeyRing, Signature, Signer
from evolution.lifecycle import ModelState
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Action, Principal, authorize
from evolution.stats.drift import build_baseline
from evolution.stats.drift_models import Baseline, DriftConfig
from evolution.timeutil import iso, utcnow
from evolution.training.loader import ModelLoader


class BaselineOverride(BaseModel):
    model_name: str
    champion_version_id: str
    snapshot_id: str
    digest: str
    signature: Signature
    reset_by: str
    reason: str
    at: str


class BaselineService:
    def __init__(
        self,
        registry: ModelRegistryService,
        tenants: TenantService,
        snapshots: DatasetSnapshotService,
        loader: ModelLoader,
        store: ArtifactStore,
        signer: Signer,
    ) -> None:
        self._registry = registry
        self._tenants = tenants
        self._snapshots = snapshots
        self._loader = loader
        self._store = store
        self._signer = signer

    def reset(
        self, principal: Principal, tenant_id: str, model_name: str, reason: str, keyring: KeyRing
    ) -> BaselineOverride:
        authorize(principal, Action.RESET_BASELINE, tenant_id)
        if not reason.strip():
            raise InvalidInput("reason: a baseline reset needs a reason for the audit log")
        system = Principal.system(tenant_id)
        champion = self._registry.current(system, tenant_id, model_name, ModelState.CHAMPION)
        if champion is None:
            raise NotFound(f"{tenant_id}/{model_name} has no champion whose baseline could be reset")
        snapshot = self._snapshots.latest(system, tenant_id)
        if snapshot is None:
            raise NotFound(f"tenant {tenant_id!r} has no sealed snapshot to take a baseline from")
        loaded = self._loader.load(champion)
        rows = self._snapshots.load_rows(snapshot, keyring)
        names = [f.name for f in loaded.baseline.features] if loaded.baseline else loaded.model.features
        settings = self._tenants.tenant_settings(system, tenant_id)
        config = settings.drift_config_over(loaded.baseline.config if loaded.baseline else DriftConfig())
        labelled = [r for r in rows if r.get("actual") is not None]
        errors = None
        if labelled:
            predicted = loaded.model.predict(labelled)
            errors = np.abs(np.asarray([r["actual"] for r in labelled], dtype=float) - predicted)
        baseline = build_baseline({n: [r.get(n) for r in rows] for n in names}, errors, config=config)
        body = baseline.model_dump_json().encode()
        digest = self._store.put_bytes(tenant_id, body)
        now = utcnow()
        statement = _statement(tenant_id, model_name, champion.id, snapshot.id, digest, now)
        override = BaselineOverride(
            model_name=model_name,
            champion_version_id=champion.id,
            snapshot_id=snapshot.id,
            digest=digest,
            signature=self._signer.sign(statement),
            reset_by=principal.user,
            reason=reason,
            at=iso(now),
        )
        current = settings.baseline_overrides
        self._tenants.configure_tenant(
            principal,
            tenant_id,
            {"baseline_overrides": {**current, model_name: override.model_dump(mode="json")}},
        )
        return override

    def effective(
        self, tenant_id: str, model_name: str, champion_version_id: str, keyring: KeyRing
    ) -> Baseline | None:
        """The verified reset baseline for this champion, or None when the champion's own baseline applies."""
        found = self.effective_source(tenant_id, model_name, champion_version_id, keyring)
        return found[0] if found else None

    def effective_source(
        self, tenant_id: str, model_name: str, champion_version_id: str, keyring: KeyRing
    ) -> tuple[Baseline, str] | None:
        """:meth:`effective` with the id of the snapshot the reset baseline was taken from."""
        settings = self._tenants.tenant_settings(Principal.system(tenant_id), tenant_id)
        raw = settings.baseline_overrides.get(model_name)
        if raw is None:
            return None
        override = read_override(tenant_id, model_name, raw)
        if override.champion_version_id != champion_version_id:
            return None
        verify_override(tenant_id, model_name, override, keyring)
        body = self._store.read_bytes(tenant_id, override.digest)
        try:
            return Baseline.model_validate_json(body), override.snapshot_id
        except ValueError as error:
            raise IntegrityViolation(
                f"reset baseline of {tenant_id}/{model_name} is malformed: {error}"
            ) from None


def read_override(tenant_id: str, model_name: str, raw: dict[str, Any]) -> BaselineOverride:
    """A recorded baseline reset, as recorded; IntegrityViolation if it is malformed (nothing checked yet)."""
    try:
        return BaselineOverride.model_validate(raw)
    except ValueError as error:
        first = str(error).splitlines()[0][:200]
        raise IntegrityViolation(
            f"the baseline reset of {tenant_id}/{model_name} is malformed: {first}"
        ) from None


def verify_override(tenant_id: str, model_name: str, override: BaselineOverride, keyring: KeyRing) -> None:
    """The reset's signed statement, which names the baseline's digest, verifies; IntegrityViolation if not."""
    try:
        at = datetime.fromisoformat(override.at.replace("Z", "+00:00"))
    except ValueError:
        raise IntegrityViolation(
            f"the baseline reset of {tenant_id}/{model_name} has no valid time: {override.at!r}"
        ) from None
    statement = _statement(
        tenant_id, model_name, override.champion_version_id, override.snapshot_id, override.digest, at
    )
    keyring.verify(statement, override.signature)


def _statement(
    tenant_id: str, model_name: str, champion_id: str, snapshot_id: str, digest: str, at: datetime
) -> bytes:
    return canonical_json(
        {
            "schema": "controlled-evolution/baseline-reset/v1",
            "tenant": tenant_id,
            "model_name": model_name,
            "champion_version_id": champion_id,
            "snapshot_id": snapshot_id,
            "digest": digest,
            "at": iso(at),
        }
    )
