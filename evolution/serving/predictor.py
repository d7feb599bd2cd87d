"""Answers predictions from cached, verified models: champion serves, a SHADOW candidate scores alongside, a CANARY
candidate serves a deterministic share of requests (by request id) while the champion shadow-scores them; after a
promotion, the previous champion scores beside the champion while a post-promotion watch runs.

Serving outlives registry outages. The models of each tenant and model name are loaded on first use and kept in
memory; which versions serve is re-read from the registry every ``refresh_s``:

* with :meth:`Predictor.start` (``evolution serve``) a background thread does that for every cached model, so a
  request never waits on the registry for a model this process has served before; a refresh that fails keeps the
  cached models (one warning when the outage starts, one line when it ends);
* without it (tests, embedded use) a request that finds its entry older than ``refresh_s`` re-reads it inline; a
  failure there also keeps the cached models, and the registry is not asked again for a second;
* a tenant and model never loaded by this process cannot be served while the registry is down: that request gets
  :class:`ModelUnavailable` (HTTP 503 with Retry-After) and, for a second after such a failure, others like it get
  the same answer without another attempt.

Every prediction is recorded through a :class:`~evolution.serving.buffer.PredictionBuffer`: written at once while the
registry answers, queued in memory (bounded) and written later when it does not. Nothing in the request path talks
to Temporal.

Models of either format serve side by side (a built-in champion with an ONNX candidate, or the other way round):
each predicts through the model-format port (:mod:`evolution.training.formats`). A candidate that fails to predict
(:class:`~evolution.errors.ModelFailed`) never costs the champion's answer: its predictions count as invalid, so it
serves none of those requests and the record says it gave nothing.

Features of an instance: a feature that is absent or null is *missing*, and the model takes the branch it learned
for missing values (the built-in format handles them natively; an ONNX model gets NaN, or "" for a category); a
category it never saw in training counts as missing too. A feature that none of the serving models (the champion, and the shadow or canary
candidate) was trained on, and that is not one of the tenant's identifier columns (``id_columns``, e.g. field_id,
sent with every event and never a feature), is refused with :class:`UnknownFeatures` (HTTP 422 naming it): a
misspelt feature would otherwise be silently predicted on as missing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from evolution.data.outcomes import OutcomeJoiner, PredictionRecord
from evolution.errors import EvolutionError, IntegrityViolation, InvalidInput, ModelFailed, NotFound
from evolution.lifecycle import ModelState, VersionView
from evolution.observability import metrics
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Action, Principal, authorize
from evolution.serving.buffer import PredictionBuffer
from evolution.serving.outage import Outage
from evolution.timeutil import utcnow
from evolution.training.loader import LoadedModel, ModelLoader

log = logging.getLogger(__name__)
SERVING_STATES = (ModelState.CHAMPION, ModelState.SHADOW, ModelState.CANARY)
RETRY_AFTER_S = 5
MISS_RETRY_S = (
    1.0  # after a failed first load, how long others fail fast instead of asking the registry again
)
MIN_BACKGROUND_REFRESH_S = 0.05


class ModelUnavailable(EvolutionError):
    """The registry cannot be reached and this process has never loaded the tenant's model: nothing to serve."""

    error_type = "ModelUnavailable"
    retry_after_s = RETRY_AFTER_S


class UnknownFeatures(InvalidInput):
    """Instances name features the serving models were not trained on; ``problems`` locates each one."""

    def __init__(self, message: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.problems = problems


WatchedPredecessor = Callable[[str, str], VersionView | None]
"""Given a tenant and a model name, the previous champion a post-promotion watch has scored beside the champion."""

ExtraFeatures = Literal["refuse", "ignore"]
ExtraFeaturesPolicy = Callable[[str, str], ExtraFeatures]
"""Given a tenant and a model name, what a feature the model does not know gets: refused (422) or ignored."""


def refuse_extra_features(_tenant_id: str, _model_name: str) -> ExtraFeatures:
    """Every model refuses unknown features until model definitions (a later issue) can say otherwise."""
    return "refuse"


MAX_FEATURES = 500
MAX_NAMED = (
    20  # unknown features named in one answer's detail: enough to see the mistake, short enough to read
)
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
FeatureValue = (
    Annotated[float, Field(allow_inf_nan=False)]
    | Annotated[str, StringConstraints(max_length=200)]
    | bool
    | None
)


class PredictInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        pattern=r"^[!-~]{1,100}$",
        description="The caller's id for this forecast (printable ASCII, no spaces); the same id always takes "
        "the same route between champion and canary, and the outcome reported later names it.",
    )
    features: dict[FeatureName, FeatureValue] = Field(
        max_length=MAX_FEATURES,
        description="Feature values by name. An absent or null feature is missing: the model takes the branch it "
        "learned for missing values (a category not seen in training counts as missing too). A name that no "
        "serving model was trained on, other than the tenant's identifier columns (e.g. field_id), is refused "
        "with 422 naming it.",
    )


class PredictOut(BaseModel):
    request_id: str
    prediction_id: str
    prediction: float
    served_by: str = Field(description="model version id")
    version_number: int
    role: str = Field(
        description="champion, shadow (champion served, candidate scored), canary, or watch (champion served, the "
        "previous champion scored: a post-promotion watch)"
    )


class ServingModel(BaseModel):
    version_id: str
    number: int
    model_hash: str


class CurrentModels(BaseModel):
    champion: ServingModel | None
    candidate: ServingModel | None
    candidate_state: ModelState | None = Field(
        description="SHADOW or CANARY when a candidate serves; DEPRECATED when the previous champion is watched"
    )
    canary_share: float


def canary_bucket(tenant_id: str, model_name: str, request_id: str) -> float:
    """A stable number in [0, 1) per request id: the same request always takes the same route."""
    digest = hashlib.sha256(f"{tenant_id}/{model_name}/{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class _Slot:
    champion: LoadedModel | None
    candidate: LoadedModel | None
    candidate_state: ModelState | None
    checked_at: float
    fingerprint: tuple[tuple[str, int], ...]
    id_columns: frozenset[str] = frozenset()

    @cached_property
    def features(self) -> frozenset[str]:
        """What the serving models were trained on (a candidate may know a feature the champion does not)."""
        return frozenset(
            name for loaded in (self.champion, self.candidate) if loaded for name in loaded.model.features
        )


class Predictor:
    def __init__(
        self,
        registry: ModelRegistryService,
        loader: ModelLoader,
        outcomes: OutcomeJoiner,
        canary_share: float,
        refresh_s: float = 1.0,
        records: PredictionBuffer | None = None,
        tenants: TenantService | None = None,
        extra_features: ExtraFeaturesPolicy = refuse_extra_features,
        watched_predecessor: WatchedPredecessor | None = None,
    ) -> None:
        """``tenants`` tells each tenant's identifier columns (accepted in instances, never used); without it only
        the models' own features are accepted."""
        self._registry = registry
        self._tenants = tenants
        self._extra_features = extra_features
        self._watched_predecessor = watched_predecessor
        self._loader = loader
        self._outcomes = outcomes
        self._canary_share = canary_share
        self._refresh_s = refresh_s
        self._records = records if records is not None else PredictionBuffer(outcomes.record_predictions)
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._lock = threading.Lock()  # guards _slots and _loading
        self._loading: dict[tuple[str, str], threading.Lock] = {}  # one refresh at a time per model
        self._outage = Outage(log, "model refresh", "serving the cached models")
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        # Names this process has served: the only ones metric labels take (see metric_labels).
        self._served: set[tuple[str, str]] = set()
        self._served_tenants: set[str] = set()

    @property
    def records(self) -> PredictionBuffer:
        return self._records

    def start(self) -> None:
        """Refresh every cached model in the background from now on (the request path then never waits on the
        registry for a model already loaded)."""
        with self._lock:
            if self._refresher is not None:
                return
            self._stop.clear()
            self._refresher = threading.Thread(target=self._refresh_loop, name="model-refresh", daemon=True)
            self._refresher.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the background refresh and give the prediction records ``timeout_s`` to reach the registry."""
        self._stop.set()
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.join(timeout=timeout_s)
        self._records.close(timeout_s)

    def predict(
        self, principal: Principal, tenant_id: str, model_name: str, instances: list[PredictInstance]
    ) -> list[PredictOut]:
        authorize(principal, Action.PREDICT, tenant_id)
        slot = self._slot(tenant_id, model_name)
        if slot.champion is None:
            raise NotFound(f"{tenant_id}/{model_name} has no champion to serve")
        if self._extra_features(tenant_id, model_name) == "refuse":
            _refuse_unknown_features(tenant_id, model_name, slot, instances)
        rows = [inst.features for inst in instances]
        started = time.perf_counter()
        champion_pred = slot.champion.model.predict(rows)
        candidate_pred = _candidate_predictions(tenant_id, model_name, slot.candidate, rows)
        elapsed = time.perf_counter() - started
        latency_ms = elapsed * 1000 / max(len(rows), 1)
        now = utcnow()
        outs: list[PredictOut] = []
        records: list[PredictionRecord] = []
        for i, inst in enumerate(instances):
            champ = float(champion_pred[i])
            cand = float(candidate_pred[i]) if candidate_pred is not None else None
            cand_valid = cand is not None and math.isfinite(cand)
            role = "champion"
            served, served_by = champ, slot.champion
            if slot.candidate is not None and slot.candidate_state == ModelState.SHADOW:
                role = "shadow"
            elif slot.candidate is not None and slot.candidate_state == ModelState.DEPRECATED:
                role = "watch"
            elif slot.candidate is not None and slot.candidate_state == ModelState.CANARY:
                if cand_valid and canary_bucket(tenant_id, model_name, inst.request_id) < self._canary_share:
                    role, served, served_by = "canary", cand, slot.candidate  # type: ignore[assignment]
                else:
                    role = "champion"
            prediction_id = f"p-{uuid.uuid4().hex}"
            outs.append(
                PredictOut(
                    request_id=inst.request_id,
                    prediction_id=prediction_id,
                    prediction=served,
                    served_by=served_by.version_id,
                    version_number=served_by.number,
                    role=role,
                )
            )
            records.append(
                PredictionRecord(
                    id=prediction_id,
                    tenant_id=tenant_id,
                    model_name=model_name,
                    request_id=inst.request_id,
                    served_role=role,
                    champion_version_id=slot.champion.version_id,
                    champion_prediction=champ,
                    candidate_version_id=slot.candidate.version_id if slot.candidate else None,
                    candidate_prediction=cand if cand_valid else None,
                    served_prediction=served,
                    latency_ms=latency_ms,
                    created_at=now,
                )
            )
        self._count(tenant_id, model_name, outs, elapsed)
        self._records.record(records)  # never raises: queued in memory while the registry is unreachable
        return outs

    @staticmethod
    def _count(tenant_id: str, model_name: str, outs: list[PredictOut], elapsed_s: float) -> None:
        per_request = elapsed_s / max(len(outs), 1)
        roles: dict[str, int] = {}
        for out in outs:
            roles[out.role] = roles.get(out.role, 0) + 1
        for role, count in roles.items():
            metrics.count_inference(tenant_id, model_name, role, "ok", count)
            histogram = metrics.INFERENCE_LATENCY.labels(tenant_id, model_name, role)
            for _ in range(count):
                histogram.observe(per_request)

    def metric_labels(self, tenant_id: str, model_name: str) -> tuple[str, str]:
        """The tenant and model labels of a request that names them: a name only once this process has served it
        (the model, or some model of the tenant), else :data:`metrics.UNKNOWN_LABEL`, so that no request can add
        a label value."""
        if (tenant_id, model_name) in self._served:
            return tenant_id, model_name
        tenant = tenant_id if tenant_id in self._served_tenants else metrics.UNKNOWN_LABEL
        return tenant, metrics.UNKNOWN_LABEL

    def current(self, principal: Principal, tenant_id: str, model_name: str) -> CurrentModels:
        authorize(principal, Action.VIEW, tenant_id)
        slot = self._slot(tenant_id, model_name)
        if slot.champion is None and slot.candidate is None:
            # Nothing serves: a model being trained for the first time answers with nulls, an unknown one is 404.
            self._registry.list_versions(principal, tenant_id, model_name, strict=True)
        return CurrentModels(
            champion=_describe(slot.champion),
            candidate=_describe(slot.candidate),
            candidate_state=slot.candidate_state,
            canary_share=self._canary_share,
        )

    # ------------------------------------------------------------------ cache
    def answers_without_io(self, tenant_id: str, model_name: str) -> bool:
        """True when a prediction for this model would be answered from memory: the models loaded (no registry
        read) and the records written behind (no registry write)."""
        if not self._records.writes_behind:
            return False
        slot = self._slots.get((tenant_id, model_name))
        return slot is not None and (
            self._refresher is not None or time.monotonic() - slot.checked_at < self._refresh_s
        )

    def _slot(self, tenant_id: str, model_name: str) -> _Slot:
        key = (tenant_id, model_name)
        slot = self._slots.get(key)
        if slot is not None:
            if self._refresher is not None or time.monotonic() - slot.checked_at < self._refresh_s:
                return slot
            if self._outage.failed_within(MISS_RETRY_S):
                return slot  # the registry just failed: do not make every request wait for it to fail again
        elif self._outage.failed_within(MISS_RETRY_S):
            raise self._unavailable(tenant_id, model_name)
        return self._refresh(key, slot)

    def _unavailable(self, tenant_id: str, model_name: str) -> ModelUnavailable:
        return ModelUnavailable(
            f"{tenant_id}/{model_name} has not been loaded by this serving process and the registry cannot be "
            f"reached to load it; retry in {RETRY_AFTER_S} s"
        )

    def _refresh(self, key: tuple[str, str], seen: _Slot | None) -> _Slot:
        """Re-read which versions serve ``key`` and load what changed; on failure keep what is cached."""
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            current = self._slots.get(key)
            if current is not None and current is not seen:
                return current  # refreshed by someone else while this thread waited
            tenant_id, model_name = key
            try:
                versions = self._serving_versions(tenant_id, model_name)
                id_columns = self._id_columns(tenant_id) if versions else frozenset()
            except Exception as error:
                self._outage.failed(error)
                if current is not None:
                    return current
                raise self._unavailable(tenant_id, model_name) from error
            self._outage.succeeded()
            fingerprint = tuple(sorted((v.id, v.lock_version) for v in versions))
            if current is not None and current.fingerprint == fingerprint:
                current.id_columns = id_columns
                current.checked_at = time.monotonic()
                return current
            try:
                slot = self._load(versions, current, fingerprint, id_columns)
            except Exception:
                if current is None:
                    raise
                log.exception("could not load the new versions of %s/%s; serving the cached ones", *key)
                current.checked_at = time.monotonic()
                return current
            with self._lock:
                self._slots[key] = slot
                if slot.champion is not None or slot.candidate is not None:
                    self._served.add(key)
                    self._served_tenants.add(tenant_id)
            return slot

    def _refresh_loop(self) -> None:
        interval = max(self._refresh_s, MIN_BACKGROUND_REFRESH_S)
        while not self._stop.wait(interval):
            for key in list(self._slots):
                if self._stop.is_set():
                    return
                try:
                    self._refresh(key, self._slots.get(key))
                except Exception:
                    log.exception("model refresh of %s/%s failed", *key)
                if self._outage.down:
                    break  # the registry is down: one attempt per interval is enough

    def _serving_versions(self, tenant_id: str, model_name: str) -> list[VersionView]:
        versions = self._registry.in_states(
            Principal.system(tenant_id, "serving"), tenant_id, model_name, SERVING_STATES
        )
        if self._watched_predecessor is None or any(v.state != ModelState.CHAMPION for v in versions):
            return versions  # a candidate in SHADOW or CANARY takes the scoring slot; the watch waits for it
        previous = self._watched_predecessor(tenant_id, model_name)
        return versions if previous is None else [*versions, previous]

    def _id_columns(self, tenant_id: str) -> frozenset[str]:
        if self._tenants is None:
            return frozenset()
        settings = self._tenants.tenant_settings(Principal.system(tenant_id, "serving"), tenant_id)
        return frozenset(settings.id_columns)

    def _load(
        self,
        versions: list[VersionView],
        old: _Slot | None,
        fingerprint: tuple[tuple[str, int], ...],
        id_columns: frozenset[str],
    ) -> _Slot:
        champion = candidate = None
        candidate_state = None
        for version in versions:
            cached = _reuse(old, version.id)
            try:
                loaded = cached or self._loader.load(version)
            except IntegrityViolation as error:
                self._quarantine(version, str(error))
                continue
            if version.state == ModelState.CHAMPION:
                champion = loaded
            else:
                candidate, candidate_state = loaded, version.state
        return _Slot(champion, candidate, candidate_state, time.monotonic(), fingerprint, id_columns)

    def _quarantine(self, version: VersionView, reason: str) -> None:
        log.error("refusing to serve %s: %s", version.id, reason, extra={"tenantId": version.tenant_id})
        try:
            self._registry.quarantine(
                Principal.system(version.tenant_id, "serving"),
                version.id,
                f"serving/quarantine/{version.id}/{version.lock_version}",
                f"integrity check failed at load: {reason}",
            )
        except Exception:
            log.exception("could not quarantine %s", version.id, extra={"tenantId": version.tenant_id})


def _refuse_unknown_features(
    tenant_id: str, model_name: str, slot: _Slot, instances: list[PredictInstance]
) -> None:
    known = slot.features | slot.id_columns
    problems = [
        {
            "loc": ["body", "instances", str(i), "features", name],
            "msg": f"{tenant_id}/{model_name} has no feature {name!r}",
            "type": "unknown_feature",
        }
        for i, inst in enumerate(instances)
        for name in inst.features
        if name not in known
    ]
    if not problems:
        return
    unknown = sorted({str(p["loc"][-1]) for p in problems})
    named = ", ".join(repr(name) for name in unknown[:MAX_NAMED])
    more = f" and {len(unknown) - MAX_NAMED} more" if len(unknown) > MAX_NAMED else ""
    ids = (
        f"; identifier columns also accepted: {', '.join(sorted(slot.id_columns))}" if slot.id_columns else ""
    )
    raise UnknownFeatures(
        f"unknown feature(s) {named}{more} (first in instances[{problems[0]['loc'][2]}]): "
        f"{tenant_id}/{model_name} was trained on {', '.join(sorted(slot.features))}{ids}",
        problems[:50],
    )


def _candidate_predictions(
    tenant_id: str, model_name: str, candidate: LoadedModel | None, rows: list[dict[str, Any]]
) -> np.ndarray | None:
    """The candidate's predictions, NaN for every row when it fails: a candidate never costs the champion's answer."""
    if candidate is None:
        return None
    try:
        return candidate.model.predict(rows)
    except ModelFailed as error:
        log.warning(
            "candidate v%s of %s/%s failed to predict %d instance(s): %s",
            candidate.number,
            tenant_id,
            model_name,
            len(rows),
            error,
        )
        return np.full(len(rows), np.nan)


def _reuse(old: _Slot | None, version_id: str) -> LoadedModel | None:
    if old is None:
        return None
    for model in (old.champion, old.candidate):
        if model is not None and model.version_id == version_id:
            return model
    return None


def _describe(model: LoadedModel | None) -> ServingModel | None:
    if model is None:
        return None
    return ServingModel(version_id=model.version_id, number=model.number, model_hash=model.model_hash)
