"""`evolution tenant quota` and `evolution tenant breaker` as an operator runs them: audited, bad input refused.

(Every value the service refuses is covered in tests/integration/test_quota_and_breaker.py; each CLI call here
costs a process start, so this file checks the wiring, the messages and the exit codes once.)
"""

from __future__ import annotations

from tests.e2e.conftest import cli as run


def test_an_admin_sets_quotas_and_resets_the_breaker_and_bad_input_changes_nothing(
    cli_env: dict[str, str],
) -> None:
    assert run(cli_env, "tenant", "create", "acme").returncode == 0
    raised = run(cli_env, "tenant", "quota", "set", "acme", "--gpu-hours", "250", "--budget-usd", "900")
    assert raised.returncode == 0, raised.stderr
    assert "250 GPU-hours and $900 per month" in raised.stdout
    refused = run(cli_env, "tenant", "quota", "set", "acme", "--gpu-hours", "-5", "--budget-usd", "nan")
    assert refused.returncode == 2 and "is not a finite, non-negative number" in refused.stderr

    as_manager = {**cli_env, "EVOLUTION_OPERATOR_ROLE": "manager"}
    denied = run(as_manager, "tenant", "breaker", "reset", "acme", "--reason", "try again")
    assert denied.returncode == 2 and "manage_tenant" in denied.stderr
    reset = run(cli_env, "tenant", "breaker", "reset", "acme", "--reason", "pipeline fixed")
    assert reset.returncode == 0 and "breaker closed, retraining enabled" in reset.stdout
    status = run(cli_env, "tenant", "breaker", "status", "acme")
    assert "breaker closed, 0 of 3 consecutive failures" in status.stdout, status.stderr
    shown = run(cli_env, "tenant", "show", "acme")  # the breaker is in the tenant's overview too
    assert "circuit breaker closed: 0 of 3 consecutive failures" in shown.stdout, shown.stderr

    trail = run(cli_env, "audit", "--tenant", "acme").stdout
    assert trail.count("tenant.quota_set") == 1 and trail.count("breaker.reset") == 1
