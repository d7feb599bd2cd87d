"""The OpenSSF verifier (model-signing, a test dependency) run as a user runs it: its CLI, or the same checks
through its Python API (no process start-up: what unit tests use)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MODEL_SIGNING = str(Path(sys.executable).parent / "model_signing")


def verify_with_api(directory: Path, public_key: Path) -> None:
    """What `model_signing verify key --signature DIR/model.sig --public_key KEY DIR` does; raises ValueError
    (or the cryptography error) on any mismatch."""
    import model_signing

    signature = directory / "model.sig"
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"], ignore_git_paths=True)
    ).verify(directory, signature)


def verify_with_cli(directory: Path, public_key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            MODEL_SIGNING,
            "verify",
            "key",
            "--signature",
            str(directory / "model.sig"),
            "--public_key",
            str(public_key),
            str(directory),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
