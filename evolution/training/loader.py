"""Loading a model version for use: the signed manifest is verified, then every file, and only then deserialised.

Either format (:mod:`evolution.training.formats`): the verified files say which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evolution.errors import IntegrityViolation
from evolution.integrity.artifacts import ArtifactStore
from evolution.integrity.manifest import SignedManifest, verify_model_files
from evolution.integrity.signing import KeyRing
from evolution.lifecycle import VersionView
from evolution.stats.drift_models import Baseline
from evolution.training.formats import ServedModel, model_card

# The one deserialiser, for either format, under the name the tamper battery watches (it counts the calls that reach
# it: none may for a tampered artifact).
from evolution.training.formats import load_served_model as load_model

BASELINE_FILE = "baseline.json"


@dataclass(frozen=True)
class LoadedModel:
    version_id: str
    number: int
    model_hash: str
    model: ServedModel
    baseline: Baseline | None
    card: dict[str, Any]


class ModelLoader:
    def __init__(self, store: ArtifactStore, keyring: KeyRing) -> None:
        self._store = store
        self._keyring = keyring

    def load(self, version: VersionView) -> LoadedModel:
        """Raises IntegrityViolation before any byte is deserialised if anything does not verify."""
        if not version.manifest:
            raise IntegrityViolation(f"model version {version.id} has no signed manifest")
        return self.load_manifest(
            version.tenant_id, version.manifest, version.model_hash, version.id, version.number
        )

    def verify(self, version: VersionView) -> None:
        """Signature and every file digest, without deserialising anything."""
        if not version.manifest:
            raise IntegrityViolation(f"model version {version.id} has no signed manifest")
        signed = self._signed(version.manifest, version.model_hash, version.id)
        verify_model_files(signed, self._store, version.tenant_id, self._keyring)

    @staticmethod
    def _signed(manifest: dict[str, Any], expected_hash: str | None, version_id: str) -> SignedManifest:
        try:
            signed = SignedManifest.model_validate(manifest)
        except ValueError as error:
            raise IntegrityViolation(
                f"model version {version_id}: the signed manifest is malformed: {error}"
            ) from None
        if expected_hash and signed.digest != expected_hash:
            raise IntegrityViolation(
                f"model version {version_id}: manifest digest differs from the recorded model hash"
            )
        return signed

    def load_manifest(
        self,
        tenant_id: str,
        manifest: dict[str, Any],
        expected_hash: str | None,
        version_id: str,
        number: int,
    ) -> LoadedModel:
        signed = self._signed(manifest, expected_hash, version_id)
        files = verify_model_files(signed, self._store, tenant_id, self._keyring)
        model = load_model({name: data for name, data in files.items() if name != BASELINE_FILE})
        baseline = Baseline.model_validate_json(files[BASELINE_FILE]) if BASELINE_FILE in files else None
        card = model_card(files)
        return LoadedModel(
            version_id=version_id,
            number=number,
            model_hash=signed.digest,
            model=model,
            baseline=baseline,
            card=card,
        )
