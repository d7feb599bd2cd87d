"""`evolution model`: what a tenant's model is (features, target, loss, hyperparameters) and who trains it.

``export`` writes a version's files and its OpenSSF model signature (``model.sig``) for ``model_signing verify``.

``define`` stores a new revision of the definition (admins; audited with the revision before it) and prints what
changed; ``show`` prints the revision in force, or every revision with ``--history``. A change takes effect at the
next retraining, never during one. The trainer contract is ``docs/bring-your-own-model.md``.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from evolution.cli.context import friendly_errors, operator, services
from evolution.cli.model_definition_input import definition_from_input, format_duration
from evolution.platform.wiring import Services
from evolution.registry.model_definitions import (
    DEFAULT_DEFINITION,
    DefinitionView,
    ModelDefinition,
    check_model_name,
)
from evolution.security import Action, Principal, authorize

model_app = typer.Typer(
    help="Model definitions: a tenant's features, target, loss, hyperparameters and trainer, in audited revisions;\n"
    "export a version with its OpenSSF signature.",
    no_args_is_help=True,
)

# The option that sets each field of a definition, to name it in an error (the longest matching prefix wins).

TenantArg = Annotated[str, typer.Argument(help="Tenant id.")]
ModelArg = Annotated[str, typer.Argument(help="Model name, e.g. yield.")]

DEFINE_HELP = "\n\n".join(
    [
        "Admin: define TENANT's model MODEL: a new revision, audited; the next retraining uses it (never a running "
        "one). The definition is given whole, by the options or by --file: what you leave out takes its default, "
        "not the previous revision's value; the answer lists what changed.",
        "Trainers: --builtin (the default: the built-in gradient boosting, which with no --feature learns from "
        "every column but the identifiers); --command 'ARGV…' (a process the local compute backend runs, for "
        "development and the demo; --code-file names its files, whose digests bind the lineage); --image "
        "REF@sha256:<64 hex> (a container pinned by digest, run as a Kubernetes Job; a tag alone is refused) with "
        "--command, --arg, --cpu, --memory, --gpus. The trainer contract: docs/bring-your-own-model.md.",
        "Exit codes: 0 defined; 2 nothing stored: a bad option or field (every one is named), an unknown tenant, "
        "or an operator who is not an admin of the tenant.",
    ]
)


def _features(definition: ModelDefinition) -> str:
    if not definition.features:
        return "every column of the events but the identifiers (the built-in trainer's default)"
    return ", ".join(f"{f.name} ({f.type})" for f in definition.features)


def _trainer_lines(definition: ModelDefinition) -> list[tuple[str, str]]:
    trainer = definition.trainer
    if trainer.kind == "builtin":
        return [("trainer", "builtin (gradient boosting, the built-in format)")]
    limit = format_duration(trainer.timeout_s) if trainer.timeout_s is not None else "the worker's limit"
    if trainer.kind == "command":
        return [
            ("trainer", f"command: {shlex.join(trainer.argv)}"),
            ("  code files", ", ".join(trainer.code_files) or "(none listed)"),
            ("  time limit", limit),
            (
                "  memory",
                f"{trainer.memory_mb} MB" if trainer.memory_mb is not None else "the worker's limit",
            ),
        ]
    resources = trainer.resources
    return [
        ("trainer", f"image: {trainer.image}"),
        ("  command", shlex.join(trainer.command) if trainer.command else "(the image's entrypoint)"),
        ("  args", shlex.join(trainer.args) if trainer.args else "(none)"),
        ("  resources", f"cpu {resources.cpu}, memory {resources.memory}, gpus {resources.gpus}"),
        ("  time limit", limit),
    ]


def _hyperparameter_text(hyperparameters: dict[str, Any]) -> str:
    if not hyperparameters:
        return "(none)"
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(hyperparameters.items()))


def _describe(definition: ModelDefinition) -> list[str]:
    lines = [
        ("features", _features(definition)),
        ("target", definition.target),
        ("loss", definition.loss),
        ("hyperparameters", _hyperparameter_text(definition.hyperparameters)),
        *_trainer_lines(definition),
        (
            "extra features",
            f"{definition.extra_features} (a prediction naming a feature the model does not know)",
        ),
        ("model size", f"at most {definition.max_model_mb} MB"),
    ]
    return [f"  {label:<17}{value}" for label, value in lines]


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to the leaves of a definition's JSON; empty and unset leaves left out (they are defaults)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {} if value is None or value == [] else {prefix: value}


def _shown(path: str, value: Any) -> str:
    if value is None:
        return "(none)" if path in ("features", "trainer.code_files", "trainer.args") else "(unset)"
    if path == "features":
        return ", ".join(f"{f['name']}:{f['type']}" for f in value)
    if path == "trainer.timeout_s":
        return format_duration(value)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _field_order(path: str) -> tuple[int, bool, str]:
    """A definition's fields in the order they are declared; the trainer's kind before its other fields."""
    fields = list(ModelDefinition.model_fields)
    head = path.split(".", 1)[0]
    return (fields.index(head) if head in fields else len(fields), path != "trainer.kind", path)


def changes(before: ModelDefinition, after: ModelDefinition) -> list[str]:
    """One line per field that differs: ``field: old -> new``."""
    old, new = _flat(before.model_dump(mode="json")), _flat(after.model_dump(mode="json"))
    return [
        f"{path}: {_shown(path, old.get(path))} -> {_shown(path, new.get(path))}"
        for path in sorted(set(old) | set(new), key=_field_order)
        if old.get(path) != new.get(path)
    ]


def _heading(view: DefinitionView) -> str:
    if view.revision == 0:
        return (
            f"{view.tenant_id}/{view.model_name}: revision 0, never defined: the built-in default applies "
            "(`evolution model define` changes it)"
        )
    at = view.defined_at.isoformat(timespec="seconds") if view.defined_at else "?"
    return (
        f"{view.tenant_id}/{view.model_name}: revision {view.revision}, defined by {view.defined_by} at {at}"
    )


def _reasons(svc: Services, principal: Principal, tenant: str, model: str) -> dict[int, str]:
    """The reason given for each revision, from the audit log."""
    trail = svc.registry.audit_trail(principal, tenant, subject_id=model)
    return {
        int(e.details["revision"]): str(e.details.get("reason") or "")
        for e in trail
        if e.action == "model.defined" and isinstance(e.details.get("revision"), int)
    }


# ----------------------------------------------------------------------------------------------- commands
@model_app.command("define", help=DEFINE_HELP)
@friendly_errors
def model_define(
    tenant: TenantArg,
    model: ModelArg,
    feature: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME[:TYPE]",
            help="A feature the model reads; TYPE numeric (the default) or categorical (repeatable, in order).",
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="The outcome column the model predicts (default: actual).")
    ] = None,
    loss: Annotated[str | None, typer.Option(help="What the lifecycle compares models on: mae.")] = None,
    hyperparameter: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="Passed through to the trainer; VALUE is read as JSON when it is JSON (4, 0.1, true, [1,2]), "
            "else as text (repeatable).",
        ),
    ] = None,
    builtin: Annotated[
        bool, typer.Option("--builtin", help="The built-in trainer (the default when no trainer is given).")
    ] = False,
    command: Annotated[
        str | None,
        typer.Option(
            metavar="'ARGV…'",
            help="A command trainer: the program and its arguments, split as a shell would; {input} and {output} "
            "are the trainer's directories. With --image: the container's command.",
        ),
    ] = None,
    code_file: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PATH",
            help="Command trainer: a file of the trainer, hashed into the lineage (repeatable).",
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            metavar="REF@sha256:…",
            help="An image trainer: an OCI image pinned by digest, run as a Kubernetes Job (a tag is refused).",
        ),
    ] = None,
    arg: Annotated[
        list[str] | None, typer.Option(help="Image trainer: one argument of the container (repeatable).")
    ] = None,
    cpu: Annotated[str | None, typer.Option(help="Image trainer: CPUs, e.g. 2 or 500m (default 1).")] = None,
    memory: Annotated[
        str | None, typer.Option(help="Image trainer: memory, e.g. 4Gi or 512Mi (default 2Gi).")
    ] = None,
    gpus: Annotated[int | None, typer.Option(help="Image trainer: GPUs (default 0).")] = None,
    timeout: Annotated[
        str | None,
        typer.Option(
            help="Command or image trainer: time limit, e.g. 90m, 3h or 5400 (default: the worker's)."
        ),
    ] = None,
    memory_mb: Annotated[
        int | None, typer.Option(help="Command trainer: memory limit in MB (default: the worker's).")
    ] = None,
    max_model_mb: Annotated[
        int | None, typer.Option(help="Largest model the trainer may write, in MB (default 200).")
    ] = None,
    extra_features: Annotated[
        str | None,
        typer.Option(
            metavar="refuse|ignore",
            help="A prediction naming a feature the model does not know: refuse (422, the default) or ignore it.",
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            metavar="DEFINITION.json|.toml",
            help="The whole definition from a file instead of the options: the shape of the HTTP API's body "
            "(features, target, loss, hyperparameters, trainer, extra_features, max_model_mb; optionally reason), "
            "or what `model show --json` prints.",
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why; recorded in the audit log.")] = None,
) -> None:
    options = {
        "feature": feature,
        "target": target,
        "loss": loss,
        "hyperparameter": hyperparameter,
        "builtin": builtin,
        "command": command,
        "code_file": code_file,
        "image": image,
        "arg": arg,
        "cpu": cpu,
        "memory": memory,
        "gpus": gpus,
        "timeout": timeout,
        "memory_mb": memory_mb,
        "max_model_mb": max_model_mb,
        "extra_features": extra_features,
    }
    svc = services()
    try:
        principal = operator(svc.settings)
        authorize(principal, Action.DEFINE_MODEL, tenant)  # refuse before reading anything else
        check_model_name(model)
        before = svc.model_definitions.current(principal, tenant, model)  # an unknown tenant: NotFound
        definition, file_reason = definition_from_input(options, file)
        if definition.trainer.kind == "command":
            for path in definition.trainer.code_files:
                if not Path(path).is_file():
                    typer.echo(
                        f"warning: code file {path} is not a file from here; the worker looks for it from its own "
                        "working directory",
                        err=True,
                    )
        view = svc.model_definitions.define(
            principal, tenant, model, definition, reason if reason is not None else file_reason or ""
        )
    finally:
        svc.close()
    was = f"revision {before.revision}" + (", the built-in default" if before.revision == 0 else "")
    typer.echo(
        f"{tenant}/{model}: revision {view.revision} defined by {view.defined_by} (was {was}); "
        "the next retraining uses it"
    )
    changed = changes(before.definition, view.definition)
    for line in changed:
        typer.echo(f"  {line}")
    if not changed:
        typer.echo(f"  the same definition as revision {before.revision}")


@model_app.command("show")
@friendly_errors
def model_show(
    tenant: TenantArg,
    model: ModelArg,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the definition (or the history) as JSON.")
    ] = False,
    history: Annotated[
        bool,
        typer.Option("--history", help="Every revision, oldest first, with who, when, why and what changed."),
    ] = False,
) -> None:
    """The model's definition in force (revision 0: never defined, the built-in default): who defined it and when,
    features, target, loss, hyperparameters and trainer."""
    svc = services()
    try:
        principal = operator(svc.settings)
        check_model_name(model)
        if not history:
            view = svc.model_definitions.current(principal, tenant, model)
            if as_json:
                typer.echo(view.model_dump_json(indent=2))
                return
            typer.echo(_heading(view))
            for line in _describe(view.definition):
                typer.echo(line)
            return
        views = svc.model_definitions.history(principal, tenant, model)
        if as_json:
            typer.echo(json.dumps([v.model_dump(mode="json") for v in views], indent=2, ensure_ascii=False))
            return
        if not views:
            typer.echo(_heading(svc.model_definitions.current(principal, tenant, model)))
            return
        reasons = _reasons(svc, principal, tenant, model)
        previous = DEFAULT_DEFINITION
        for view in views:
            why = reasons.get(view.revision)
            typer.echo(_heading(view) + (f" (reason: {why})" if why else ""))
            for line in changes(previous, view.definition) or ["nothing changed"]:
                typer.echo(f"  {line}")
            previous = view.definition
        typer.echo("in force:")
        for line in _describe(views[-1].definition):
            typer.echo(line)
    finally:
        svc.close()


@model_app.command("export")
@friendly_errors
def model_export(
    tenant: TenantArg,
    model: ModelArg,
    version: Annotated[str, typer.Argument(help="Version number, or 'champion'.")],
    directory: Annotated[Path, typer.Argument(help="A new or empty directory to write into.")],
) -> None:
    """Write the version's files under their manifest names and its signature DIRECTORY/model.sig (a Sigstore
    bundle), all checked first; `model_signing verify key` accepts them with the public key that
    `evolution keys export-public` writes."""
    from evolution.platform.model_export import export_model

    svc = services()
    try:
        done = export_model(svc, operator(svc.settings), tenant, model, version, directory)
        typer.echo(
            f"exported {tenant}/{model} v{done.version.number} ({done.version.state}): {len(done.files)} files "
            f"and model.sig to {done.directory}"
        )
        typer.echo("verify it with the OpenSSF verifier (pip install model-signing):")
        key_option = "" if done.key_id == svc.signer.key_id else f" --key-id {done.key_id}"
        typer.echo(f"  evolution keys export-public signing-key.pem{key_option}")
        signature = shlex.quote(str(done.directory / "model.sig"))
        typer.echo(
            f"  model_signing verify key --signature {signature} --public_key signing-key.pem "
            f"{shlex.quote(str(done.directory))}"
        )
    finally:
        svc.close()


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
