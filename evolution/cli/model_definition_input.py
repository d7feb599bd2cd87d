"""Reading a model definition from `evolution model define`'s options or a --file (JSON or TOML).

Every bad field is collected, so one answer names them all; the result is validated by the ModelDefinition model.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

from evolution.errors import InvalidInput
from evolution.registry.model_definitions import (
    InvalidDefinition,
    ModelDefinition,
    Problem,
)

MAX_FILE_BYTES = 1024 * 1024
FEATURE_TYPES = ("numeric", "categorical")
DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
SECONDS_PER = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
MAX_TIMEOUT_S = 7 * 86_400  # the definition's own limit

OPTION_OF: dict[tuple[str | int, ...], str] = {
    ("features",): "--feature",
    ("target",): "--target",
    ("loss",): "--loss",
    ("hyperparameters",): "--hyperparameter",
    ("extra_features",): "--extra-features",
    ("max_model_mb",): "--max-model-mb",
    ("trainer", "argv"): "--command",
    ("trainer", "code_files"): "--code-file",
    ("trainer", "image"): "--image",
    ("trainer", "command"): "--command",
    ("trainer", "args"): "--arg",
    ("trainer", "resources", "cpu"): "--cpu",
    ("trainer", "resources", "memory"): "--memory",
    ("trainer", "resources", "gpus"): "--gpus",
    ("trainer", "timeout_s"): "--timeout",
    ("trainer", "memory_mb"): "--memory-mb",
}


def _feature(spec: str, problems: list[str]) -> dict[str, str] | None:
    name, sep, kind = spec.rpartition(":") if ":" in spec else (spec, "", "numeric")
    if sep and kind not in FEATURE_TYPES:
        problems.append(f"--feature {spec!r}: the type after ':' is numeric or categorical")
        return None
    return {"name": name, "type": kind}


def _json_or_text(value: str) -> Any:
    """The value as JSON when it parses as JSON (numbers, true/false/null, lists, objects), else the text."""

    def no_constant(name: str) -> Any:
        raise ValueError(name)  # NaN and Infinity are not JSON: kept as text

    try:
        return json.loads(value, parse_constant=no_constant)
    except ValueError:
        return value


def _hyperparameters(pairs: list[str], problems: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--hyperparameter {pair!r}: write KEY=VALUE, e.g. max_depth=4")
        elif key in found:
            problems.append(f"--hyperparameter {key}: given twice")
        else:
            found[key] = _json_or_text(value)
    return found


def parse_duration(text: str) -> float:
    """Seconds from ``5400``, ``90m``, ``3h``, ``1h30m``, ``2d`` or ``45s``; ValueError otherwise."""
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    if not text or DURATION.sub("", text):
        raise ValueError(text)
    return sum(float(amount) * SECONDS_PER[unit] for amount, unit in DURATION.findall(text))


def format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= SECONDS_PER[unit] and seconds % SECONDS_PER[unit] == 0:
            return f"{seconds / SECONDS_PER[unit]:g}{unit}"
    return f"{seconds:g}s"


def _argv(text: str, option: str, problems: list[str]) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as error:
        problems.append(f"{option} {text!r}: {error} (quote it as a shell would)")
        return [text]  # named once: not also as an empty command


def _trainer(options: dict[str, Any], problems: list[str]) -> dict[str, Any] | None:
    """The trainer the options describe, or None when they do not describe one (the problems say why)."""
    builtin, command, image = options["builtin"], options["command"], options["image"]
    if builtin and (command is not None or image is not None):
        given = " and ".join(o for o, v in (("--command", command), ("--image", image)) if v is not None)
        problems.append(f"--builtin and {given} choose different trainers: give one")
        return None
    kind = "image" if image is not None else "command" if command is not None else "builtin"
    applies = {
        "--code-file": ("command", options["code_file"]),
        "--memory-mb": ("command", options["memory_mb"]),
        "--arg": ("image", options["arg"]),
        "--cpu": ("image", options["cpu"]),
        "--memory": ("image", options["memory"]),
        "--gpus": ("image", options["gpus"]),
    }
    # A misplaced option is named and left out; the trainer is still built, so that its own fields are checked too.
    for option, (for_kind, value) in applies.items():
        if value not in (None, []) and kind != for_kind:
            hint = {
                "command": "a command trainer (--command without --image)",
                "image": "an image trainer (--image)",
            }[for_kind]
            extra = " (an image trainer's memory is --memory, e.g. 4Gi)" if option == "--memory-mb" else ""
            article = "an" if kind == "image" else "a"
            problems.append(f"{option} applies to {hint}, not to {article} {kind} trainer{extra}")
    timeout: float | None = None
    if options["timeout"] is not None:
        if kind == "builtin":
            problems.append(
                "--timeout applies to a command or image trainer; the built-in one has the worker's"
            )
        else:
            try:
                timeout = parse_duration(options["timeout"])
            except ValueError:
                problems.append(
                    f"--timeout {options['timeout']!r}: write seconds or a duration such as 90m, 3h or 1h30m"
                )
            else:
                if not 0 < timeout <= MAX_TIMEOUT_S:
                    problems.append(f"--timeout {options['timeout']!r}: more than 0 and at most 7 days")
                    timeout = None
    if kind == "builtin":
        return {"kind": "builtin"}
    limits = {"timeout_s": timeout} if timeout is not None else {}
    if kind == "command":
        return {
            "kind": "command",
            "argv": _argv(command, "--command", problems),
            "code_files": options["code_file"] or [],
            **limits,
            **({"memory_mb": options["memory_mb"]} if options["memory_mb"] is not None else {}),
        }
    resources = {
        key: value
        for key, value in (("cpu", options["cpu"]), ("memory", options["memory"]), ("gpus", options["gpus"]))
        if value is not None
    }
    return {
        "kind": "image",
        "image": image,
        "command": _argv(command, "--command", problems) if command is not None else [],
        "args": options["arg"] or [],
        "resources": resources,
        **limits,
    }


def _from_options(options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    problems: list[str] = []
    raw: dict[str, Any] = {}
    features = [_feature(spec, problems) for spec in options["feature"] or []]
    if options["feature"]:
        raw["features"] = [f for f in features if f is not None]
    for field, option in (
        ("target", "target"),
        ("loss", "loss"),
        ("extra_features", "extra_features"),
        ("max_model_mb", "max_model_mb"),
    ):
        if options[option] is not None:
            raw[field] = options[option]
    if options["hyperparameter"]:
        raw["hyperparameters"] = _hyperparameters(options["hyperparameter"], problems)
    trainer = _trainer(options, problems)
    if trainer is not None:
        raw["trainer"] = trainer
    return raw, problems


def _option_for(problem: Problem) -> str:
    for size in range(len(problem.loc), 0, -1):
        option = OPTION_OF.get(problem.loc[:size])
        if option is not None:
            return option
    return problem.field


def _read_document(path: Path) -> tuple[dict[str, Any], str | None]:
    """The definition a JSON or TOML file holds (a ModelDefinition, optionally with a reason, or the output of
    `model show --json`), and its reason."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise InvalidInput(f"--file {path}: use a .json or .toml file")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InvalidInput(
                f"--file {path}: larger than {MAX_FILE_BYTES // 1024} KiB; not a model definition"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"--file {path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"--file {path}: is a directory") from None
    except OSError as error:
        raise InvalidInput(f"--file {path}: cannot be read ({error.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
        document = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except UnicodeDecodeError:
        raise InvalidInput(f"--file {path}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"--file {path}: not valid JSON (line {error.lineno} column {error.colno}: {error.msg})"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise InvalidInput(f"--file {path}: not valid TOML ({error})") from None
    if not isinstance(document, dict):
        raise InvalidInput(f"--file {path}: a model definition is an object (features, target, trainer, …)")
    if isinstance(document.get("definition"), dict) and "revision" in document:
        document = document["definition"]  # the output of `evolution model show --json`
    reason = document.pop("reason", None)
    if reason is not None and not isinstance(reason, str):
        raise InvalidInput(f"--file {path}: reason: a text")
    return document, reason


def definition_from_input(options: dict[str, Any], file: Path | None) -> tuple[ModelDefinition, str | None]:
    """The definition the options or the file give, or InvalidInput naming every bad option or field."""
    if file is not None:
        given = [
            f"--{name.replace('_', '-')}" for name, value in options.items() if value not in (None, False, [])
        ]
        if given:
            raise InvalidInput(
                f"--file gives the whole definition: leave out {', '.join(given)} (or put them in the file)"
            )
        document, reason = _read_document(file)
        return ModelDefinition.parse(document), reason
    raw, problems = _from_options(options)
    try:
        definition = ModelDefinition.parse(raw)
    except InvalidDefinition as invalid:
        problems += [f"{_option_for(p)}: {p.message}" for p in invalid.problems]
        raise InvalidInput("model definition: " + "; ".join(problems)) from None
    if problems:
        raise InvalidInput("model definition: " + "; ".join(problems))
    return definition, None


# ----------------------------------------------------------------------------------------------- rendering
