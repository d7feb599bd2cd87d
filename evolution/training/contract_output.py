"""Judging what a contract trainer left in its output directory, before anything in it is read as a model.

Every backend calls :func:`collect_output` once the trainer has exited 0, so an output is accepted by the same rule
wherever it was trained. Refused, each with a message naming the problem: a symbolic link anywhere (wherever it
points: a link out of the directory would make us read, hash and sign a file the trainer does not own), a special
file, more bytes than the definition's ``max_model_mb``, nothing at all, no ``model.onnx``, and a ``metrics.json``
that is not a JSON object of at most 64 KiB. Other files are ignored (not collected, not signed) and named.

The directory is walked without following links (``lstat``), and a file is opened with ``O_NOFOLLOW`` when hashed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolution.errors import TrainingFailed
from evolution.training.contract import MAX_METRICS_BYTES, METRICS_FILE, MODEL_FILE

MIB = 1024 * 1024
COLLECTED = (MODEL_FILE, METRICS_FILE)


class OutputRefused(TrainingFailed):
    """A trainer's output directory breaks the contract (the message says how)."""


@dataclass(frozen=True)
class CollectedOutput:
    files: dict[str, str]
    """model.onnx (and metrics.json when present) -> sha256 hex."""
    metrics: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    """Other files the trainer wrote, relative to the output directory: not collected."""
    total_bytes: int = 0


def collect_output(output_dir: Path, max_model_mb: int) -> CollectedOutput:
    """The collected files of ``output_dir``, or OutputRefused naming what breaks the contract."""
    base = Path(output_dir)
    info = os.lstat(base)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise OutputRefused(f"the output directory {base} was replaced by something that is not a directory")
    sizes = _regular_files(base)
    total = sum(sizes.values())
    limit = max_model_mb * MIB
    if total > limit:
        biggest = max(sizes, key=lambda name: sizes[name])
        raise OutputRefused(
            f"the trainer wrote {total / MIB:.1f} MB into its output directory, over the definition's limit of "
            f"{max_model_mb} MB (largest file: {biggest}, {sizes[biggest] / MIB:.1f} MB)"
        )
    if not sizes:
        raise OutputRefused(
            f"the trainer exited 0 but wrote nothing into its output directory (no {MODEL_FILE})"
        )
    if MODEL_FILE not in sizes:
        raise OutputRefused(
            f"the trainer wrote no {MODEL_FILE} into its output directory (it wrote: {', '.join(sorted(sizes))})"
        )
    files = {name: _sha256(base / name) for name in COLLECTED if name in sizes}
    metrics = _metrics(base / METRICS_FILE, sizes[METRICS_FILE]) if METRICS_FILE in sizes else {}
    ignored = sorted(name for name in sizes if name not in COLLECTED)
    return CollectedOutput(files=files, metrics=metrics, ignored=ignored, total_bytes=total)


def _regular_files(base: Path) -> dict[str, int]:
    """name (relative, '/'-separated) -> size of every regular file under ``base``; a link or special file refused."""
    sizes: dict[str, int] = {}
    for current, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(current)
        for name in [*dirnames, *filenames]:
            path = here / name
            relative = path.relative_to(base).as_posix()
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                raise OutputRefused(_symlink_problem(base, path, relative))
            if stat.S_ISREG(info.st_mode):
                sizes[relative] = info.st_size
            elif not stat.S_ISDIR(info.st_mode):
                raise OutputRefused(f"the trainer left a special file in its output directory: {relative}")
    return sizes


def _symlink_problem(base: Path, path: Path, relative: str) -> str:
    target = os.readlink(path)
    resolved = (path.parent / target).resolve()
    where = "out of its output directory" if not resolved.is_relative_to(base.resolve()) else "inside it"
    return (
        f"the trainer left a symbolic link in its output directory: {relative} -> {target} (pointing {where}); "
        "links are refused, write the file itself"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        while block := os.read(fd, MIB):
            digest.update(block)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _metrics(path: Path, size: int) -> dict[str, Any]:
    if size > MAX_METRICS_BYTES:
        raise OutputRefused(f"{METRICS_FILE} is {size} bytes, over the contract's {MAX_METRICS_BYTES} bytes")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_METRICS_BYTES + 1)
    try:
        metrics = json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than the parser goes
        raise OutputRefused(f"{METRICS_FILE} is not valid JSON: {error}") from None
    if not isinstance(metrics, dict):
        raise OutputRefused(f"{METRICS_FILE} must hold a JSON object, not {type(metrics).__name__}")
    return metrics


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (write null, or leave the figure out)")
