"""The CLI as a user runs it: the demo reaches a new champion with a full audit trail; while it keeps running, every
process exports its metrics; verify is clean, no secret leaked (neither a private key nor any of the canary
secrets planted by tests/e2e/test_secret_canary.py), and a tampered artifact fails verify. Its output tells one
consistent story (tests/support/demo_story.py)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx

from evolution.lifecycle import ModelState
from evolution.observability.metrics import EXPORTED_METRICS
from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.security import Principal
from tests.e2e.conftest import DEMO_TENANT, DemoStack
from tests.e2e.conftest import cli as run
from tests.e2e.test_secret_canary import canaries_were_live, plant_user_secrets, search
from tests.support.demo_story import story_problems


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def value(found: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in found.items() if k.split("{")[0] == name and all(w in k for w in wanted))


def scrape(env: dict[str, str]) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Every process's /metrics while the demo's services keep running."""
    urls = {
        "worker": f"http://127.0.0.1:{env['EVOLUTION_WORKER_METRICS_PORT']}/metrics",
        "temporal-sdk": f"http://127.0.0.1:{env['EVOLUTION_TEMPORAL_METRICS_PORT']}/metrics",
        "serving": f"http://127.0.0.1:{env['EVOLUTION_SERVE_PORT']}/metrics",
        "dashboard": f"http://127.0.0.1:{env['EVOLUTION_DASHBOARD_METRICS_PORT']}/metrics",
    }
    scraped = {name: httpx.get(url, timeout=30).text for name, url in urls.items()}
    return {k: samples(v) for k, v in scraped.items()}, scraped


def secret_bodies(keys_dir: Path) -> list[bytes]:
    bodies = []
    for path in [*keys_dir.rglob("*.key"), *keys_dir.rglob("*.pem")]:
        pem = path.read_bytes()
        body = b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
        bodies += [body, base64.b64decode(body)[-32:]]  # the PEM text and the raw private scalar
    return bodies


def test_demo_promotes_exports_metrics_leaks_no_secret_and_verify_catches_tampering(
    demo_stack: DemoStack,
) -> None:
    # The shared demo state (tests/e2e/conftest.py); its clean stop on Ctrl-C is checked when the session ends.
    cli_env, output = demo_stack.env, demo_stack.output
    canaries = demo_stack.canaries  # secrets planted in settings, users and tokens; searched for at the end
    found, texts = scrape(cli_env)
    plant_user_secrets(cli_env, canaries, DEMO_TENANT)
    canaries.outputs["demo output"] = output
    assert "promoted; approved by demo-manager" in output and ", 0 failed" in output
    # One consistent story: the last canary figures printed are the summary's decision; the traffic adds up.
    assert story_problems(output) == [], output

    everything = "\n".join(texts.values())
    declared = {line.split()[2] for line in everything.splitlines() if line.startswith("# TYPE ")}
    missing = [m for m in EXPORTED_METRICS if m not in declared and m.removesuffix("_total") not in declared]
    assert not missing, f"metrics not exported: {missing}"
    worker, serving = found["worker"], found["serving"]
    assert value(worker, "training_duration_seconds_count", tenant="acme-agro") >= 2
    assert value(worker, "retraining_runs_total", tenant="acme-agro", outcome="promoted") == 2
    assert 0 < value(worker, "model_mae", tenant="acme-agro", version="2") < 5
    assert 0 < value(worker, "model_accuracy", tenant="acme-agro", version="2") <= 1
    # The drift alert, then (the demo scans the new champion's first window after the promotion) a calm window.
    assert value(worker, "drift_scans_total", tenant="acme-agro", level="alert") >= 1
    assert 0 < value(worker, "drift_psi", tenant="acme-agro", feature="rain_mm") < 0.25
    assert value(worker, "drift_detection_latency_seconds_count", tenant="acme-agro") >= 1
    assert value(worker, "canary_labels_collected", tenant="acme-agro") >= 1000
    assert 0 <= value(worker, "canary_p_value", tenant="acme-agro") < 0.05
    # Both canaries ended, so their window no longer counts (the rollout alert must not keep firing).
    assert worker['rollout_window_seconds{model="yield",tenant="acme-agro"}'] == 0
    assert value(worker, "quota_gpu_hours_used", tenant="acme-agro") > 0
    assert value(serving, "inference_requests_total", tenant="acme-agro", role="canary") > 0
    assert value(serving, "inference_latency_seconds_count", tenant="acme-agro", role="champion") > 0
    assert value(serving, "inference_availability_ratio") == 1.0
    assert any(name.startswith("temporal_") for name in found["temporal-sdk"])
    assert any(name.startswith("process_") or name.startswith("python_") for name in found["dashboard"])

    home = Path(cli_env["EVOLUTION_HOME"])
    services = build_services(Settings(home=home))
    system = Principal.system("acme-agro")
    champion = services.registry.current(system, "acme-agro", "yield", ModelState.CHAMPION)
    assert champion is not None and champion.number == 2
    states = {v.number: v.state for v in services.registry.list_versions(system, "acme-agro", "yield")}
    assert states == {1: ModelState.DEPRECATED, 2: ModelState.CHAMPION}
    changes = [
        (e.subject_id, e.to_state) for e in services.registry.audit_trail(system, "acme-agro") if e.to_state
    ]
    for state in ("DRAFT", "TRAINING", "VALIDATED", "SHADOW", "CANARY", "CHAMPION"):
        assert (champion.id, state) in changes
    reports = services.drift_reports.list_reports(system, "acme-agro", limit=100)
    assert reports[0].level == "ok" and "alert" in [r.level for r in reports]
    # A season of 12 windows before the drift, the drift, and the window after the promotion.
    assert len(reports) >= 14

    # No private key reaches a log, the registry (audit rows, reports, outbox) or a workflow history.
    haystacks = [*home.joinpath("logs").iterdir(), home / "registry.db", home / "temporal.db"]
    for secret in secret_bodies(home / "keys"):
        leaked = [p.name for p in haystacks if secret in p.read_bytes()]
        assert not leaked, f"a private key appears in {leaked}"

    verify = run(cli_env, "verify")
    assert verify.returncode == 0 and ", 0 failed" in verify.stdout, verify.stdout

    # Tamper with one model file: verify must now fail and name it.
    entry = champion.manifest["manifest"]["files"][0]  # type: ignore[index]
    path = next(Path(home, "artifacts", "acme-agro").rglob(entry["sha256"]))
    mode = path.stat().st_mode
    original = path.read_bytes()
    os.chmod(path, 0o644)
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    try:
        path.write_bytes(bytes(data))
        tampered = run(cli_env, "verify", "--tenant", "acme-agro")
    finally:  # the demo state is shared: put the file back as it was
        path.write_bytes(original)
        os.chmod(path, mode)
    assert tampered.returncode == 1
    assert "FAILED" in tampered.stdout and entry["name"] in tampered.stdout
    services.close()

    # No planted canary secret anywhere: files under the state dir (logs, databases and WALs, workflow
    # histories, reports, artifacts) or any command's output; and the canaries were really used.
    for name, done in (("verify", verify), ("verify after tampering", tampered)):
        canaries.outputs[f"stdout of {name}"], canaries.outputs[f"stderr of {name}"] = (
            done.stdout,
            done.stderr,
        )
    hits, searched = search(home, canaries)
    assert searched > 20 and hits == [], hits
    canaries_were_live(canaries)
