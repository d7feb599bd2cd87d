"""Progress bars as a user sees them (issue 17, item 3): `evolution drift compare` on a terminal draws its bars on
stderr and its result on stdout stays clean. (Piped and --json: tests/unit/test_progress.py, in process.)"""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import EVOLUTION

BAR = "━"


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("windows")
    rng = np.random.default_rng(5)
    paths = []
    for name, shift in (("baseline.csv", 0.0), ("current.csv", 8.0)):
        rain = rng.normal(50 + shift, 10, 5000)
        soil = rng.choice(["clay", "loam", "sand"], 5000)
        path = root / name
        path.write_text("rain_mm,soil\n" + "".join(f"{r:.3f},{s}\n" for r, s in zip(rain, soil, strict=True)))
        paths.append(path)
    return paths[0], paths[1]


def compare(windows: tuple[Path, Path], *options: str, terminal: bool) -> tuple[int, str, str]:
    """`evolution drift compare` with stderr on a pseudo-terminal (``terminal``) or a pipe; stdout is a pipe."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    args = [EVOLUTION, "drift", "compare", str(windows[0]), str(windows[1]), *options]
    if not terminal:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout, done.stderr
    controller, child_side = pty.openpty()
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=child_side) as process:
        os.close(child_side)
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        assert process.stdout is not None
        out = process.stdout.read().decode()
        code = process.wait(timeout=120)
    os.close(controller)
    return code, out, drawn.decode(errors="replace")


def test_on_a_terminal_drift_compare_draws_bars_on_stderr_and_prints_a_clean_result(
    windows: tuple[Path, Path],
) -> None:
    code, out, err = compare(windows, terminal=True)
    assert code == 0, err
    for stage in ("read baseline.csv", "read current.csv", "fit the baseline", "compare the window"):
        assert stage in err, err
    assert BAR in err and "\x1b[" in err
    assert "rain_mm" in out and "\x1b" not in out and BAR not in out
