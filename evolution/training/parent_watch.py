"""A local training job dies with the worker that started it (standard library only: imported before the rest).

The job runs in a session of its own, so that a cancellation's killpg reaches everything it spawns; that also
shields it from a SIGKILL of its worker's process group, and a job that outlives its killed worker races the
retried attempt for the same output directory. On Linux the job asks the kernel for SIGKILL on its parent's
death, first thing in the child (single-threaded; not in a preexec function of the threaded worker, where a
foreign call could deadlock on a lock held by another thread at fork time).

A trainer that follows the training contract is not our code and cannot make that request itself, so the local
backend starts it through this file run as a script, ``python parent_watch.py PROGRAM ARG...``: it makes the
request, drops the variable, and execs the trainer, which keeps the request (it survives exec), its pid and its
process group.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping

# The pid of the process that started a local job (set by the backend in the job's environment).
PARENT_PID_ENV = "EVOLUTION_JOB_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent(environ: Mapping[str, str] = os.environ) -> None:
    """SIGKILL this process when the process named by ``EVOLUTION_JOB_PARENT_PID`` dies; at once if it has.

    Without the variable (a Kubernetes pod, a manual run) or off Linux, nothing.
    """
    expected = environ.get(PARENT_PID_ENV)
    if not expected or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != int(expected):  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def exec_with_parent_watch(argv: list[str]) -> None:
    """Die with the parent, then become ``argv`` (never returns; exit code 127 if it cannot be run)."""
    die_with_parent()
    os.environ.pop(PARENT_PID_ENV, None)
    try:
        os.execv(argv[0], argv)
    except OSError as error:
        print(f"cannot run the trainer {argv[0]!r}: {error}", file=sys.stderr)
        os._exit(127)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: python parent_watch.py PROGRAM [ARG...]", file=sys.stderr)
        sys.exit(2)
    exec_with_parent_watch(sys.argv[1:])
