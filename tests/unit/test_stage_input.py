"""The input-staging step of an image trainer's pod (evolution.training.stage_input): exactly the listed files are
copied, each copy is checked against its digest, and anything that is not the regular file the worker hashed is
refused before the tenant's code could read it."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from evolution.errors import IntegrityViolation
from evolution.training.stage_input import expectation, main, parse_expectations, stage


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    directory = tmp_path / "shared-input"
    directory.mkdir()
    (directory / "snapshot.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 40)
    (directory / "config.json").write_text('{"seed": 42}')
    return directory


@pytest.fixture
def target(tmp_path: Path) -> Path:
    directory = tmp_path / "staged"
    directory.mkdir()
    return directory


def _expected(source: Path, *names: str) -> dict[str, str]:
    return {name: _digest((source / name).read_bytes()) for name in names}


def test_each_listed_file_is_copied_checked_and_left_read_only_and_nothing_else_is_staged(
    source: Path, target: Path
) -> None:
    (source / "notes.txt").write_text("not part of the contract")
    expected = _expected(source, "snapshot.parquet", "config.json")
    sizes = stage(source, target, expected)

    assert sorted(p.name for p in target.iterdir()) == ["config.json", "snapshot.parquet"]
    for name in expected:
        assert (target / name).read_bytes() == (source / name).read_bytes()
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o444
        assert sizes[name] == (source / name).stat().st_size


def test_a_copy_that_does_not_match_its_digest_is_removed_and_refused(source: Path, target: Path) -> None:
    expected = _expected(source, "snapshot.parquet", "config.json")
    (source / "config.json").write_text('{"seed": 43}')  # changed after the worker hashed it
    with pytest.raises(IntegrityViolation, match=r"config\.json has sha256 .* changed on the shared volume"):
        stage(source, target, expected)
    assert not (target / "config.json").exists()


def test_a_symbolic_link_is_refused_even_to_a_file_with_the_right_bytes(
    source: Path, target: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes((source / "config.json").read_bytes())
    expected = _expected(source, "config.json")
    (source / "config.json").unlink()
    (source / "config.json").symlink_to(elsewhere)
    with pytest.raises(IntegrityViolation, match="without following links"):
        stage(source, target, expected)
    assert list(target.iterdir()) == []


def test_a_fifo_in_place_of_a_file_is_refused_without_hanging(source: Path, target: Path) -> None:
    os.mkfifo(source / "schema.json")  # opening it for reading would block until a writer came
    with pytest.raises(IntegrityViolation, match="not a regular file"):
        stage(source, target, {"schema.json": "0" * 64})


def test_a_missing_file_is_refused(source: Path, target: Path) -> None:
    with pytest.raises(IntegrityViolation, match=r"schema\.json is missing"):
        stage(source, target, {"schema.json": "0" * 64})


def test_expectations_name_plain_files_with_sha256_digests() -> None:
    digest = "ab" * 32
    assert parse_expectations([expectation("config.json", digest)]) == {"config.json": digest}
    for bad in (
        "config.json",
        "config.json=md5:00",
        "../config.json=sha256:" + digest,
        "a/b=sha256:" + digest,
    ):
        with pytest.raises(ValueError, match="--expect"):
            parse_expectations([bad])
    with pytest.raises(ValueError, match="twice"):
        parse_expectations([expectation("a.json", digest), expectation("a.json", digest)])
    with pytest.raises(ValueError, match="nothing to stage"):
        parse_expectations([])


def test_the_command_exits_0_1_or_2_and_says_why_on_stderr(
    source: Path, target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = expectation("config.json", _expected(source, "config.json")["config.json"])
    assert main(["--from", str(source), "--to", str(target), "--expect", good]) == 0
    assert "staged config.json" in capsys.readouterr().err

    wrong = expectation("snapshot.parquet", "0" * 64)
    assert main(["--from", str(source), "--to", str(target), f"--expect={wrong}"]) == 1
    assert "refused: input file snapshot.parquet" in capsys.readouterr().err

    assert main(["--from", str(source), "--to", str(target), "--expect", "config.json"]) == 2
    assert "NAME=sha256" in capsys.readouterr().err
    assert main(["--to", str(target)]) == 2  # argparse: --from is required
