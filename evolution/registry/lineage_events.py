"""OpenLineage run events for what the registry records: a sealed snapshot, a trained model version, a promotion.

Built with the OpenLineage Python client's own classes (spec 2-0-2) and stored as their JSON in the outbox
(:mod:`evolution.registry.lineage_outbox`), so delivery can happen later, and again, without rebuilding anything.
The graph a lineage server draws from them::

    <tenant>/events ─► job <tenant>.snapshot ─► <tenant>/snapshots/<id> ─► job <tenant>.training.<model>
        ─► <tenant>/models/<model>/v<n> ─► job <tenant>.promotion.<model> ─► <tenant>/models/<model>/champion

Jobs and datasets share one namespace (the installation's; ``EVOLUTION_LINEAGE__NAMESPACE``). Run ids are UUIDs
derived from what the run produced, so an event built twice for the same fact has the same run id. Our own facets
(``evolution_*``, documented in docs/lineage.md) carry what no standard facet does: a snapshot's Merkle root and
the model's digest; their ``_schemaURL`` names a URN, there being no public URL to publish them under.

openlineage-python is imported inside the functions: the registry is built by every CLI command, and only a write
that records an event needs it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from evolution.timeutil import as_utc, iso

if TYPE_CHECKING:
    from evolution.registry.schema import DatasetSnapshot, ModelVersion

DEFAULT_NAMESPACE = "controlled-evolution"
PRODUCER = "urn:controlled-evolution:evolution"
FACET_SCHEMA_PREFIX = "urn:controlled-evolution:lineage:facets:1:"
INTEGRATION = "CONTROLLED_EVOLUTION"
MERKLE_FACET = "evolution_merkleRoot"
MODEL_FACET = "evolution_modelVersion"
PROMOTION_FACET = "evolution_promotion"
_RUN_IDS = uuid.UUID("5f1c9d1e-6a8b-4f0e-9a57-3c2b7d0e4a11")  # the namespace of our uuid5 run ids


def run_id(kind: str, subject: str) -> str:
    """The run id of the ``kind`` run that produced ``subject`` (the same for every emission of that fact)."""
    return str(uuid.uuid5(_RUN_IDS, f"{kind}:{subject}"))


def snapshot_dataset_name(tenant_id: str, snapshot_id: str) -> str:
    return f"{tenant_id}/snapshots/{snapshot_id}"


def model_dataset_name(tenant_id: str, model_name: str, number: int) -> str:
    return f"{tenant_id}/models/{model_name}/v{number}"


def _facet(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A custom facet as the spec wants it: our fields plus ``_producer`` and ``_schemaURL``."""
    present = {key: value for key, value in fields.items() if value is not None}
    return {"_producer": PRODUCER, "_schemaURL": FACET_SCHEMA_PREFIX + name, **present}


def _event(
    *,
    namespace: str,
    job_name: str,
    job_type: str,
    run: str,
    at: datetime,
    inputs: list[tuple[str, dict[str, Any]]],
    outputs: list[tuple[str, dict[str, Any]]],
    run_facets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import job_type_job
    from openlineage.client.serde import Serde

    job_facets = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration=INTEGRATION, jobType=job_type, producer=PRODUCER
        )
    }
    event = RunEvent(
        eventType=RunState.COMPLETE,
        eventTime=iso(as_utc(at)),
        run=Run(runId=run),
        job=Job(namespace=namespace, name=job_name, facets=job_facets),  # type: ignore[arg-type]
        inputs=[InputDataset(namespace=namespace, name=name) for name, _ in inputs],
        outputs=[OutputDataset(namespace=namespace, name=name) for name, _ in outputs],
        producer=PRODUCER,
    )
    document: dict[str, Any] = Serde.to_dict(event)
    # Our facets are plain JSON: the client's facet classes would only add the same two fields.
    for key, datasets in (("inputs", inputs), ("outputs", outputs)):
        for entry, (_, facets) in zip(document[key], datasets, strict=True):
            if facets:
                entry["facets"] = facets
    if run_facets:
        document["run"]["facets"] = run_facets
    return document


def _snapshot_facets(snapshot: DatasetSnapshot) -> dict[str, Any]:
    return {
        MERKLE_FACET: _facet(
            "MerkleRootDatasetFacet",
            {
                "snapshotId": snapshot.id,
                "merkleRoot": snapshot.merkle_root,
                "leafCount": snapshot.leaf_count,
                "rowCount": snapshot.row_count,
                "byteSize": snapshot.byte_size,
                "contentSha256": snapshot.artifact_digest,
                "windowStart": iso(as_utc(snapshot.window_start)),
                "windowEnd": iso(as_utc(snapshot.window_end)),
            },
        )
    }


def _model_facets(version: ModelVersion) -> dict[str, Any]:
    return {
        MODEL_FACET: _facet(
            "ModelVersionDatasetFacet",
            {
                "versionId": version.id,
                "modelName": version.model_name,
                "number": version.number,
                "digest": f"sha256:{version.model_hash}" if version.model_hash else None,
                "datasetSnapshotId": version.dataset_snapshot_id,
            },
        )
    }


def snapshot_sealed_event(namespace: str, snapshot: DatasetSnapshot) -> dict[str, Any]:
    """The seal of ``snapshot``: the tenant's learning events in, the Merkle-hashed snapshot out."""
    return _event(
        namespace=namespace,
        job_name=f"{snapshot.tenant_id}.snapshot",
        job_type="SNAPSHOT",
        run=run_id("snapshot", snapshot.id),
        at=snapshot.created_at,
        inputs=[(f"{snapshot.tenant_id}/events", {})],
        outputs=[(snapshot_dataset_name(snapshot.tenant_id, snapshot.id), _snapshot_facets(snapshot))],
    )


def model_trained_event(
    namespace: str, version: ModelVersion, snapshot: DatasetSnapshot | None, at: datetime
) -> dict[str, Any]:
    """The training of ``version``: its snapshot in (when recorded), the model version and its digest out."""
    inputs = (
        [(snapshot_dataset_name(snapshot.tenant_id, snapshot.id), _snapshot_facets(snapshot))]
        if snapshot is not None
        else []
    )
    return _event(
        namespace=namespace,
        job_name=f"{version.tenant_id}.training.{version.model_name}",
        job_type="TRAINING",
        run=run_id("training", version.id),
        at=at,
        inputs=inputs,
        outputs=[
            (
                model_dataset_name(version.tenant_id, version.model_name, version.number),
                _model_facets(version),
            )
        ],
    )


def model_promoted_event(
    namespace: str, version: ModelVersion, from_state: str, request_id: str, reason: str, at: datetime
) -> dict[str, Any]:
    """``version`` became its model's champion (an approval, or a rollback restoring it)."""
    name = model_dataset_name(version.tenant_id, version.model_name, version.number)
    return _event(
        namespace=namespace,
        job_name=f"{version.tenant_id}.promotion.{version.model_name}",
        job_type="PROMOTION",
        run=run_id("promotion", f"{version.id}:{request_id}"),
        at=at,
        inputs=[(name, _model_facets(version))],
        outputs=[(f"{version.tenant_id}/models/{version.model_name}/champion", _model_facets(version))],
        run_facets={
            PROMOTION_FACET: _facet(
                "PromotionRunFacet",
                {"versionId": version.id, "fromState": from_state, "requestId": request_id, "reason": reason},
            )
        },
    )
