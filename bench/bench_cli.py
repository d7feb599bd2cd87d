"""How long the `evolution` command takes to start, against bare Python start-up measured in the same run.

    python bench/bench_cli.py [--repeat 9] [--state STATE_DIR --tenant TENANT]

Each command runs as a fresh process (output discarded): once, checked, which also warms the file cache; then in
--repeat rounds of one run each, whose median is reported:
  python -c pass                      the floor: the interpreter alone
  evolution --help                    the command list (no command's module is imported)
  evolution versions --tenant T       a read command: settings, the migration check, one registry query
Targets (issue 17): --help within 0.3 s of the floor, a read command within 1 s of it.

Without --state, the demo state is a temporary EVOLUTION_HOME with one tenant holding ten versions of a model in
every lifecycle state, a sealed snapshot and a signed drift report (tests/support/retention_world.py), written
through the real services in this process: no workflow engine is needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.registry.versions import ModelRegistryService
from tests.support.retention_world import Clock, build_world

EVOLUTION = str(Path(sys.executable).parent / "evolution")
HELP_TARGET_S = 0.3
READ_TARGET_S = 1.0


def demo_state() -> tuple[Path, str]:
    home = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    services = build_services(Settings(home=home / "state"))
    clock = Clock()
    registry = ModelRegistryService(services.factory, clock=clock)
    services.__dict__["registry"] = registry  # the versions are made in the past, on this clock
    try:
        world = build_world(services, registry, clock, home / "models")
    finally:
        services.close()
    return home / "state", world.tenant


def check(argv: list[str], env: dict[str, str]) -> None:
    """One run that must succeed; it also warms the file cache."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")


def timed_rounds(commands: list[list[str]], env: dict[str, str], repeat: int) -> list[list[float]]:
    """Wall times of each command, run in turn round after round, so that a change in the machine's load
    weighs on the floor and on the commands alike."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(repeat):
        for argv, runs in zip(commands, times, strict=True):
            started = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            runs.append(time.perf_counter() - started)
    return times


def report(home: Path, tenant: str, repeat: int) -> bool:
    env = {**os.environ, "EVOLUTION_HOME": str(home)}
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"state: {home}; tenant {tenant}; load average {load} on {os.cpu_count()} CPUs")
    print(f"median of {repeat} rounds (each command once per round), after one checked run each")
    labels = ["python -c pass", "evolution --help", f"evolution versions --tenant {tenant}"]
    commands = [
        [sys.executable, "-c", "pass"],
        [EVOLUTION, "--help"],
        [EVOLUTION, "versions", "--tenant", tenant],
    ]
    targets = [None, HELP_TARGET_S, READ_TARGET_S]
    for argv in commands:
        check(argv, env)
    medians = [statistics.median(t) for t in timed_rounds(commands, env, repeat)]
    floor = medians[0]
    ok = True
    for label, median, target in zip(labels, medians, targets, strict=True):
        line = f"  {label:<45} {median:6.3f} s"
        if target is not None:
            within = median - floor <= target
            ok &= within
            line += (
                f"  python + {median - floor:.3f} s (target + {target:.1f} s): {'PASS' if within else 'FAIL'}"
            )
        print(line)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--state", type=Path, help="an EVOLUTION_HOME to read (default: a new demo state)")
    parser.add_argument("--tenant", help="the tenant of --state whose versions are listed")
    args = parser.parse_args()
    if (args.state is None) != (args.tenant is None):
        parser.error("--state and --tenant go together")
    if args.state is not None:
        ok = report(args.state, args.tenant, args.repeat)
    else:
        home, tenant = demo_state()
        try:
            ok = report(home, tenant, args.repeat)
        finally:
            shutil.rmtree(home.parent, ignore_errors=True)
    print("all within target" if ok else "over target")


if __name__ == "__main__":
    main()
