"""Model definitions: what a tenant's model is (features, target, loss, hyperparameters) and who trains it.

A definition is kept per tenant and model name, in revisions that are never changed (each ``define`` adds one,
audited with the revision before it); a retraining reads the revision current when it starts, so a change takes
effect at the next retraining, never mid-run. The trainer is one of:

* ``builtin``: the built-in HistGradientBoosting trainer (the default; with no features listed it learns from every
  column of the events but the identifiers, as it always has);
* ``command``: an argv the local compute backend runs (development, the demo), following the training contract;
* ``image``: an OCI image pinned by digest (``…@sha256:<64 hex>``; a tag alone is refused), with its command, args,
  resources and time limit, run as a Kubernetes Job under the training contract.

Trainers other than the built-in one write ONNX; the contract they follow is ``docs/bring-your-own-model.md``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json
from evolution.errors import InvalidInput, NotFound
from evolution.registry.audit import append_audit
from evolution.registry.db import reading, transaction
from evolution.registry.schema import ModelDefinitionRow, Tenant
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, utcnow

NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$"
IMAGE_BY_DIGEST = re.compile(
    r"^(?P<repository>[a-z0-9][a-z0-9._/:-]{0,254})@sha256:(?P<digest>[0-9a-f]{64})$"
)
MAX_HYPERPARAMETERS_BYTES = 16_384
DEFAULT_MAX_MODEL_MB = 200


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME)
    type: Literal["numeric", "categorical"] = "numeric"


class BuiltinTrainer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["builtin"] = "builtin"


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600, description="None: the worker's limit"
    )
    memory_mb: int | None = Field(default=None, ge=64, le=1_048_576)


class CommandTrainer(Limits):
    kind: Literal["command"] = "command"
    argv: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(min_length=1, max_length=64)
    code_files: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        default_factory=list,
        max_length=64,
        description="The trainer's own files (its script, its requirements): their digests bind the lineage.",
    )

    @field_validator("argv", "code_files")
    @classmethod
    def _no_nul(cls, values: list[str]) -> list[str]:
        for value in values:
            if "\x00" in value:
                raise ValueError("a NUL byte cannot be passed to a process")
        return values


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: str = Field(default="1", pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: str = Field(default="2Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$")
    gpus: int = Field(default=0, ge=0, le=16)


class ImageTrainer(Limits):
    kind: Literal["image"] = "image"
    image: str = Field(description="An OCI image pinned by digest: registry/name@sha256:<64 hex>.")
    command: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    resources: Resources = Field(default_factory=Resources)

    @field_validator("image")
    @classmethod
    def _pinned(cls, image: str) -> str:
        if IMAGE_BY_DIGEST.match(image) is None:
            if "@" not in image:
                raise ValueError(
                    f"{image!r} is not pinned: name the image by digest (…@sha256:<64 hex>), not a tag"
                )
            raise ValueError(
                f"{image!r} is not an image pinned by digest (registry/name@sha256:<64 lowercase hex>)"
            )
        return image

    @property
    def digest(self) -> str:
        return self.image.rsplit("@", 1)[1]


Trainer = Annotated[BuiltinTrainer | CommandTrainer | ImageTrainer, Field(discriminator="kind")]


class ModelDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    features: list[FeatureSpec] = Field(
        default_factory=list,
        max_length=500,
        description="Empty only for the built-in trainer: every column of the events but the identifiers.",
    )
    target: str = Field(
        default="actual", pattern=NAME, description="The outcome's column name in the snapshot."
    )
    loss: Literal["mae"] = Field(default="mae", description="What the lifecycle compares candidates on.")
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="Passed through to the trainer."
    )
    trainer: Trainer = Field(default_factory=BuiltinTrainer)
    extra_features: Literal["refuse", "ignore"] = Field(
        default="refuse",
        description="A prediction naming a feature the model does not know: 422, or dropped.",
    )
    max_model_mb: int = Field(default=DEFAULT_MAX_MODEL_MB, ge=1, le=4096)

    @model_validator(mode="after")
    def _consistent(self) -> ModelDefinition:
        names = [f.name for f in self.features]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"features: {', '.join(doubled)} listed twice")
        if self.target in names:
            raise ValueError(f"target {self.target!r} is also listed as a feature")
        if self.trainer.kind != "builtin" and not self.features:
            raise ValueError(
                f"features: a {self.trainer.kind} trainer needs its features listed (name and type)"
            )
        if len(canonical_json(self.hyperparameters)) > MAX_HYPERPARAMETERS_BYTES:
            raise ValueError(f"hyperparameters: at most {MAX_HYPERPARAMETERS_BYTES} bytes of JSON")
        return self

    @property
    def format(self) -> Literal["builtin", "onnx"]:
        """What the trainer writes: the built-in format, or ONNX for every trainer that follows the contract."""
        return "builtin" if self.trainer.kind == "builtin" else "onnx"

    @classmethod
    def parse(cls, raw: Any) -> ModelDefinition:
        """A definition from JSON-like input, or InvalidInput naming every bad field."""
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'definition'}: {e['msg'].removeprefix('Value error, ')}"
                for e in error.errors()
            )
            raise InvalidInput(f"model definition: {problems}") from None


DEFAULT_DEFINITION = ModelDefinition()


class DefinitionView(BaseModel):
    tenant_id: str
    model_name: str
    revision: int = Field(description="0: nothing defined yet, the built-in default applies.")
    definition: ModelDefinition
    defined_by: str | None = None
    defined_at: datetime | None = None


class ModelDefinitions:
    def __init__(self, factory: sessionmaker[Session], clock: Callable[[], datetime] = utcnow) -> None:
        self._factory = factory
        self._clock = clock

    def define(
        self,
        principal: Principal,
        tenant_id: str,
        model_name: str,
        definition: ModelDefinition,
        reason: str = "",
    ) -> DefinitionView:
        """Admin: a new revision (audited with the one before); the next retraining of the model uses it."""
        authorize(principal, Action.DEFINE_MODEL, tenant_id)
        if not re.match(NAME, model_name):
            raise InvalidInput(f"model name {model_name!r}: use 1-100 letters, digits, '.', '-' or '_'")
        if len(reason) > 500:
            raise InvalidInput("reason: at most 500 characters")
        with transaction(self._factory, tenant_id) as session:
            if session.get(Tenant, tenant_id) is None:
                raise NotFound(f"tenant {tenant_id!r} does not exist")
            before = self._latest(session, tenant_id, model_name)
            revision = (before.revision if before else 0) + 1
            row = ModelDefinitionRow(
                tenant_id=tenant_id,
                model_name=model_name,
                revision=revision,
                definition=definition.model_dump(mode="json"),
                defined_by=principal.user,
                defined_at=self._clock(),
            )
            session.add(row)
            session.flush()
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action="model.defined",
                subject_type="model_definition",
                subject_id=f"{model_name}#{revision}",
                at=row.defined_at,
                details={
                    "model_name": model_name,
                    "revision": revision,
                    "before": before.definition if before else None,
                    "after": row.definition,
                    "reason": reason,
                },
            )
            return _view(row)

    def current(self, principal: Principal | None, tenant_id: str, model_name: str) -> DefinitionView:
        """The revision in force (revision 0, the built-in default, when the model was never defined)."""
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            row = self._latest(session, tenant_id, model_name)
            if row is None:
                return DefinitionView(
                    tenant_id=tenant_id, model_name=model_name, revision=0, definition=DEFAULT_DEFINITION
                )
            return _view(row)

    def history(self, principal: Principal, tenant_id: str, model_name: str) -> list[DefinitionView]:
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            rows = session.scalars(
                select(ModelDefinitionRow)
                .where(ModelDefinitionRow.tenant_id == tenant_id, ModelDefinitionRow.model_name == model_name)
                .order_by(ModelDefinitionRow.revision)
            )
            return [_view(r) for r in rows]

    def defined_models(self, principal: Principal, tenant_id: str) -> list[str]:
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            names = session.scalars(
                select(ModelDefinitionRow.model_name)
                .where(ModelDefinitionRow.tenant_id == tenant_id)
                .group_by(ModelDefinitionRow.model_name)
                .order_by(ModelDefinitionRow.model_name)
            )
            return list(names)

    @staticmethod
    def _latest(session: Session, tenant_id: str, model_name: str) -> ModelDefinitionRow | None:
        latest = (
            select(func.max(ModelDefinitionRow.revision))
            .where(ModelDefinitionRow.tenant_id == tenant_id, ModelDefinitionRow.model_name == model_name)
            .scalar_subquery()
        )
        return session.scalar(
            select(ModelDefinitionRow).where(
                ModelDefinitionRow.tenant_id == tenant_id,
                ModelDefinitionRow.model_name == model_name,
                ModelDefinitionRow.revision == latest,
            )
        )


def _view(row: ModelDefinitionRow) -> DefinitionView:
    return DefinitionView(
        tenant_id=row.tenant_id,
        model_name=row.model_name,
        revision=row.revision,
        definition=ModelDefinition.model_validate(row.definition),
        defined_by=row.defined_by,
        defined_at=as_utc(row.defined_at),
    )
