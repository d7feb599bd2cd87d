"""Init container of an image trainer's Job: ``python -m evolution.training.stage_input --from SRC --to DST
--expect NAME=sha256:HEX [--expect …]``.

The worker writes the training contract's input files (``snapshot.parquet``, ``schema.json``, ``config.json``) into
the job's input directory on the shared work volume and puts their digests into the Job's manifest, which nothing
but the worker (through the API server) can write. This step runs in our image before the tenant's container
starts: it copies each listed file from ``SRC`` (the job's input directory, mounted read-only) into ``DST`` (a
pod-local emptyDir, mounted read-only into the tenant's container) and checks the *copy* against its digest. The
check is on the bytes the trainer will read, in a place nobody else can write once the check is done, so a file
changed on the shared volume after the worker hashed it is caught rather than trained on.

Only the listed files are staged; anything else in ``SRC`` stays behind. A symbolic link, a missing file, something
other than a regular file, or a digest that does not match fails the step (exit 1, the reason on stderr): the pod
then fails before the tenant's code ever runs. Exit 2 is a malformed call.

It imports nothing but the standard library and the project's error types, holds no credentials and needs no
network: the training pod's NetworkPolicy allows none.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from evolution.errors import IntegrityViolation

MODULE = "evolution.training.stage_input"

_CHUNK = 1 << 20
_DIGEST = re.compile(r"^sha256:(?P<hex>[0-9a-f]{64})$")
# A plain file name: no directory separators, no leading dot (so neither "." nor ".." nor a hidden file).
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")


def expectation(name: str, sha256_hex: str) -> str:
    """One ``--expect`` value, as the manifest builder writes it and :func:`parse_expectations` reads it."""
    return f"{name}=sha256:{sha256_hex}"


def parse_expectations(values: Sequence[str]) -> dict[str, str]:
    """``NAME=sha256:HEX`` values as {name: hex}; ValueError naming the bad one."""
    expected: dict[str, str] = {}
    for value in values:
        name, sep, digest = value.partition("=")
        match = _DIGEST.match(digest)
        if not sep or match is None:
            raise ValueError(f"--expect {value!r}: want NAME=sha256:<64 lowercase hex>")
        if not _NAME.match(name):
            raise ValueError(f"--expect {value!r}: {name!r} is not a plain file name")
        if name in expected:
            raise ValueError(f"--expect: {name!r} listed twice")
        expected[name] = match["hex"]
    if not expected:
        raise ValueError("nothing to stage: give at least one --expect")
    return expected


def stage(source: Path, target: Path, expected: Mapping[str, str]) -> dict[str, int]:
    """Copy each expected file from ``source`` into ``target`` and check the copy; {name: size in bytes}.

    Raises IntegrityViolation for a missing, linked, irregular or altered file; the bad copy is removed.
    """
    sizes: dict[str, int] = {}
    source_dir = _open_directory(source, "input")
    target_dir = _open_directory(target, "staging")
    try:
        for name in sorted(expected):
            sizes[name] = _copy(source_dir, target_dir, name, source)
            actual = _sha256(target_dir, name)
            if actual != expected[name]:
                os.unlink(name, dir_fd=target_dir)
                raise IntegrityViolation(
                    f"input file {name} has sha256 {actual}, but the worker staged {expected[name]}: it changed "
                    "on the shared volume after the worker wrote it"
                )
            os.chmod(name, 0o444, dir_fd=target_dir)  # the trainer reads it; nothing writes it again
    finally:
        os.close(source_dir)
        os.close(target_dir)
    return sizes


def _open_directory(path: Path, what: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise IntegrityViolation(
            f"the {what} directory {str(path)!r} cannot be opened: {exc.strerror}"
        ) from None


def _copy(source_dir: int, target_dir: int, name: str, source: Path) -> int:
    """Copy one file between the two directories without following a link on either side; its size."""
    try:
        # O_NONBLOCK: a FIFO planted in the input must fail the check below, not hang the open.
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=source_dir)
    except FileNotFoundError:
        raise IntegrityViolation(f"input file {name} is missing from {str(source)!r}") from None
    except OSError as exc:  # ELOOP: a symbolic link
        raise IntegrityViolation(
            f"input file {name} cannot be opened without following links: {exc}"
        ) from None
    with os.fdopen(src, "rb") as reader:
        mode = os.fstat(reader.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise IntegrityViolation(f"input file {name} is not a regular file")
        try:
            dst = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=target_dir,
            )
        except FileExistsError:
            raise IntegrityViolation(
                f"{name} is already in the staging directory, which must start empty"
            ) from None
        with os.fdopen(dst, "wb") as writer:
            shutil.copyfileobj(reader, writer, _CHUNK)
            return writer.tell()


def _sha256(directory: int, name: str) -> str:
    digest = hashlib.sha256()
    with os.fdopen(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory), "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, type=Path, help="the job's input directory")
    parser.add_argument(
        "--to", dest="target", required=True, type=Path, help="the pod-local staging directory"
    )
    parser.add_argument("--expect", action="append", default=[], metavar="NAME=sha256:HEX")
    try:
        args = parser.parse_args(argv)
        expected = parse_expectations(args.expect)
    except SystemExit as exit_:  # argparse's own usage errors exit 2 already
        return int(exit_.code or 0)
    except ValueError as exc:
        print(f"stage_input: {exc}", file=sys.stderr)
        return 2
    try:
        sizes = stage(args.source, args.target, expected)
    except IntegrityViolation as exc:
        print(f"stage_input: refused: {exc}", file=sys.stderr)
        return 1
    for name, size in sorted(sizes.items()):
        print(f"stage_input: staged {name} ({size} bytes, sha256 {expected[name]})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
