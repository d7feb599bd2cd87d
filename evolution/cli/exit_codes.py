"""The exit codes every `evolution` command uses, and the words `evolution --help` explains them with.

A module of its own, with no imports, so the root group's help costs nothing to build.
"""

from __future__ import annotations

__all__ = ["EXIT_BAD_INPUT", "EXIT_CODES_HELP", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK"]

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and the answer is negative: a check failed, a run failed or was blocked
EXIT_BAD_INPUT = 2  # nothing done: a usage error, a bad value, an unknown tenant or model, no permission
EXIT_INTERRUPTED = 130  # Ctrl-C while `retrain` waits (128 + SIGINT, as shells report it); the run goes on

EXIT_CODES_HELP = (
    "Exit codes: 0 done (a retraining: promoted); "
    "1 the command ran and the answer is negative (a check failed, records rejected, a retraining failed, "
    "was blocked or ended without a new champion, a service is unreachable); "
    "2 nothing done: a usage error, a bad value, an unknown tenant or model, no permission, invalid settings or "
    "no home; 130 Ctrl-C while `retrain` waits (the retraining goes on). "
    "Errors are one line on stderr starting with `error:`; `--json` prints machine-readable JSON on stdout."
)
