"""Artifact tamper battery: every tampering of a signed model is refused before a byte is deserialised, and a
registered version whose artifact was tampered is never served, goes to QUARANTINED and the audit says why.

The artifact is built the way the trainer builds one (``CandidateBuilder.train``): a really trained model saved to a
directory (``model.json``, ``model.pkl``) plus its drift baseline (``baseline.json``), every file stored in the
content-addressed store, the manifest binding their digests to the dataset root, config and seed, signed with the
local Ed25519 key. It is loaded the way the system loads one: :class:`evolution.training.loader.ModelLoader`.

Part one tries every tamper the issue lists against the loader and counts them: 0 accepted, and the deserialiser
(``load_model``) is never reached. Part two registers tampered candidates in the real registry (SQLite in a temp
dir), puts them in CANARY next to a healthy champion, and sends forecasts through the real :class:`Predictor`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import stat
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

import evolution.training.loader
from evolution.canonical import canonical_json, sha256_hex
from evolution.demo.synthetic import TARGET, generate_rows
from evolution.errors import IntegrityViolation, InvalidInput
from evolution.integrity.artifacts import ArtifactStore, FilesystemArtifactStore
from evolution.integrity.kms_signing import KmsSigner, SigningKeyUnavailable, create_signing_key
from evolution.integrity.manifest import SignedManifest, build_manifest_from_dir, sign_manifest
from evolution.integrity.signing import KeyRing, LocalEd25519Signer, Signature, Signer
from evolution.lifecycle import ModelState, TransitionRequest, VersionChanges, VersionView
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal, Role
from evolution.serving.predictor import PredictInstance
from evolution.stats.drift import build_baseline
from evolution.stats.drift_models import DriftConfig
from evolution.timeutil import utcnow
from evolution.training.candidates import feature_columns
from evolution.training.loader import BASELINE_FILE, ModelLoader
from evolution.training.trainer import TrainingConfig, train
from tests.support.models import install_model
from tests.support.moto_server import FAKE_AWS_ENV, moto_server

TENANT = "acme"
MODEL = "yield"
DATASET_ROOT = "5d" * 32

# ---------------------------------------------------------------- the artifact, built as the trainer builds it


def train_model_dir(directory: Path, seed: int, max_iter: int) -> Path:
    """model.json + model.pkl from a real training run, plus baseline.json: the trainer's three files."""
    rows = generate_rows(600, seed, utcnow())
    for i, row in enumerate(rows):
        row["actual"], row["request_id"] = row.pop(TARGET), f"r{i}"
    features = sorted(k for k in rows[0] if k not in ("actual", "request_id", "event_time", "field_id"))
    config = TrainingConfig(
        features=features,
        categorical=["crop", "soil_texture"],
        target="actual",
        split_keys=["request_id"],
        max_iter=max_iter,
    )
    train(rows, config, seed).save(directory)
    baseline = build_baseline(feature_columns(rows, config.features), config=DriftConfig())
    (directory / BASELINE_FILE).write_text(baseline.model_dump_json())
    (directory / "training_config.json").write_text(json.dumps(config.model_dump(mode="json")))
    return directory


def sign_dir(directory: Path, store: ArtifactStore, signer: Signer, seed: int) -> SignedManifest:
    config = json.loads((directory / "training_config.json").read_text())
    staged = directory.parent / f"{directory.name}-signed"
    staged.mkdir(exist_ok=True)
    for name in ("model.json", "model.pkl", BASELINE_FILE):  # exactly the files the trainer signs
        shutil.copyfile(directory / name, staged / name)
    manifest = build_manifest_from_dir(
        staged,
        tenant=TENANT,
        model_name=MODEL,
        dataset_snapshot_id="ds-battery",
        dataset_merkle_root=DATASET_ROOT,
        training_config=config,
        seed=seed,
        trainer="controlled-evolution/test-battery",
        store=store,
    )
    return sign_manifest(manifest, signer)


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_model_dir(tmp_path_factory.mktemp("candidate") / "model", seed=11, max_iter=25)


@dataclass
class Artifact:
    root: Path
    store: FilesystemArtifactStore
    signer: LocalEd25519Signer
    keyring: KeyRing
    signed: SignedManifest

    @property
    def manifest_json(self) -> dict[str, Any]:
        return self.signed.model_dump(mode="json", by_alias=True)

    def blob(self, digest: str) -> Path:
        return self.root / TENANT / "sha256" / digest[:2] / digest

    def digest_of(self, name: str) -> str:
        return next(f.sha256 for f in self.signed.manifest.files if f.name == name)


@pytest.fixture
def artifact(tmp_path: Path, trained_dir: Path) -> Artifact:
    root = tmp_path / "artifacts"
    store = FilesystemArtifactStore(root)
    signer = LocalEd25519Signer(tmp_path / "keys")
    signed = sign_dir(trained_dir, store, signer, seed=11)
    return Artifact(root, store, signer, KeyRing.of(signer), signed)


# ---------------------------------------------------------------- tampering helpers


@contextlib.contextmanager
def rewritten(path: Path, data: bytes) -> Iterator[None]:
    """The stored (read-only) file holds ``data`` for the duration; restored afterwards."""
    original, mode = path.read_bytes(), stat.S_IMODE(os.lstat(path).st_mode)
    os.chmod(path, 0o644)
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(original)
        os.chmod(path, mode)


@contextlib.contextmanager
def replaced_by_symlink(path: Path, target: Path) -> Iterator[None]:
    """``path`` (a stored file or directory) becomes a symlink to ``target``, outside the store's root."""
    aside = path.with_name(path.name + ".aside")
    path.rename(aside)
    path.symlink_to(target, target_is_directory=target.is_dir())
    try:
        yield
    finally:
        path.unlink()
        aside.rename(path)


@contextlib.contextmanager
def removed(path: Path) -> Iterator[None]:
    aside = path.with_name(path.name + ".aside")
    path.rename(aside)
    try:
        yield
    finally:
        aside.rename(path)


def flip_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit >> 3] ^= 1 << (bit & 7)
    return bytes(out)


def with_files(manifest: dict[str, Any], files: list[dict[str, Any]]) -> dict[str, Any]:
    changed = json.loads(json.dumps(manifest))
    changed["manifest"]["files"] = files
    return changed


def resign(manifest: dict[str, Any], sign: Callable[[bytes], Signature]) -> dict[str, Any]:
    """What an attacker holding some key does: sign the (tampered) manifest body's canonical bytes."""
    out = json.loads(json.dumps(manifest))
    out["signature"] = sign(canonical_json(out["manifest"])).model_dump(mode="json")
    return out


class Deserialisations:
    """Counts calls of the unpickling loader: a tampered artifact must never reach it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = evolution.training.loader.load_model

        def counted(files: Any) -> Any:
            self.calls += 1
            return real(files)

        monkeypatch.setattr(evolution.training.loader, "load_model", counted)


@dataclass
class Battery:
    loader: ModelLoader
    manifest: dict[str, Any]
    model_hash: str
    deserialised: Deserialisations
    tried: Counter[str] = field(default_factory=Counter)
    accepted: list[tuple[str, str]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def attempt(
        self,
        kind: str,
        detail: str,
        manifest: dict[str, Any] | None = None,
        model_hash: str | None = None,
        loader: ModelLoader | None = None,
    ) -> None:
        """Load the artifact as the system does; a success (or any other error) counts as accepted.

        A tampered manifest comes with the model hash recomputed to match it (as an attacker who can write the
        registry would record), so it is the signature, not the recorded hash, that has to catch it.
        """
        self.tried[kind] += 1
        if manifest is not None and model_hash is None:
            try:
                model_hash = SignedManifest.model_validate(manifest).digest
            except ValueError:
                model_hash = self.model_hash
        before = self.deserialised.calls
        try:
            (loader or self.loader).load_manifest(
                TENANT, manifest or self.manifest, model_hash or self.model_hash, "mv-battery", 1
            )
        except IntegrityViolation as error:
            self.reasons.setdefault(kind, str(error))
        except Exception as error:
            self.accepted.append((kind, f"{detail}: {type(error).__name__}: {error}"))
            return
        else:
            self.accepted.append((kind, detail))
        if self.deserialised.calls != before:
            self.accepted.append((kind, f"{detail}: deserialised before refusing"))


@pytest.fixture
def battery(artifact: Artifact, monkeypatch: pytest.MonkeyPatch) -> Battery:
    loader = ModelLoader(artifact.store, artifact.keyring)
    counter = Deserialisations(monkeypatch)
    loaded = loader.load_manifest(TENANT, artifact.manifest_json, artifact.signed.digest, "mv-battery", 1)
    assert loaded.model_hash == artifact.signed.digest and counter.calls == 1  # the intact artifact loads
    counter.calls = 0
    return Battery(loader, artifact.manifest_json, artifact.signed.digest, counter)


# ---------------------------------------------------------------- part one: every tamper against the loader


def test_the_artifact_is_what_the_trainer_signs(artifact: Artifact) -> None:
    names = [f.name for f in artifact.signed.manifest.files]
    assert names == [BASELINE_FILE, "model.json", "model.pkl"]
    assert artifact.signed.manifest.dataset_merkle_root == DATASET_ROOT
    assert all(artifact.blob(f.sha256).stat().st_size == f.size > 0 for f in artifact.signed.manifest.files)


def test_a_byte_flip_at_the_start_middle_and_end_of_each_file_is_refused(
    artifact: Artifact, battery: Battery
) -> None:
    for entry in artifact.signed.manifest.files:
        path = artifact.blob(entry.sha256)
        data = path.read_bytes()
        for where, offset in (("start", 0), ("middle", len(data) // 2), ("end", len(data) - 1)):
            for bit in (0, 7):
                with rewritten(path, flip_bit(data, offset * 8 + bit)):
                    battery.attempt("byte flip in a file", f"{entry.name} {where} bit {bit}")
        with rewritten(path, data[:-1]):
            battery.attempt("file truncated", entry.name)
        with rewritten(path, data + b"\n"):
            battery.attempt("file extended", entry.name)
    assert battery.accepted == []
    assert battery.tried["byte flip in a file"] == 3 * 3 * 2
    assert (
        "does not match" in battery.reasons["byte flip in a file"]
        or "corrupted" in battery.reasons["byte flip in a file"]
    )


def test_added_deleted_renamed_and_swapped_files_are_refused(artifact: Artifact, battery: Battery) -> None:
    files = artifact.manifest_json["manifest"]["files"]
    extra_digest = artifact.store.put_bytes(TENANT, b"import os  # an extra file slipped in")
    extra = {"name": "extra.py", "sha256": extra_digest, "size": 36}
    battery.attempt("file added to the manifest", "extra.py", with_files(battery.manifest, [*files, extra]))
    added = with_files(battery.manifest, [*files, extra])
    battery.attempt(
        "file added to the manifest",
        "extra.py, hash recorded to match",
        added,
        sha256_hex(canonical_json(added["manifest"])),
    )
    for i, entry in enumerate(files):
        battery.attempt(
            "file deleted from the manifest",
            entry["name"],
            with_files(battery.manifest, files[:i] + files[i + 1 :]),
        )
        with removed(artifact.blob(entry["sha256"])):
            battery.attempt("file deleted from the store", entry["name"])
        renamed = [dict(f, name="renamed-" + f["name"]) if f is entry else f for f in files]
        battery.attempt("file renamed", entry["name"], with_files(battery.manifest, renamed))
    for i in range(len(files)):
        for j in range(i + 1, len(files)):
            a, b = files[i], files[j]
            swapped_entries = [
                dict(f, sha256=b["sha256"], size=b["size"])
                if f is a
                else dict(f, sha256=a["sha256"], size=a["size"])
                if f is b
                else f
                for f in files
            ]
            battery.attempt(
                "two files swapped in the manifest",
                f"{a['name']}<->{b['name']}",
                with_files(battery.manifest, swapped_entries),
            )
            pa, pb = artifact.blob(a["sha256"]), artifact.blob(b["sha256"])
            da, db = pa.read_bytes(), pb.read_bytes()
            with rewritten(pa, db), rewritten(pb, da):
                battery.attempt("two files' contents swapped in the store", f"{a['name']}<->{b['name']}")
    # An object merely added to the store is not part of the artifact: the load returns exactly the signed files.
    loaded = battery.loader.load_manifest(TENANT, battery.manifest, battery.model_hash, "mv-battery", 1)
    assert loaded.model_hash == battery.model_hash
    assert battery.accepted == []
    assert battery.tried["file deleted from the store"] == battery.tried["file renamed"] == 3
    assert battery.tried["two files' contents swapped in the store"] == 3


def test_symlinks_out_of_the_store_root_are_refused(
    artifact: Artifact, battery: Battery, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    for entry in artifact.signed.manifest.files:
        path = artifact.blob(entry.sha256)
        copy = outside / entry.sha256
        copy.write_bytes(path.read_bytes())  # identical bytes: only the link itself is wrong
        with replaced_by_symlink(path, copy):
            battery.attempt("stored file is a symlink out of the root", entry.name)
        shard_copy = outside / f"shard-{entry.sha256[:2]}"
        shutil.copytree(path.parent, shard_copy, dirs_exist_ok=True)
        with replaced_by_symlink(path.parent, shard_copy):
            battery.attempt("store directory is a symlink out of the root", entry.name)
    tenant_copy = outside / "tenant"
    shutil.copytree(artifact.root / TENANT, tenant_copy, symlinks=True)
    with replaced_by_symlink(artifact.root / TENANT, tenant_copy):
        battery.attempt("store directory is a symlink out of the root", "the tenant's directory")
    assert battery.accepted == []
    assert battery.tried["stored file is a symlink out of the root"] == 3


def test_a_model_directory_with_a_symlink_out_of_it_cannot_be_signed(
    tmp_path: Path, trained_dir: Path
) -> None:
    directory = tmp_path / "model"
    shutil.copytree(trained_dir, directory)
    secret = tmp_path / "outside.txt"
    secret.write_text("not part of any model")
    (directory / "link.txt").symlink_to(secret)
    store = FilesystemArtifactStore(tmp_path / "artifacts")
    with pytest.raises(InvalidInput, match="symlink"):
        build_manifest_from_dir(
            directory,
            tenant=TENANT,
            model_name=MODEL,
            dataset_snapshot_id="ds",
            dataset_merkle_root=DATASET_ROOT,
            training_config={},
            seed=1,
            trainer="t",
            store=store,
        )
    assert store.list_digests(TENANT) == []  # nothing of it was stored


@pytest.mark.parametrize(
    "name",
    ["../model.pkl", "a/../../model.pkl", "..", "/etc/passwd", "model/./model.pkl", "a\\..\\b", "a//b"],
)
def test_a_dot_dot_or_absolute_path_in_the_manifest_is_refused_even_when_signed_by_the_trusted_key(
    artifact: Artifact, battery: Battery, name: str
) -> None:
    files = artifact.manifest_json["manifest"]["files"]
    bad = with_files(battery.manifest, [dict(files[0], name=name), *files[1:]])
    battery.attempt("'..' or absolute path, trusted signature", name, resign(bad, artifact.signer.sign))
    battery.attempt("'..' or absolute path, original signature", name, bad)
    assert battery.accepted == []
    assert "malformed" in battery.reasons["'..' or absolute path, trusted signature"]


def test_every_flipped_bit_of_the_signature_is_refused(artifact: Artifact, battery: Battery) -> None:
    raw = base64.b64decode(artifact.signed.signature.value)
    assert len(raw) == 64
    for bit in range(len(raw) * 8):
        bad = json.loads(json.dumps(battery.manifest))
        bad["signature"]["value"] = base64.b64encode(flip_bit(raw, bit)).decode()
        battery.attempt("flipped bit in the signature", str(bit), bad)
    assert battery.accepted == []
    assert battery.tried["flipped bit in the signature"] == 512
    assert "does not verify" in battery.reasons["flipped bit in the signature"]


def test_every_flipped_bit_of_the_signature_text_is_refused_unless_it_decodes_to_the_same_signature(
    artifact: Artifact, battery: Battery
) -> None:
    """Flips in the base64 text: each either breaks the signature or does not change its decoded bytes."""
    text = artifact.signed.signature.value.encode()
    raw = base64.b64decode(text)
    same_bytes = 0
    for bit in range(len(text) * 8):
        flipped = flip_bit(text, bit)
        try:
            decoded: bytes | None = base64.b64decode(flipped, validate=True)
        except ValueError:
            decoded = None
        if decoded == raw:  # a non-canonical spelling of the very same signature (padding bits)
            same_bytes += 1
            continue
        bad = json.loads(json.dumps(battery.manifest))
        bad["signature"]["value"] = flipped.decode("latin-1")
        battery.attempt("flipped bit in the signature text", str(bit), bad)
    assert battery.accepted == []
    assert battery.tried["flipped bit in the signature text"] + same_bytes == len(text) * 8
    assert same_bytes <= 8  # only the unused low bits of the last base64 digit


def test_every_flipped_bit_of_the_signed_payload_is_refused(artifact: Artifact, battery: Battery) -> None:
    """Each bit of the canonical manifest bytes (what is signed and hashed), flipped and parsed back."""
    payload = artifact.signed.manifest.canonical()
    unchanged = 0
    for bit in range(len(payload) * 8):
        try:
            body = json.loads(flip_bit(payload, bit))
        except ValueError:  # no longer JSON (or UTF-8): it would not even be read; counted as refused
            battery.tried["flipped bit in the payload"] += 1
            continue
        if not isinstance(body, dict):
            battery.tried["flipped bit in the payload"] += 1
            continue
        try:
            if canonical_json(body) == payload:
                unchanged += 1  # e.g. an exponent's 'e' became 'E': the same document
                continue
        except InvalidInput:
            pass
        tampered = {"manifest": body, "signature": battery.manifest["signature"]}
        battery.attempt("flipped bit in the payload", str(bit), tampered, sha256_hex(flip_bit(payload, bit)))
    assert battery.accepted == []
    assert battery.tried["flipped bit in the payload"] + unchanged == len(payload) * 8
    assert unchanged < 20


def test_the_wrong_key_is_refused(artifact: Artifact, battery: Battery, tmp_path: Path) -> None:
    attacker = LocalEd25519Signer(tmp_path / "attacker-keys")
    other = LocalEd25519Signer(tmp_path / "other-keys")
    body = artifact.manifest_json
    battery.attempt(
        "signed by an untrusted key", "attacker re-signs the intact manifest", resign(body, attacker.sign)
    )
    files = body["manifest"]["files"]
    evil = with_files(body, [*files, {"name": "evil.py", "sha256": "e" * 64, "size": 1}])
    battery.attempt("signed by an untrusted key", "attacker signs an added file", resign(evil, attacker.sign))

    def under_trusted_id(payload: bytes) -> Signature:
        return attacker.sign(payload).model_copy(update={"key_id": artifact.signer.key_id})

    battery.attempt(
        "untrusted signature claiming the trusted key id", "intact", resign(body, under_trusted_id)
    )
    battery.attempt(
        "verified with the wrong key",
        "loader trusts another key only",
        loader=ModelLoader(artifact.store, KeyRing.of(other)),
    )
    battery.attempt(
        "verified with the wrong key", "loader trusts no key", loader=ModelLoader(artifact.store, KeyRing())
    )
    revoked = KeyRing.of(other)  # the key was retired: the ring the loader trusts no longer holds it
    battery.attempt(
        "signing key revoked",
        "key removed from the trusted ring",
        loader=ModelLoader(artifact.store, revoked),
    )
    assert battery.accepted == []
    assert "not a trusted key" in battery.reasons["signed by an untrusted key"]


def test_a_manifest_for_another_tenant_or_another_model_hash_is_refused(
    artifact: Artifact, battery: Battery
) -> None:
    body = artifact.manifest_json
    other = json.loads(json.dumps(body))
    other["manifest"]["tenant"] = "globex"
    battery.attempt(
        "another tenant's manifest", "re-signed by the trusted key", resign(other, artifact.signer.sign)
    )
    battery.attempt("recorded model hash differs", "hash of another model", body, "0" * 64)
    assert battery.accepted == []


def test_a_disabled_kms_key_signs_nothing_and_a_retired_one_verifies_nothing(
    artifact: Artifact, battery: Battery
) -> None:
    """The production signer (AWS KMS, moto's server over HTTP): once its key is disabled, no manifest (tampered or
    not) can be signed with it; what it signed before verifies only while its public key is in the trusted ring.
    (Real KMS also refuses Sign on a disabled key, DisabledException; moto does not, so the signer's own key-state
    check is what is exercised here.)"""
    with moto_server() as endpoint:
        client = boto3.client(
            "kms",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        arn = create_signing_key(client, f"alias/evolution-battery-{uuid.uuid4().hex[:12]}")
        signer = KmsSigner(client, arn, digest_signing=False)  # moto hashes a DIGEST message again
        by_kms = resign(artifact.manifest_json, signer.sign)
        kms_loader = ModelLoader(artifact.store, KeyRing.of(signer))
        kms_loader.load_manifest(TENANT, by_kms, SignedManifest.model_validate(by_kms).digest, "mv-kms", 1)

        client.disable_key(KeyId=arn.rsplit("/", 1)[1])
        files = by_kms["manifest"]["files"]
        tampered = with_files(by_kms, [*files, {"name": "extra.py", "sha256": "e" * 64, "size": 1}])
        with pytest.raises(SigningKeyUnavailable, match="isabled"):
            resign(tampered, signer.sign)
        battery.attempt(
            "disabled key", "tampered, with the signature made before", tampered, loader=kms_loader
        )
        battery.attempt(
            "disabled key",
            "its key retired from the ring",
            by_kms,
            loader=ModelLoader(artifact.store, KeyRing()),
        )
    assert battery.accepted == []
    assert battery.tried["disabled key"] == 2


# ---------------------------------------------------------------- part two: the registry, the loader, serving


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=tmp_path / "home"))
    svc.tenants.ensure_tenant(Principal.for_tenant("root", Role.ADMIN, TENANT), TENANT)
    yield svc
    svc.close()


def forecast_requests(n: int) -> list[PredictInstance]:
    rows = generate_rows(n, 5, utcnow())
    return [
        PredictInstance(
            request_id=f"q-{i}",
            features={k: v for k, v in r.items() if k not in ("event_time", TARGET)},
        )
        for i, r in enumerate(rows)
    ]


def install_candidate(services: Services, manifest: dict[str, Any], model_hash: str) -> VersionView:
    """Registered and walked to CANARY the way the workflow does, recording (possibly tampered) facts."""
    system = Principal.system(TENANT)
    version = services.registry.register_version(system, TENANT, MODEL, uuid.uuid4().hex)
    for step in (ModelState.TRAINING, ModelState.VALIDATED, ModelState.SHADOW, ModelState.CANARY):
        changes = (
            VersionChanges(model_hash=model_hash, manifest=manifest) if step == ModelState.VALIDATED else None
        )
        version = services.registry.transition(
            system,
            TransitionRequest(
                version_id=version.id,
                to_state=step,
                expected_version=version.lock_version,
                request_id=uuid.uuid4().hex,
                changes=changes,
            ),
        ).version
    return version


@dataclass
class ServedTamper:
    kind: str
    reason: str  # what the audit row's reason must name
    manifest: Callable[[dict[str, Any], Services], dict[str, Any]] = lambda m, _s: m
    store: Callable[[dict[str, Any], Services], contextlib.AbstractContextManager[None]] = lambda _m, _s: (
        contextlib.nullcontext()
    )


def _blob(services: Services, manifest: dict[str, Any], name: str) -> Path:
    digest = next(f["sha256"] for f in manifest["manifest"]["files"] if f["name"] == name)
    return services.settings.artifacts_dir / TENANT / "sha256" / digest[:2] / digest


def _flip_file(name: str) -> Callable[[dict[str, Any], Services], contextlib.AbstractContextManager[None]]:
    def tamper(manifest: dict[str, Any], services: Services) -> contextlib.AbstractContextManager[None]:
        path = _blob(services, manifest, name)
        return rewritten(path, flip_bit(path.read_bytes(), 8 * (path.stat().st_size // 2)))

    return tamper


@contextlib.contextmanager
def _swap_contents(manifest: dict[str, Any], services: Services) -> Iterator[None]:
    a, b = _blob(services, manifest, "model.json"), _blob(services, manifest, "model.pkl")
    da, db = a.read_bytes(), b.read_bytes()
    with rewritten(a, db), rewritten(b, da):
        yield


def _symlink_out(manifest: dict[str, Any], services: Services) -> contextlib.AbstractContextManager[None]:
    path = _blob(services, manifest, "model.pkl")
    outside = services.settings.home.parent / "outside-model.pkl"
    outside.write_bytes(path.read_bytes())
    return replaced_by_symlink(path, outside)


def _edit_files(
    edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
) -> Callable[..., dict[str, Any]]:
    return lambda manifest, _services: with_files(manifest, edit(manifest["manifest"]["files"]))


def _flip_signature(manifest: dict[str, Any], _services: Services) -> dict[str, Any]:
    out = json.loads(json.dumps(manifest))
    out["signature"]["value"] = base64.b64encode(
        flip_bit(base64.b64decode(out["signature"]["value"]), 77)
    ).decode()
    return out


def _payload_seed(manifest: dict[str, Any], _services: Services) -> dict[str, Any]:
    out = json.loads(json.dumps(manifest))
    out["manifest"]["seed"] += 1
    return out


def _attacker_signed(manifest: dict[str, Any], services: Services) -> dict[str, Any]:
    attacker = LocalEd25519Signer(services.settings.home.parent / "attacker-keys")
    return resign(manifest, attacker.sign)


def _dot_dot(manifest: dict[str, Any], services: Services) -> dict[str, Any]:
    files = manifest["manifest"]["files"]
    return resign(
        with_files(manifest, [dict(files[0], name="../../" + files[0]["name"]), *files[1:]]),
        services.signer.sign,
    )


SERVED_TAMPERS = [
    ServedTamper("byte flip in model.pkl", "model.pkl", store=_flip_file("model.pkl")),
    ServedTamper("byte flip in baseline.json", BASELINE_FILE, store=_flip_file(BASELINE_FILE)),
    ServedTamper("model.json and model.pkl contents swapped", "model.json", store=_swap_contents),
    ServedTamper("stored file is a symlink out of the root", "cannot be opened safely", store=_symlink_out),
    ServedTamper(
        "file deleted from the store",
        "cannot be read from the store",
        store=lambda m, s: removed(_blob(s, m, "model.json")),
    ),
    ServedTamper(
        "file added",
        "does not verify",
        manifest=_edit_files(lambda files: [*files, dict(files[0], name="extra.bin")]),
    ),
    ServedTamper(
        "file deleted from the manifest", "does not verify", manifest=_edit_files(lambda files: files[1:])
    ),
    ServedTamper(
        "file renamed",
        "does not verify",
        manifest=_edit_files(lambda files: [dict(files[0], name="renamed.json"), *files[1:]]),
    ),
    ServedTamper("'..' path, signed by the trusted key", "'..'", manifest=_dot_dot),
    ServedTamper("flipped bit in the signature", "does not verify", manifest=_flip_signature),
    ServedTamper("payload changed (seed)", "does not verify", manifest=_payload_seed),
    ServedTamper("signed by an untrusted key", "not a trusted key", manifest=_attacker_signed),
]


@pytest.fixture(scope="module")
def candidate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_model_dir(tmp_path_factory.mktemp("served-candidate") / "model", seed=23, max_iter=20)


def test_a_tampered_candidate_is_never_served_and_is_quarantined_with_the_failure_named_while_the_champion_serves(
    services: Services, tmp_path: Path, candidate_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = Principal.system(TENANT)
    champion = install_model(services, TENANT, tmp_path, ModelState.CHAMPION, seed=3)
    predictor = services.predictor(canary_share=0.5, refresh_s=0.0)
    requests = forecast_requests(40)
    assert {p.served_by for p in predictor.predict(system, TENANT, MODEL, requests)} == {champion.id}
    signed = sign_dir(candidate_dir, services.store, services.signer, seed=23)
    good = signed.model_dump(mode="json", by_alias=True)
    champion_digests = {f["sha256"] for f in champion.manifest["manifest"]["files"]}  # type: ignore[index]
    assert champion_digests.isdisjoint(
        f.sha256 for f in signed.manifest.files
    )  # tampering one leaves the other

    deserialised = Deserialisations(
        monkeypatch
    )  # the champion is cached: from here on, nothing may be unpickled
    served_by_candidate = 0
    for tamper in SERVED_TAMPERS:
        manifest = tamper.manifest(good, services)
        try:
            model_hash = SignedManifest.model_validate(manifest).digest
        except ValueError:  # a manifest that does not even parse: the attacker keeps the old hash
            model_hash = signed.digest
        candidate = install_candidate(services, manifest, model_hash)
        with tamper.store(good, services):
            outs = predictor.predict(system, TENANT, MODEL, requests)
        served_by_candidate += sum(o.served_by == candidate.id for o in outs)
        assert {o.served_by for o in outs} == {champion.id}, tamper.kind
        assert {o.role for o in outs} == {"champion"}, tamper.kind
        after = services.registry.get_version(system, candidate.id)
        assert after.state == ModelState.QUARANTINED, tamper.kind
        last = services.registry.audit_trail(system, TENANT, subject_id=candidate.id)[-1]
        assert (last.from_state, last.to_state) == ("CANARY", "QUARANTINED"), tamper.kind
        assert last.actor == "system:serving"
        assert "integrity check failed at load" in last.details["reason"], tamper.kind
        assert tamper.reason in last.details["reason"], (tamper.kind, last.details["reason"])
        assert last.details["integrity_failure"] == last.details["reason"]
    assert served_by_candidate == 0 and deserialised.calls == 0
    assert services.registry.get_version(system, champion.id).state == ModelState.CHAMPION
    assert services.registry.verify_audit(system, TENANT).ok

    # The same signed artifact, untampered, is served: the refusals above were the tampering, not the model.
    healthy = install_candidate(services, good, signed.digest)
    outs = predictor.predict(system, TENANT, MODEL, requests)
    assert any(o.served_by == healthy.id for o in outs) and deserialised.calls == 1


def test_a_tampered_candidate_is_refused_at_validation_before_anything_is_deserialised(
    services: Services, candidate_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validation step (``CandidateBuilder.validate``) loads the candidate through the same loader."""
    signed = sign_dir(candidate_dir, services.store, services.signer, seed=23)
    good = signed.model_dump(mode="json", by_alias=True)
    deserialised = Deserialisations(monkeypatch)
    for tamper in SERVED_TAMPERS:
        with tamper.store(good, services), pytest.raises(IntegrityViolation) as refused:
            services.loader.load_manifest(TENANT, tamper.manifest(good, services), None, "mv-candidate", 1)
        assert tamper.reason in str(refused.value), tamper.kind
    assert deserialised.calls == 0
