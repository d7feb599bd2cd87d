"""`evolution verify`'s pass over every object the artifact store holds for a tenant.

The other checks of ``verify`` start from the registry's rows and read what those rows name, so stored objects the
rows only imply — a version's stored signed manifest, a drift report's stored body — were never read. This pass
starts from the store's own listing instead:

* every content-addressed object must hash to its name (streamed: never all of it in memory);
* a stored copy of something the registry signed must be that very thing, and its signature must verify: a
  version's stored signed manifest equals the manifest the version records; a stored drift report is byte for byte
  the body its row holds; a reset baseline is named by a signed reset (the current one or one the audit trail says
  was replaced). A manifest or report copy that the training or the scan always stores, and that no
  ``gc.collected`` row accounts for, must be there;
* every named object must be a signed audit checkpoint stored under its own size's (and epoch's) key, or a signed
  restore acknowledgement stored under its own epoch's key;
* an object nothing references — no version's manifest or file, snapshot, drift report, baseline reset, checkpoint
  or ``gc.collected`` row — is an *orphan*: reported on a line of its own, but not a failure. The system itself
  leaves orphans when an operation stops between its store write and its registry commit (a candidate that fails
  validation becomes FAILED without its manifest being recorded; a worker killed between writing a drift report and
  committing its row), and nothing ever reads an object nothing references. An orphan is still worth a look: the
  store is write-once, so it is such a leftover or something written behind the system's back.

While a version is TRAINING (and changed less than GC's ``MIN_AGE`` ago) orphans are not looked for: a training
stores its files before the registry knows them. References are read again after the walk, so an operation that
committed while the store was being walked does not leave a false orphan.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evolution.canonical import canonical_json
from evolution.drift.baselines import read_override, verify_override
from evolution.drift.reports import DriftReportView
from evolution.errors import EvolutionError, IntegrityViolation
from evolution.governance.garbage_collection import gc_history
from evolution.governance.retention import MIN_AGE, SIGNED_MANIFEST, version_artifacts
from evolution.integrity.digest_checks import hash_stream
from evolution.integrity.manifest import SignedManifest, verify_manifest
from evolution.integrity.signing import KeyRing
from evolution.lifecycle import ModelState, VersionView
from evolution.platform.wiring import Services
from evolution.progress import ProgressMeter, metered
from evolution.registry.audit_checkpoints import CHECKPOINT_PREFIX, parse_stored_object
from evolution.security import Principal
from evolution.timeutil import as_utc, utcnow

Expectation = Callable[[bytes], None]
"""What an object's bytes must be beyond hashing to its name; raises an EvolutionError if they are not."""


@dataclass(frozen=True)
class ObjectFinding:
    """One object that failed, or that nothing references; ``name`` is where the store keeps it."""

    name: str
    detail: str


@dataclass
class StoredObjectsReport:
    tenant_id: str
    digests: int = 0
    named: int = 0
    failures: list[ObjectFinding] = field(default_factory=list)
    orphans: list[ObjectFinding] = field(default_factory=list)
    orphans_not_sought: str | None = None

    @property
    def objects(self) -> int:
        return self.digests + self.named


def digest_location(digest: str) -> str:
    """Where both stores keep a digest, below the tenant's directory or bucket."""
    return f"sha256/{digest[:2]}/{digest}"


def object_location(key: str) -> str:
    """Where both stores keep a named object, below the tenant's directory or bucket."""
    return f"objects/{key}"


@dataclass
class _Reference:
    label: str
    expect: Expectation | None = None
    required: bool = False  # a copy the system always stores: its absence is a failure


@dataclass
class _References:
    by_digest: dict[str, list[_Reference]] = field(default_factory=lambda: defaultdict(list))
    collected: set[str] = field(default_factory=set)
    training: list[str] = field(default_factory=list)

    def add(self, digest: str, reference: _Reference) -> None:
        self.by_digest[digest].append(reference)

    def accounts_for(self, digest: str) -> bool:
        return digest in self.by_digest or digest in self.collected


def check_stored_objects(
    services: Services, tenant_id: str, auditor: Principal, *, meter: ProgressMeter | None = None
) -> StoredObjectsReport:
    """Every object the store lists for ``tenant_id``: its content, what references it, and the orphans.

    ``meter``: a task over the content-addressed objects, each read and hashed (the long part on a large store).
    """
    report = StoredObjectsReport(tenant_id=tenant_id)
    references = _read_references(services, tenant_id, auditor)
    store = services.store
    unreferenced: list[tuple[str, str | None]] = []  # (where it is, its digest if content-addressed)
    listed = store.list_digests(tenant_id)
    report.digests = len(listed)
    with metered(meter, f"verify {tenant_id}: stored objects", len(listed)) as advance:
        for digest in listed:
            refs = references.by_digest.get(digest, [])
            problem = _check_digest(services, tenant_id, digest, refs)
            if problem:
                report.failures.append(ObjectFinding(digest_location(digest), problem))
            elif not references.accounts_for(digest):
                unreferenced.append((digest_location(digest), digest))
            advance(1)
    present = set(listed)
    for digest, refs in references.by_digest.items():
        required = [r.label for r in refs if r.required]
        if required and digest not in present and digest not in references.collected:
            report.failures.append(
                ObjectFinding(
                    digest_location(digest),
                    f"{required[0]}: missing from the store, and no gc.collected audit row accounts for it",
                )
            )
    keys = store.list_objects(tenant_id)
    report.named = len(keys)
    for key in keys:
        if not key.startswith(CHECKPOINT_PREFIX + "/"):
            unreferenced.append((object_location(key), None))
            continue
        try:
            parse_stored_object(tenant_id, key, store.get_object(tenant_id, key), services.keyring)
        except EvolutionError as error:
            report.failures.append(ObjectFinding(object_location(key), f"audit checkpoint: {error}"))
    _report_orphans(services, tenant_id, auditor, unreferenced, report)
    return report


def _check_digest(services: Services, tenant_id: str, digest: str, refs: list[_Reference]) -> str | None:
    """None if the object hashes to its name and meets every expectation of what references it; else why not."""
    what = ", ".join(dict.fromkeys(r.label for r in refs)) or "unreferenced object"
    expectations = [r.expect for r in refs if r.expect is not None]
    data = b""
    try:
        with services.store.open(tenant_id, digest) as reader:
            if expectations:  # stored copies of signed records are small: read once, check each expectation
                data = reader.read()
                actual = hashlib.sha256(data).hexdigest()
            else:
                actual, _size = hash_stream(reader.read)
        if actual != digest:
            return f"{what}: corrupted, its content hashes to {actual[:16]}…, not to its name"
        for expect in expectations:
            expect(data)
    except EvolutionError as error:
        return f"{what}: {error}"
    return None


def _report_orphans(
    services: Services,
    tenant_id: str,
    auditor: Principal,
    candidates: list[tuple[str, str | None]],
    report: StoredObjectsReport,
) -> None:
    if not candidates:
        return
    # Read again: whatever committed during the walk now references its objects.
    references = _read_references(services, tenant_id, auditor)
    if references.training:
        report.orphans_not_sought = (
            f"{', '.join(references.training)} TRAINING: a training stores its files before the registry "
            "lists them, so unreferenced objects are not reported until it ends"
        )
        return
    for name, digest in candidates:
        if digest is not None and references.accounts_for(digest):
            continue
        detail = (
            "orphan: no version, snapshot, drift report, baseline, checkpoint or gc.collected row names it"
            if digest is not None
            else "orphan: not an audit checkpoint, the only named object the system writes"
        )
        report.orphans.append(ObjectFinding(name, detail))


# --------------------------------------------------------------------------------------------- references
def _read_references(services: Services, tenant_id: str, auditor: Principal) -> _References:
    references = _References(collected=gc_history(services.factory, tenant_id).digests)
    now = utcnow()
    for version in services.registry.list_versions(auditor, tenant_id):
        label = f"{version.model_name} v{version.number}"
        if version.state == ModelState.TRAINING and now - as_utc(version.updated_at) < MIN_AGE:
            references.training.append(label)
        # A malformed manifest still names its files; the model check reports what is wrong with it.
        artifacts, _problem = version_artifacts(version.manifest)
        for artifact in artifacts:
            if artifact.name == SIGNED_MANIFEST:
                references.add(
                    artifact.digest,
                    _Reference(
                        f"{label} stored signed manifest",
                        _same_manifest(version, services.keyring),
                        required=True,
                    ),
                )
            else:
                references.add(artifact.digest, _Reference(f"{label} file {artifact.name}"))
    for snapshot in services.snapshots.list_snapshots(auditor, tenant_id):
        references.add(snapshot.artifact_digest, _Reference(f"snapshot {snapshot.id}"))
    for drift_report in services.drift_reports.list_reports(auditor, tenant_id, limit=100_000):
        references.add(
            drift_report.report_digest,
            _Reference(
                f"drift report {drift_report.id}", _same_report(drift_report, services.keyring), required=True
            ),
        )
    # One reset is recorded again in the audit row of every later configuration change: check it once.
    seen: set[tuple[str, str, str]] = set()
    for model_name, raw in _baseline_resets(services, tenant_id, auditor):
        digest, at = raw.get("digest"), raw.get("at")
        if isinstance(digest, str) and (model_name, digest, str(at)) not in seen:
            seen.add((model_name, digest, str(at)))
            references.add(
                digest,
                _Reference(
                    f"baseline reset of {model_name}",
                    _signed_reset(tenant_id, model_name, raw, services.keyring),
                ),
            )
    return references


def _baseline_resets(
    services: Services, tenant_id: str, auditor: Principal
) -> list[tuple[str, dict[str, Any]]]:
    """(model, recorded reset) for every baseline reset: the current ones and those the audit trail says were
    replaced (each configuration change is audited with the settings before and after it)."""
    found: list[tuple[str, dict[str, Any]]] = list(
        services.tenants.tenant_settings(auditor, tenant_id).baseline_overrides.items()
    )
    for entry in services.registry.audit_trail(auditor, tenant_id, subject_id=tenant_id):
        if entry.action != "tenant.configured":
            continue
        for side in ("before", "after"):
            recorded = entry.details.get(side)
            overrides = recorded.get("baseline_overrides") if isinstance(recorded, dict) else None
            for model_name, raw in overrides.items() if isinstance(overrides, dict) else ():
                if isinstance(raw, dict):
                    found.append((model_name, raw))
    return found


def _same_manifest(version: VersionView, keyring: KeyRing) -> Expectation:
    def expect(data: bytes) -> None:
        try:
            stored = SignedManifest.model_validate_json(data)
            recorded = SignedManifest.model_validate(version.manifest)
        except ValueError:
            raise IntegrityViolation("the stored copy is not a readable signed manifest") from None
        if stored != recorded:
            raise IntegrityViolation(
                f"differs from the manifest the registry recorded for version {version.id}"
            )
        verify_manifest(stored, keyring)

    return expect


def _same_report(report: DriftReportView, keyring: KeyRing) -> Expectation:
    def expect(data: bytes) -> None:
        if data != canonical_json(report.report):
            raise IntegrityViolation("the stored copy differs from the signed body the report's row holds")
        keyring.verify(data, report.signature)

    return expect


def _signed_reset(tenant_id: str, model_name: str, raw: dict[str, Any], keyring: KeyRing) -> Expectation:
    # The reset's signed statement names the baseline's digest, and the digest names the bytes.
    def expect(_data: bytes) -> None:
        verify_override(tenant_id, model_name, read_override(tenant_id, model_name, raw), keyring)

    return expect
