"""Planted canary secrets: what the demo test plants, and the search that must find none of them afterwards.

The demo test (``test_demo_cli.py``) runs the demo with canaries planted in every secret the system handles:

* the SMTP password and the webhook's HMAC secret (settings, used for real: the demo's notifications go to a local
  SMTP server that requires that password and to a local webhook receiver that checks the signatures), and a
  canary in the webhook URL's path (the URL is treated as sensitive: logs show its host only). The password comes
  from an environment variable, the webhook secret from a file (``EVOLUTION_NOTIFICATIONS__WEBHOOK__SECRET_FILE``,
  outside the state directory, as a Kubernetes Secret volume would give it), so both ways of giving a secret
  are covered;
* while the demo's services keep running, a user's password set with ``evolution users add --password-stdin`` and
  changed with ``users set-password``, and an API token from ``evolution users token create``, then used against
  the serving API, together with a forged token that must be refused.

Afterwards every file under the state directory (logs, the registry database and its WAL, the Temporal database
with the workflow histories, drift reports and every other object in the artifact store, work files, keys) and the
stdout/stderr of every command are searched for each canary: raw, base64 (standard and URL-safe, at every byte
alignment) and hex (lower and upper case). The one legitimate appearance, the token on the stdout of the command
that creates it, is left out. 0 hits.

The test in this file checks the search itself: it finds a canary in each form and in each kind of place.
"""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.conftest import EVOLUTION
from tests.support.notification_servers import SmtpSink, WebhookReceiver, smtp_server, webhook_server

# Alphanumeric, so no escaping (JSON, URL, shell) can disguise them; long enough that a hit is never chance.
SMTP_USER = "evolution-relay"
SMTP_PASSWORD = "CanarySmtpPassw0rd7d1e5b2c9a4f"
WEBHOOK_SECRET = "CanaryWebhookSecret3b8e0f6a2d5c"
WEBHOOK_PATH_SECRET = "CanaryUrlPath9c4a7e1f0b3d6e2a"
USER_PASSWORD = "CanaryUserPassword5e2b8d1a7c0f"
USER_NEW_PASSWORD = "CanaryNewPassword2f7c4e9b1d6a"
FORGED_TOKEN = "evo_CanaryForgedToken8a3f1c6e9b2d4f7a"
CANARY_USER = "canary-admin"
ALL_SEVERITIES = (
    '{"info": ["email", "webhook"], "warning": ["email", "webhook"], "alert": ["email", "webhook"], '
)
ALL_SEVERITIES += '"critical": ["email", "webhook"]}'


def forms(secret: str) -> dict[str, set[bytes]]:
    """Every spelling to search for: raw, base64 at each of the 3 byte alignments, hex."""
    raw = secret.encode()
    b64: set[bytes] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset, skip in ((0, 0), (1, 2), (2, 3)):  # digits that mix in neighbouring bytes are dropped
            encoded = encode(b"\0" * offset + raw).rstrip(b"=")
            b64.add(encoded[skip:-3])
    return {"raw": {raw}, "base64": b64, "hex": {raw.hex().encode(), raw.hex().upper().encode()}}


@dataclass
class Hit:
    canary: str
    form: str
    where: str


@dataclass
class CanaryRun:
    """The canaries of one demo run, and the output of every command that handled them."""

    secrets: dict[str, str] = field(
        default_factory=lambda: {
            "smtp password": SMTP_PASSWORD,
            "webhook secret": WEBHOOK_SECRET,
            "webhook url path": WEBHOOK_PATH_SECRET,
            "user password": USER_PASSWORD,
            "user new password": USER_NEW_PASSWORD,
            "forged api token": FORGED_TOKEN,
        }
    )
    outputs: dict[str, str] = field(default_factory=dict)
    smtp: SmtpSink | None = None
    webhook: WebhookReceiver | None = None

    def run(
        self,
        env: dict[str, str],
        *args: str,
        stdin: str | None = None,
        secret_stdout: bool = False,
        must_succeed: bool = True,
    ) -> str:
        """A CLI command; its stdout and stderr join the haystack (stdout not, if it is *meant* to show a secret)."""
        done = subprocess.run(
            [EVOLUTION, *args], env=env, input=stdin, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0 or not must_succeed, (args, done.stdout, done.stderr)
        label = " ".join(args[:3])
        self.outputs[f"stderr of {label}"] = done.stderr
        if not secret_stdout:
            self.outputs[f"stdout of {label}"] = done.stdout
        return done.stdout


@contextlib.contextmanager
def notification_canaries(env: dict[str, str], run: CanaryRun) -> Iterator[None]:
    """The demo's notifications go, with canary credentials, to a real local SMTP server and webhook receiver."""
    with (
        smtp_server(credentials=(SMTP_USER, SMTP_PASSWORD)) as (sink, smtp_port),
        webhook_server(WEBHOOK_SECRET) as receiver,
    ):
        # Beside the state directory, not in it (the secret file is the one place the secret is meant to be); it
        # stays for the commands after the demo, which run with these settings too.
        secrets_dir = Path(env["EVOLUTION_HOME"]).parent / "secrets"
        secrets_dir.mkdir(exist_ok=True)
        webhook_secret_file = secrets_dir / "webhook-secret"
        webhook_secret_file.write_text(WEBHOOK_SECRET + "\n", encoding="utf-8")
        env.update(
            {
                "EVOLUTION_NOTIFICATIONS__SMTP__HOST": "127.0.0.1",
                "EVOLUTION_NOTIFICATIONS__SMTP__PORT": str(smtp_port),
                "EVOLUTION_NOTIFICATIONS__SMTP__STARTTLS": "false",
                "EVOLUTION_NOTIFICATIONS__SMTP__USERNAME": SMTP_USER,
                "EVOLUTION_NOTIFICATIONS__SMTP__PASSWORD": SMTP_PASSWORD,
                "EVOLUTION_NOTIFICATIONS__SMTP__SENDER": "evolution@example.com",
                "EVOLUTION_NOTIFICATIONS__SMTP__RECIPIENTS": '{"info": ["ops@example.com"], '
                '"warning": ["ops@example.com"], "alert": ["ops@example.com"], "critical": ["ops@example.com"]}',
                "EVOLUTION_NOTIFICATIONS__WEBHOOK__URL": f"http://127.0.0.1:{receiver.port}/hooks/{WEBHOOK_PATH_SECRET}",
                "EVOLUTION_NOTIFICATIONS__WEBHOOK__SECRET_FILE": str(webhook_secret_file),
                "EVOLUTION_NOTIFICATIONS__POLICY__SEVERITY_CHANNELS": ALL_SEVERITIES,
            }
        )
        run.smtp, run.webhook = sink, receiver
        yield


def plant_user_secrets(env: dict[str, str], run: CanaryRun, tenant: str) -> None:
    """While the services run: a user with a password, a new password, an API token used on the serving API; and
    `evolution doctor`, which says where each secret came from (its output joins the haystack)."""
    # Not every check need pass here (the demo's backends are local stand-ins): only what it says of the secrets.
    doctor = run.run(env, "doctor", "--skip", "temporal", must_succeed=False)
    assert "notifications.webhook.secret" in doctor and "from file" in doctor, doctor
    assert "notifications.smtp.password" in doctor and "from the environment" in doctor, doctor
    run.run(
        env,
        "users",
        "add",
        CANARY_USER,
        "--role",
        "admin",
        "--tenant",
        tenant,
        "--password-stdin",
        stdin=USER_PASSWORD + "\n",
    )
    run.run(env, "users", "set-password", CANARY_USER, "--password-stdin", stdin=USER_NEW_PASSWORD + "\n")
    token = run.run(env, "users", "token", "create", CANARY_USER, "--name", "canary", secret_stdout=True)
    token = token.strip().splitlines()[-1]
    assert token.startswith("evo_")
    run.secrets["api token"] = token
    run.run(env, "users", "token", "list", CANARY_USER)
    url = f"http://127.0.0.1:{env['EVOLUTION_SERVE_PORT']}/v1/tenants/{tenant}/models/yield"
    with httpx.Client(timeout=30) as client:
        good = client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert good.status_code == 200, good.text
        forged = client.get(url, headers={"Authorization": f"Bearer {FORGED_TOKEN}"})
        assert forged.status_code == 401, forged.text
        run.outputs["responses"] = good.text + forged.text


def search(home: Path, run: CanaryRun) -> tuple[list[Hit], int]:
    """Every canary, in every form, in every file under ``home`` and in every output; returns (hits, files)."""
    needles = [
        (name, form, spelling)
        for name, secret in run.secrets.items()
        for form, spellings in forms(secret).items()
        for spelling in spellings
    ]
    hits: list[Hit] = []
    files = 0
    for path in sorted(home.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        files += 1
        data = path.read_bytes()
        hits += [Hit(name, form, str(path.relative_to(home))) for name, form, s in needles if s in data]
    for label, text in run.outputs.items():
        data = text.encode()
        hits += [Hit(name, form, label) for name, form, s in needles if s in data]
    return hits, files


def canaries_were_live(run: CanaryRun) -> None:
    """The settings' canaries were really used: the SMTP login succeeded and signed webhooks verified."""
    assert run.smtp is not None and run.webhook is not None
    assert run.smtp.logins and run.smtp.mails, "no notification e-mail was sent with the canary password"
    assert any(r.verified for r in run.webhook.delivered), "no webhook was signed with the canary secret"
    assert all(r.path.startswith(f"/hooks/{WEBHOOK_PATH_SECRET}") for r in run.webhook.delivered)


# ---------------------------------------------------------------- the search finds what it looks for


def test_the_search_finds_a_canary_in_each_form_in_logs_databases_wal_files_and_outputs(
    tmp_path: Path,
) -> None:
    home = tmp_path / "state"
    (home / "logs").mkdir(parents=True)
    run = CanaryRun()
    assert search(home, run) == ([], 0)
    (home / "logs" / "worker.log").write_text(f"connecting with password={SMTP_PASSWORD}\n")
    (home / "logs" / "serving.log").write_text(f"token {USER_PASSWORD.encode().hex()}\n")
    db = sqlite3.connect(home / "registry.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")  # leave the row in the -wal file only
    db.execute("CREATE TABLE audit (details TEXT)")
    for offset, secret in enumerate((WEBHOOK_SECRET, WEBHOOK_PATH_SECRET, FORGED_TOKEN)):
        db.execute(
            "INSERT INTO audit VALUES (?)", (base64.b64encode(b"x" * offset + secret.encode()).decode(),)
        )
    db.commit()
    assert (home / "registry.db-wal").stat().st_size > 0
    urlsafe = base64.urlsafe_b64encode(b"\x00\xff" + USER_NEW_PASSWORD.encode()).decode()
    run.outputs["stdout of something"] = f"auth={urlsafe}"
    hits, files = search(home, run)
    db.close()
    found = {(h.canary, h.form) for h in hits}
    assert found == {
        ("smtp password", "raw"),
        ("user password", "hex"),
        ("webhook secret", "base64"),
        ("webhook url path", "base64"),
        ("forged api token", "base64"),
        ("user new password", "base64"),
    }
    assert {h.where for h in hits} >= {"logs/worker.log", "logs/serving.log", "stdout of something"}
    assert any(h.where.startswith("registry.db") for h in hits)
    assert files >= 3
