"""Bring your own model, end to end, as a user runs it: `evolution demo --byo --fast` on the real services.

The demo's tenant starts with a built-in champion, then an admin defines the tenant's model with the example trainer
of examples/sklearn_pipeline (a scikit-learn pipeline exported to ONNX, run as a command under the training contract).
Drift comes, the retraining runs the tenant's trainer, the candidate goes through validation, shadow, the canary and
approval, and becomes CHAMPION. While the services still run, the test checks with the CLI and the HTTP API what a
user would: the definition in force, the versions and their signed lineage (the example's own file, by digest), and
that the champion answering forecasts is the tenant's ONNX model, by predicting the same rows with onnxruntime from
the champion's signed model.onnx. After Ctrl-C, `evolution verify` passes."""

from __future__ import annotations

import hashlib
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

from evolution.demo.synthetic import CATEGORICAL, FEATURES, generate_rows
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.security import Principal
from evolution.timeutil import utcnow
from tests.e2e.conftest import EVOLUTION
from tests.e2e.conftest import cli as run
from tests.support.demo_story import story_problems

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_TRAINER = ROOT / "examples" / "sklearn_pipeline" / "train.py"
TENANT, MODEL = "acme-agro", "yield"


@contextmanager
def demo_running(env: dict[str, str], *options: str) -> Iterator[str]:
    """`evolution demo … --keep-running` until its summary is out; its output so far; Ctrl-C afterwards."""
    demo = subprocess.Popen(
        [EVOLUTION, "demo", *options, "--keep-running"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if "services keep running" in line:
                break
        output = "".join(lines)
        assert "services keep running" in output, output[-4000:]
        yield output
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.communicate()
            raise AssertionError("the demo did not stop after Ctrl-C") from None
    assert demo.returncode == 0


def predict(env: dict[str, str], token: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    instances = [
        {"request_id": f"byo-e2e-{i}", "features": {name: row[name] for name in FEATURES}}
        for i, row in enumerate(rows)
    ]
    response = httpx.post(
        f"http://127.0.0.1:{env['EVOLUTION_SERVE_PORT']}/v1/tenants/{TENANT}/models/{MODEL}/predict",
        json={"instances": instances},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def onnxruntime_predictions(model: bytes, rows: list[dict[str, Any]]) -> np.ndarray:
    """The model's predictions for ``rows`` as the contract feeds it: [N, 1] per feature, NaN and "" if missing."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {}
    for name in FEATURES:
        if name in CATEGORICAL:
            feeds[name] = np.array([[row[name] or ""] for row in rows], dtype=object)
        else:
            values = [np.nan if row[name] is None else row[name] for row in rows]
            feeds[name] = np.array(values, dtype=np.float32).reshape(-1, 1)
    (output, *_) = session.run(None, feeds)
    return np.asarray(output, dtype=np.float64).reshape(-1)


def test_a_tenants_own_sklearn_trainer_goes_from_drift_to_an_onnx_champion_served_through_onnxruntime(
    cli_env: dict[str, str],
) -> None:
    with demo_running(cli_env, "--byo", "--fast", "--no-dashboard") as output:
        # What the demo said: the tenant's trainer defined, its candidate ONNX, checked, promoted, verified.
        assert f"bring your own model: demo-admin defined {TENANT}/{MODEL} revision 1" in output, output
        assert "candidate v2: trained by the tenant's trainer, format onnx" in output, output
        assert "model.onnx" in output and "passed the ONNX gate" in output, output
        assert "promoted; approved by demo-manager" in output and ", 0 failed" in output, output
        assert "v2, the tenant's own model, format onnx, served through onnxruntime" in output, output
        assert story_problems(output) == [], output  # the same one consistent story as the built-in demo

        # The definition in force: the example as a command trainer.
        shown = run(cli_env, "model", "show", TENANT, MODEL)
        assert shown.returncode == 0, shown.stderr
        assert "revision 1, defined by demo-admin" in shown.stdout
        assert "sklearn_trainer.py '{input}' '{output}'" in shown.stdout, shown.stdout
        assert "crop (categorical)" in shown.stdout and "rain_mm (numeric)" in shown.stdout

        # The versions: the built-in v1 deprecated, the tenant's v2 champion, with its lineage: the command, the
        # example's own file by digest, the contract.
        versions = run(cli_env, "versions", "-t", TENANT, "--lineage")
        assert versions.returncode == 0, versions.stderr
        v1, v2 = versions.stdout.split(f"{MODEL} v2 ")
        assert "DEPRECATED" in v1 and "builtin evolution.builtin.hist_gbr" in v1, versions.stdout
        assert v2.lstrip().startswith("CHAMPION"), versions.stdout
        example_digest = hashlib.sha256(EXAMPLE_TRAINER.read_bytes()).hexdigest()
        assert "trainer   command " in v2 and "sklearn_trainer.py {input} {output}" in v2, v2
        assert f"sha256 {example_digest}" in v2, v2  # the very file examples/sklearn_pipeline/train.py
        assert "contract  evolution-training/1" in v2 and "(verified)" in v2, v2
        audit = run(cli_env, "audit", "-t", TENANT, "--limit", "200").stdout
        assert "model.defined" in audit and "demo-admin" in audit, audit

        # The champion's signed files are the ONNX format's, and the trainer's own metrics were kept.
        services = build_services(Settings(home=Path(cli_env["EVOLUTION_HOME"])))
        try:
            system = Principal.system(TENANT)
            champion = services.registry.current(system, TENANT, MODEL, ModelState.CHAMPION)
            assert champion is not None and champion.number == 2 and champion.manifest is not None
            files = {f["name"]: f["sha256"] for f in champion.manifest["manifest"]["files"]}
            assert {"model.onnx", "onnx_card.json"} <= set(files), files
            assert not {"model.json", "model.pkl"} & set(files), files
            assert champion.metrics["trainer"]["train_mae"] > 0
            assert champion.metrics["trainer"]["regressor"] == "sklearn.ensemble.GradientBoostingRegressor"
            assert champion.metrics["validation"]["passed"] is True
        finally:
            services.close()
        model = next(Path(cli_env["EVOLUTION_HOME"], "artifacts", TENANT).rglob(files["model.onnx"]))
        assert hashlib.sha256(model.read_bytes()).hexdigest() == files["model.onnx"]

        # Forecasts over the HTTP API come from v2, and are exactly what onnxruntime computes from its model.onnx,
        # missing values included (NaN for a number, "" for a category). v2 was promoted after a canary, so its
        # post-promotion watch runs: v2 serves, v1 scores beside it (role "watch").
        created = run(cli_env, "users", "token", "create", "demo-service", "--name", "byo e2e")
        assert created.returncode == 0, created.stderr
        rows = generate_rows(40, seed=99, start=utcnow() - timedelta(hours=1), period_s=60)
        rows[0]["rain_mm"], rows[1]["soil_texture"] = None, None
        served = predict(cli_env, created.stdout.strip(), rows)
        assert {(p["role"], p["version_number"], p["served_by"]) for p in served} == {
            ("watch", 2, champion.id)
        }
        expected = onnxruntime_predictions(model.read_bytes(), rows)
        got = np.array([p["prediction"] for p in served])
        assert np.allclose(got, expected, rtol=1e-6, atol=1e-6), (got, expected)
        assert np.isfinite(got).all() and len(set(got.round(6))) > 1  # a model, not a constant

    verify = run(cli_env, "verify")
    assert verify.returncode == 0 and ", 0 failed" in verify.stdout, verify.stdout
