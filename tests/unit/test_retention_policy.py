"""The retention policy, pure: which versions keep their artifacts, which artifacts a collection deletes, and why."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evolution.errors import InvalidInput
from evolution.governance.retention import (
    KEEP_LAST,
    MIN_AGE,
    SIGNED_MANIFEST,
    Artifact,
    RetentionFacts,
    RetentionPlan,
    VersionFacts,
    collectable_digests,
    plan_retention,
    version_artifacts,
)
from evolution.integrity.manifest import FileEntry, ModelManifest, sign_manifest
from evolution.integrity.signing import LocalEd25519Signer
from evolution.lifecycle import ModelState

S = ModelState
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
OLD = 30.0  # days


def digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def version(
    number: int,
    state: ModelState = S.FAILED,
    age_days: float = OLD,
    *,
    model: str = "yield",
    files: tuple[str, ...] | None = None,
    was_champion: bool = False,
    size: int = 100,
) -> VersionFacts:
    names = files if files is not None else (f"{model}-{number}-model", f"{model}-{number}-card")
    at = NOW - timedelta(days=age_days)
    return VersionFacts(
        id=f"mv-{model}-{number}",
        model_name=model,
        number=number,
        state=state,
        created_at=at - timedelta(days=1),
        updated_at=at,
        was_champion=was_champion,
        artifacts=[Artifact(digest=digest(n), bytes=size, name=n) for n in names],
    )


def facts(
    *versions: VersionFacts, referenced: dict[str, str] | None = None, collected: set[str] | None = None
) -> RetentionFacts:
    return RetentionFacts(
        tenant_id="acme", versions=list(versions), referenced=referenced or {}, collected=collected or set()
    )


def plan_of(f: RetentionFacts, present: set[str] | None = None, **kwargs: object) -> RetentionPlan:
    if present is None:  # everything the candidates name is in the store
        present = collectable_digests(f, as_of=NOW, **kwargs)  # type: ignore[arg-type]
    return plan_retention(f, as_of=NOW, present=present, **kwargs)  # type: ignore[arg-type]


def collected_numbers(plan: RetentionPlan) -> list[int]:
    return sorted({e.number for e in plan.entries})


def decision(plan: RetentionPlan, number: int, model: str = "yield") -> tuple[str, list[str]]:
    found = next(v for v in plan.versions if v.number == number and v.model_name == model)
    return found.decision, found.reasons


def test_the_constants_are_the_issues_numbers() -> None:
    assert KEEP_LAST == 5
    assert timedelta(days=7) == MIN_AGE


def test_the_last_five_versions_are_kept_and_the_older_failed_ones_collected() -> None:
    plan = plan_of(facts(*(version(n) for n in range(1, 9))))
    assert collected_numbers(plan) == [1, 2, 3]
    for n in range(4, 9):
        kept, reasons = decision(plan, n)
        assert kept == "keep" and reasons == ["one of the last 5 versions"]
    assert plan.totals.versions_collected == 3 and plan.totals.versions_kept == 5
    assert plan.totals.artifacts_deleted == 6 and plan.totals.bytes_deleted == 600
    assert plan.totals.bytes_kept == 1000


def test_keep_last_counts_per_model() -> None:
    versions = [version(n, model="yield") for n in range(1, 7)] + [
        version(n, model="ndvi") for n in range(1, 4)
    ]
    plan = plan_of(facts(*versions))
    assert [(e.model_name, e.number) for e in plan.entries][::2] == [("yield", 1)]


def test_a_former_champion_is_kept_even_when_failed_and_old() -> None:
    # CHAMPION -> QUARANTINED -> FAILED is a legal path: the flag (or the audit trail) keeps it.
    plan = plan_of(facts(version(1, S.FAILED, was_champion=True), *(version(n) for n in range(2, 8))))
    assert decision(plan, 1) == ("keep", ["was CHAMPION"])
    assert collected_numbers(plan) == [2]


@pytest.mark.parametrize(
    "state",
    [S.TRAINING, S.VALIDATED, S.SHADOW, S.CANARY, S.CHAMPION, S.DEPRECATED, S.QUARANTINED],
)
def test_every_state_but_draft_and_failed_is_kept_whatever_its_age_and_number(state: ModelState) -> None:
    plan = plan_of(facts(version(1, state, age_days=400), *(version(n) for n in range(2, 8))))
    kept, reasons = decision(plan, 1)
    assert kept == "keep" and str(state) in reasons[0]
    assert 1 not in collected_numbers(plan)


def test_draft_and_failed_are_collected_only_from_seven_days_on() -> None:
    young = [version(1, S.FAILED, age_days=6.99), version(2, S.DRAFT, age_days=6.5)]
    due = [version(3, S.FAILED, age_days=7.0), version(4, S.DRAFT, age_days=8)]
    plan = plan_of(facts(*young, *due), keep_last=1)
    assert collected_numbers(plan) == [3]  # v4 is the last version: kept as such
    assert decision(plan, 1)[0] == "keep" and "days ago (< 7)" in decision(plan, 1)[1][0]
    assert decision(plan, 2)[0] == "keep"


def test_age_counts_from_the_last_change_not_from_creation() -> None:
    # Created 40 days ago, failed yesterday: its artifacts stay for another 6 days.
    v = version(1, S.FAILED, age_days=1).model_copy(update={"created_at": NOW - timedelta(days=40)})
    plan = plan_of(facts(v, *(version(n) for n in range(2, 8))))
    assert decision(plan, 1)[0] == "keep"


def test_a_digest_shared_with_a_kept_version_is_spared() -> None:
    shared = ("common-weights", "v1-card")
    kept = version(9, S.CHAMPION, files=("common-weights", "v9-card"))
    plan = plan_of(facts(version(1, files=shared), *(version(n) for n in range(2, 9)), kept))
    assert [e.name for e in plan.entries if e.number == 1] == ["v1-card"]
    assert [(s.name, s.reason) for s in plan.spared] == [
        ("common-weights", "shared with yield v9 (CHAMPION, kept)")
    ]
    assert plan.totals.artifacts_spared == 1 and plan.totals.bytes_spared == 100
    assert digest("common-weights") not in {e.digest for e in plan.entries}


def test_a_digest_of_another_models_version_is_spared_when_only_one_model_runs() -> None:
    other = version(1, S.FAILED, model="ndvi", files=("same-bytes",))
    mine = version(1, S.FAILED, model="yield", files=("same-bytes", "own"))
    plan = plan_of(facts(mine, other, *(version(n) for n in range(2, 7))), model_name="yield")
    assert [e.name for e in plan.entries if e.number == 1] == ["own"]
    assert plan.spared[0].reason == "shared with ndvi v1 (FAILED, its model is not part of this run)"
    assert all(v.model_name == "yield" for v in plan.versions)


def test_snapshots_drift_reports_and_baselines_are_never_collected() -> None:
    files = ("snap", "report", "baseline", "plain")
    referenced = {
        digest("snap"): "dataset snapshot ds-1",
        digest("report"): "drift report dr-1",
        digest("baseline"): "the reset baseline of yield",
    }
    plan = plan_of(facts(version(1, files=files), *(version(n) for n in range(2, 7)), referenced=referenced))
    assert [e.name for e in plan.entries] == ["plain"]
    assert sorted(s.reason for s in plan.spared) == sorted(f"referenced by {r}" for r in referenced.values())


def test_two_candidates_sharing_a_digest_delete_it_once() -> None:
    plan = plan_of(
        facts(version(1, files=("a", "b")), version(2, files=("b", "c")), *(version(n) for n in range(3, 8)))
    )
    assert [(e.number, e.name) for e in plan.entries] == [(1, "a"), (1, "b"), (2, "c")]
    assert plan.totals.bytes_deleted == 300
    assert "shared with another version collected in this run" in " ".join(decision(plan, 2)[1])


def test_a_second_plan_after_collection_deletes_nothing() -> None:
    f = facts(*(version(n) for n in range(1, 8)))
    first = plan_of(f)
    assert collected_numbers(first) == [1, 2]
    after = f.model_copy(update={"collected": {e.digest for e in first.entries}})
    second = plan_retention(after, as_of=NOW, present=set())  # the store no longer holds them
    assert second.entries == [] and second.totals.bytes_deleted == 0
    assert decision(second, 1) == (
        "skip",
        [f"{n}: already collected" for n in ("yield-1-model", "yield-1-card")],
    )


def test_an_artifact_missing_without_gc_is_reported_not_collected() -> None:
    f = facts(*(version(n) for n in range(1, 7)))
    present = collectable_digests(f, as_of=NOW) - {digest("yield-1-model")}
    plan = plan_retention(f, as_of=NOW, present=present)
    assert [e.name for e in plan.entries] == ["yield-1-card"]
    assert any("missing, and not collected by GC" in r for r in decision(plan, 1)[1])


def test_a_version_without_recorded_artifacts_is_skipped() -> None:
    plan = plan_of(facts(version(1, S.DRAFT, files=()), *(version(n) for n in range(2, 7))))
    assert decision(plan, 1) == ("skip", ["no recorded artifacts"])


def test_a_training_in_progress_defers_the_whole_collection() -> None:
    versions = [*(version(n) for n in range(1, 7)), version(7, S.TRAINING, age_days=0.1, files=())]
    plan = plan_of(facts(*versions))
    assert plan.entries == [] and plan.deferred and "yield v7 TRAINING" in plan.deferred
    assert decision(plan, 1)[0] == "skip" and decision(plan, 1)[1][0].startswith("deferred: ")


def test_a_training_stuck_for_longer_than_the_minimum_age_does_not_block_collection() -> None:
    versions = [*(version(n) for n in range(1, 7)), version(7, S.TRAINING, age_days=8, files=())]
    plan = plan_of(facts(*versions))
    assert plan.deferred is None and collected_numbers(plan) == [1, 2]


def test_an_unreadable_manifest_is_never_collected() -> None:
    broken = version(1).model_copy(update={"manifest_problem": "bad signature block"})
    plan = plan_of(facts(broken, *(version(n) for n in range(2, 8))))
    assert decision(plan, 1)[0] == "keep" and 1 not in collected_numbers(plan)


@pytest.mark.parametrize(("keep_last", "min_age"), [(0, MIN_AGE), (5, timedelta(days=-1))])
def test_nonsense_parameters_are_refused(keep_last: int, min_age: timedelta) -> None:
    with pytest.raises(InvalidInput):
        plan_retention(facts(version(1)), as_of=NOW, present=set(), keep_last=keep_last, min_age=min_age)


def test_a_versions_artifacts_are_its_files_and_the_signed_manifest_as_stored(tmp_path: Path) -> None:
    signer = LocalEd25519Signer(tmp_path / "keys")
    manifest = ModelManifest(
        tenant="acme",
        model_name="yield",
        files=[
            FileEntry(name="model.bin", sha256=digest("m"), size=7),
            FileEntry(name="b.json", sha256=digest("b"), size=3),
        ],
        dataset_snapshot_id="ds-1",
        dataset_merkle_root="0" * 64,
        training_config={"max_iter": 30, "features": ["a", "b"]},
        seed=1,
        trainer="test",
    )
    signed = sign_manifest(manifest, signer)
    as_recorded = signed.model_dump(mode="json", by_alias=True)  # what the registry's JSON column holds
    artifacts, problem = version_artifacts(as_recorded)
    stored = signed.model_dump_json(by_alias=True).encode()  # what the training put in the store
    assert problem is None
    assert [(a.name, a.digest, a.bytes) for a in artifacts] == [
        ("b.json", digest("b"), 3),
        ("model.bin", digest("m"), 7),
        (SIGNED_MANIFEST, hashlib.sha256(stored).hexdigest(), len(stored)),
    ]
    broken = {"manifest": {"files": [{"name": "x", "sha256": digest("x"), "size": 1}]}, "signature": "?"}
    artifacts, problem = version_artifacts(broken)
    assert problem and [a.digest for a in artifacts] == [digest("x")]


# ---------------------------------------------------------------------------------------- property
STATES = list(ModelState)
POOL = [f"blob-{i}" for i in range(12)]


@st.composite
def tenants(draw: st.DrawFn) -> tuple[RetentionFacts, set[str], int]:
    versions = []
    for model in ("yield", "ndvi"):
        for number in range(1, draw(st.integers(0, 12)) + 1):
            files = tuple(draw(st.lists(st.sampled_from(POOL), max_size=3, unique=True)))
            # Mostly candidates (old DRAFT/FAILED, never champion), so that plans have something to delete.
            state = draw(st.sampled_from([S.FAILED] * 6 + [S.DRAFT] * 3 + STATES))
            versions.append(
                version(
                    number,
                    state,
                    draw(st.sampled_from([0.5, 6.9, 7.0, 20.0, 20.0, 20.0])),
                    model=model,
                    files=files,
                    was_champion=draw(st.integers(0, 5)) == 0,
                )
            )
    referenced = {digest(b): "dataset snapshot ds" for b in draw(st.lists(st.sampled_from(POOL), max_size=2))}
    present = {digest(b) for b in draw(st.lists(st.sampled_from(POOL), min_size=4, max_size=12))}
    return facts(*versions, referenced=referenced), present, draw(st.integers(1, 4))


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(tenants())
def test_no_plan_ever_deletes_what_something_kept_references(
    case: tuple[RetentionFacts, set[str], int],
) -> None:
    f, present, keep_last = case
    plan = plan_retention(f, as_of=NOW, present=present, keep_last=keep_last)
    by_id = {v.id: v for v in f.versions}
    kept_ids = {v.version_id for v in plan.versions if v.decision == "keep"}
    protected = set(f.referenced) | {a.digest for v in f.versions if v.id in kept_ids for a in v.artifacts}
    deleted = [e.digest for e in plan.entries]
    assert len(deleted) == len(set(deleted)), "each digest deleted once"
    assert not protected & set(deleted)
    assert set(deleted) <= present
    for entry in plan.entries:
        v = by_id[entry.version_id]
        assert v.state in (S.DRAFT, S.FAILED) and not v.was_champion
        assert NOW - v.updated_at >= MIN_AGE
        newer = [o for o in f.versions if o.model_name == v.model_name and o.number > v.number]
        assert len(newer) >= keep_last
    if plan.deferred is None:  # and nothing collectable is left behind
        candidates = {v.version_id for v in plan.versions if v.decision != "keep"}
        owed = {a.digest for v in f.versions if v.id in candidates for a in v.artifacts} & present
        assert owed - protected == set(deleted)
    assert plan.totals.bytes_deleted == sum(e.bytes for e in plan.entries)
    assert plan.totals.versions == len(f.versions)
