"""The trainer's identity a training binds into its signed manifest, read from the model definition it ran under.

A command trainer's code files are hashed when the training starts, from the paths the definition lists: relative
to the worker's working directory, or absolute. A code file that is missing (or not a regular file) fails the
training: a lineage that cannot say what ran is no lineage. The same digests, taken again, tell a reproduction
whether the code it would run is still the code that trained the model (:func:`changed_code_files`).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from evolution.errors import TrainingFailed
from evolution.integrity.trainer_identity import CodeFileDigest, TrainerIdentity
from evolution.registry.model_definitions import BuiltinTrainer, CommandTrainer, ImageTrainer
from evolution.training.contract import CONTRACT

BUILTIN_TRAINER_NAME = "evolution.builtin.hist_gbr"


def trainer_identity(
    trainer: BuiltinTrainer | CommandTrainer | ImageTrainer, base_dir: Path | None = None
) -> TrainerIdentity:
    """The identity of ``trainer``; a command's code files are hashed now, relative to ``base_dir`` (the cwd)."""
    if isinstance(trainer, BuiltinTrainer):
        return TrainerIdentity(kind="builtin", name=BUILTIN_TRAINER_NAME)
    if isinstance(trainer, ImageTrainer):
        return TrainerIdentity(
            kind="image",
            contract=CONTRACT,
            image=trainer.image,
            image_digest=trainer.digest,
            argv=[*trainer.command, *trainer.args],
        )
    base = base_dir or Path.cwd()
    return TrainerIdentity(
        kind="command",
        contract=CONTRACT,
        argv=list(trainer.argv),
        code_files=[
            CodeFileDigest(path=path, sha256=code_file_digest(path, base)) for path in trainer.code_files
        ],
    )


def code_file_path(path: str, base_dir: Path) -> Path:
    """Where a listed code file is: absolute as given, else relative to ``base_dir``."""
    return Path(path) if os.path.isabs(path) else base_dir / path


def code_file_digest(path: str, base_dir: Path) -> str:
    """SHA-256 of a listed code file, or TrainingFailed naming the file and why it cannot be hashed."""
    where = code_file_path(path, base_dir)
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not hang the training
    except OSError as error:
        raise TrainingFailed(
            f"the trainer's code file {path!r} cannot be read ({error.strerror}; looked at {where}): the lineage "
            "binds a digest of every code file the definition lists"
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TrainingFailed(f"the trainer's code file {path!r} ({where}) is not a regular file")
        digest = hashlib.sha256()
        while block := os.read(fd, 1 << 20):
            digest.update(block)
        return digest.hexdigest()
    finally:
        os.close(fd)


def changed_code_files(identity: TrainerIdentity, base_dir: Path | None = None) -> list[str]:
    """One line per listed code file whose digest now differs from the signed one (or that is gone)."""
    base = base_dir or Path.cwd()
    changes: list[str] = []
    for signed in identity.code_files:
        try:
            now = code_file_digest(signed.path, base)
        except TrainingFailed as missing:
            changes.append(str(missing))
            continue
        if now != signed.sha256:
            changes.append(f"code file {signed.path}: signed sha256 {signed.sha256}, now {now}")
    return changes


def resolved_argv(trainer: CommandTrainer, base_dir: Path | None = None) -> list[str]:
    """The argv to run, with each listed code file named by its absolute path.

    The trainer runs in its job directory, not in the worker's: an argument that names a code file relative to
    the worker's working directory (``python examples/…/train.py``) would not be found from there.
    """
    base = base_dir or Path.cwd()
    listed = set(trainer.code_files)
    return [str(code_file_path(arg, base).absolute()) if arg in listed else arg for arg in trainer.argv]
