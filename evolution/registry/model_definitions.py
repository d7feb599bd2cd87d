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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from evolution.canonical import canonical_json
from evolution.errors import InvalidInput, NotFound
from evolution.registry.audit import append_audit
from evolution.registry.db import reading, transaction
from evolution.registry.schema import ModelDefinitionRow, Tenant
from evolution.registry.versions import MODEL_NAME_PATTERN
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, utcnow

NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$"
IMAGE_BY_DIGEST = re.compile(
    r"^(?P<repository>[a-z0-9][a-z0-9._/:-]{0,254})@sha256:(?P<digest>[0-9a-f]{64})$"
)
CPU = r"^[0-9]+(\.[0-9]+)?m?$"
MEMORY = r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$"
MAX_HYPERPARAMETERS_BYTES = 16_384
MAX_HYPERPARAMETER_DEPTH = 32
DEFAULT_MAX_MODEL_MB = 200
MAX_REASON_CHARS = 500
TRAINER_KINDS = ("builtin", "command", "image")
# What a pattern of this module asks for, in words (pydantic's own message quotes the regular expression).
PATTERN_WORDS = {
    NAME: "use 1-100 letters, digits, '.', '-' or '_', starting with a letter or '_'",
    CPU: "a CPU quantity such as 2, 0.5 or 500m",
    MEMORY: "a memory quantity such as 4Gi or 512Mi",
}


def unstorable(text: str) -> str | None:
    """Why a database cannot keep this text: PostgreSQL refuses NUL, and UTF-8 has no lone surrogates."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def _texts_storable(values: list[str]) -> list[str]:
    for index, value in enumerate(values):
        why = unstorable(value)
        if why:
            raise ValueError(
                f"item {index} {why}" + (" (it cannot be passed to a process)" if "NUL" in why else "")
            )
    return values


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
    def _storable(cls, values: list[str]) -> list[str]:
        return _texts_storable(values)


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: str = Field(default="1", pattern=CPU)
    memory: str = Field(default="2Gi", pattern=MEMORY)
    gpus: int = Field(default=0, ge=0, le=16)


class ImageTrainer(Limits):
    kind: Literal["image"] = "image"
    image: str = Field(description="An OCI image pinned by digest: registry/name@sha256:<64 hex>.")
    command: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    resources: Resources = Field(default_factory=Resources)

    @field_validator("command", "args")
    @classmethod
    def _storable(cls, values: list[str]) -> list[str]:
        return _texts_storable(values)

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

    # Each field is checked on its own where it can be, so that one answer names every bad field; only the rule
    # that joins the trainer and the features waits for both to be valid.
    @field_validator("features")
    @classmethod
    def _once_each(cls, features: list[FeatureSpec]) -> list[FeatureSpec]:
        names = [f.name for f in features]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"{', '.join(doubled)} listed twice")
        return features

    @field_validator("target")
    @classmethod
    def _not_a_feature(cls, target: str, info: ValidationInfo) -> str:
        if target in {f.name for f in info.data.get("features", [])}:
            raise ValueError(f"{target!r} is also listed as a feature")
        return target

    @field_validator("hyperparameters")
    @classmethod
    def _plain_json(cls, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        where = _unstorable_text(hyperparameters)
        if where is not None:
            raise ValueError(where)
        try:
            size = len(canonical_json(hyperparameters))
        except InvalidInput as error:  # NaN or infinity
            raise ValueError(str(error).removeprefix("canonical JSON: ")) from None
        if size > MAX_HYPERPARAMETERS_BYTES:
            raise ValueError(f"at most {MAX_HYPERPARAMETERS_BYTES} bytes of JSON ({size} given)")
        return hyperparameters

    @model_validator(mode="after")
    def _consistent(self) -> ModelDefinition:
        if self.trainer.kind != "builtin" and not self.features:
            raise ValueError(
                f"features: a {self.trainer.kind} trainer needs its features listed (name and type); only the "
                "built-in trainer learns from every column"
            )
        return self

    @property
    def format(self) -> Literal["builtin", "onnx"]:
        """What the trainer writes: the built-in format, or ONNX for every trainer that follows the contract."""
        return "builtin" if self.trainer.kind == "builtin" else "onnx"

    @classmethod
    def parse(cls, raw: Any) -> ModelDefinition:
        """A definition from JSON-like input, or InvalidDefinition (an InvalidInput) naming every bad field."""
        try:
            return cls.model_validate(raw, strict=True)  # as JSON says: "5" is no number, true is no 1
        except ValidationError as error:
            raise InvalidDefinition([Problem(*describe_error(e)) for e in error.errors()]) from None


def _unstorable_text(value: Any) -> str | None:
    """Where, in a JSON value, a key or string holds text a database cannot keep (or the value nests too deep to be
    walked safely), and why. Iterative: a hostile value cannot exhaust the stack here."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        where = ".".join(map(str, path)) or "the value"
        if len(path) > MAX_HYPERPARAMETER_DEPTH:
            return f"{where}: nested deeper than {MAX_HYPERPARAMETER_DEPTH} levels"
        if isinstance(item, str):
            why = unstorable(item)
            if why:
                return f"{where} {why}"
        elif isinstance(item, dict):
            for key, inner in item.items():
                why = unstorable(str(key))
                if why:
                    return f"key {_shown(key)} {why}"
                stack.append((inner, (*path, key)))
        elif isinstance(item, list):
            stack.extend((inner, (*path, index)) for index, inner in enumerate(item))
    return None


def _shown(value: Any) -> str:
    """A value quoted for a message: escaped (NUL, lone surrogates) and cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Problem:
    """One bad field of a definition: where (``trainer.image``; empty for the definition as a whole) and why."""

    loc: tuple[str | int, ...]
    message: str

    @property
    def field(self) -> str:
        return ".".join(map(str, self.loc)) or "definition"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidDefinition(InvalidInput):
    """A model definition with bad fields; ``problems`` names each one."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("model definition: " + "; ".join(map(str, self.problems)))


def describe_error(error: Mapping[str, Any]) -> tuple[tuple[str | int, ...], str]:
    """A pydantic error (of a definition, or of any request body) as the field it names and a message in words.

    The trainer's kind, which pydantic puts into the location of an error inside a trainer, is left out
    (``trainer.image``, not ``trainer.image.image``); a pattern of this module is described, not quoted; a rule
    over the whole definition that names its field (``features: …``) is reported at that field.
    """
    loc = list(error.get("loc", ()))
    for i in range(len(loc) - 2, -1, -1):
        if loc[i] == "trainer" and loc[i + 1] in TRAINER_KINDS and i + 2 < len(loc):
            del loc[i + 1]
    kind, message = str(error.get("type", "")), str(error.get("msg", "")).removeprefix("Value error, ")
    ctx = error.get("ctx") or {}
    given = error.get("input")
    if kind == "string_pattern_mismatch" and ctx.get("pattern") in PATTERN_WORDS:
        message = f"{PATTERN_WORDS[ctx['pattern']]} (got {_shown(given)})"
    elif kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "too_short" and loc[-2:] == ["trainer", "argv"]:
        message = "the command is empty: give the program to run and its arguments"
    elif kind == "union_tag_invalid" and loc and loc[-1] == "trainer":
        loc.append("kind")
        message = f"{ctx.get('tag')!r} is not a trainer: use builtin, command or image"
    elif kind == "union_tag_not_found" and loc and loc[-1] == "trainer":
        loc.append("kind")
        message = "missing: say which trainer, builtin, command or image"
    elif loc in ([], ["body"]) and (named := re.match(r"^([a-z_][a-z_.]*): (.+)$", message, re.DOTALL)):
        loc, message = (
            [*loc, *named.group(1).split(".")],
            named.group(2),
        )  # the definition's root, or a body's
    return tuple(loc), message


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
        check_model_name(model_name)
        if len(reason) > MAX_REASON_CHARS:
            raise InvalidInput(f"reason: at most {MAX_REASON_CHARS} characters ({len(reason)} given)")
        why = unstorable(reason)
        if why:
            raise InvalidInput(f"reason: {why}")
        with transaction(self._factory, tenant_id) as session:
            _tenant_exists(session, tenant_id)
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
                subject_id=model_name,  # the revision is in the details (a name takes the column's 100 characters)
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
                _tenant_exists(session, tenant_id)
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
            views = [_view(r) for r in rows]
            if not views:
                _tenant_exists(session, tenant_id)
            return views

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


def check_model_name(model_name: str) -> str:
    """The model name, or InvalidInput: the names model versions take (and the HTTP API's paths)."""
    if not MODEL_NAME_PATTERN.fullmatch(model_name):
        raise InvalidInput(
            f"model name {_shown(model_name)}: use 1-100 letters, digits, '.', '-' or '_', starting with a letter or digit"
        )
    return model_name


def _tenant_exists(session: Session, tenant_id: str) -> None:
    if session.get(Tenant, tenant_id) is None:
        raise NotFound(f"tenant {tenant_id!r} does not exist")


def _view(row: ModelDefinitionRow) -> DefinitionView:
    return DefinitionView(
        tenant_id=row.tenant_id,
        model_name=row.model_name,
        revision=row.revision,
        definition=ModelDefinition.model_validate(row.definition),
        defined_by=row.defined_by,
        defined_at=as_utc(row.defined_at),
    )
