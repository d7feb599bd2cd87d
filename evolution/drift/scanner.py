"""The scheduled drift scan of one tenant: the latest sealed window against the champion's signed baseline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

import numpy as np

from evolution.contracts import ScanOut, SealOut, SealScanOut
from evolution.data.quality_holds import SnapshotHolds
from evolution.data.snapshots import DatasetSnapshotService, SnapshotView
from evolution.drift.baselines import BaselineService
from evolution.drift.quality_backfill import BaselineQualityService
from evolution.drift.reports import DriftReportService
from evolution.errors import InsufficientData, InvalidInput
from evolution.integrity.signing import KeyRing
from evolution.lifecycle import ModelState
from evolution.notifications.port import NotificationIn, Notifier
from evolution.observability import metrics
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal
from evolution.stats.drift import scan
from evolution.stats.drift_models import Baseline, DriftResult
from evolution.stats.quality_models import QualityCheck, ReasonCode
from evolution.timeutil import as_utc, utcnow
from evolution.training.formats import ServedModel
from evolution.training.loader import LoadedModel, ModelLoader

log = logging.getLogger(__name__)
DRIFT_DETECTION_SLO_S = 4 * 3600.0
# What each data-quality check found, in words for the notification (the check's own description says how much).
CHECK_WORDS: dict[ReasonCode, str] = {
    "out_of_range": "values outside their usual range",
    "missing_rate": "more values missing than usual",
    "unseen_categories": "values never seen before (renamed or new categories)",
    "stuck": "stuck on one value",
}
NO_RETRAINING = (
    "A data-quality alert does not start a retraining: training on broken data would teach the model the breakage. "
    "A retraining that drift on this window starts waits until an admin accepts the window "
    "(evolution snapshot accept TENANT SNAPSHOT_ID --reason ...)."
)


class DriftScanner:
    def __init__(
        self,
        registry: ModelRegistryService,
        tenants: TenantService,
        snapshots: DatasetSnapshotService,
        reports: DriftReportService,
        loader: ModelLoader,
        keyring: KeyRing,
        notifier: Notifier,
        baselines: BaselineService | None = None,
        quality: BaselineQualityService | None = None,
        holds: SnapshotHolds | None = None,
    ) -> None:
        """Thresholds come from the tenant's current settings; binning stays as frozen in the champion's baseline.

        ``quality`` completes a baseline made before the data-quality checks (once, from its snapshot); ``holds``
        marks a window whose data-quality checks fired, so that a retraining on it waits for an admin.
        """
        self._registry = registry
        self._tenants = tenants
        self._snapshots = snapshots
        self._reports = reports
        self._loader = loader
        self._keyring = keyring
        self._notifier = notifier
        self._baselines = baselines
        self._quality = quality
        self._holds = holds

    def seal_latest_window(
        self, tenant_id: str, min_rows: int, window_end: datetime | None = None
    ) -> SealOut:
        """Seal everything that arrived since the last window; too few events wait for the next scan.

        With ``window_end`` (fixed by the workflow) it is idempotent: an attempt whose worker died after the
        seal committed is retried, and the retry finds that window instead of sealing the next, empty one.
        """
        sealed, _ = self._seal(tenant_id, min_rows, window_end, keep_rows=False)
        return sealed

    def seal_and_scan(
        self, tenant_id: str, model_name: str, min_rows: int, window_end: datetime
    ) -> SealScanOut:
        """Seal the window up to ``window_end`` and scan it, reusing the rows the seal read.

        A retry after the seal committed finds the sealed window and scans it from the verified store instead.
        """
        sealed, window = self._seal(tenant_id, min_rows, window_end, keep_rows=True)
        if sealed.snapshot_id is None:
            return SealScanOut(sealed=sealed)
        if window is None:
            # A retry: an earlier attempt of this step sealed the window, and may have reported on it before its
            # worker died. Its report stands (no second one); its notification is sent again, as it may not
            # have been (at least once).
            reported = self._reports.for_snapshot(
                Principal.system(tenant_id), tenant_id, model_name, sealed.snapshot_id, window_end
            )
            if reported is not None:
                result = DriftResult.model_validate(reported.report["result"])
                return SealScanOut(
                    sealed=sealed,
                    scan=self._announce(
                        tenant_id,
                        model_name,
                        result,
                        reported.id,
                        reported.window_start,
                        sealed.rows,
                        sealed.snapshot_id,
                    ),
                )
        return SealScanOut(sealed=sealed, scan=self._scan(tenant_id, model_name, sealed.snapshot_id, window))

    def _seal(
        self, tenant_id: str, min_rows: int, window_end: datetime | None, keep_rows: bool
    ) -> tuple[SealOut, tuple[SnapshotView, list[dict[str, Any]]] | None]:
        system = Principal.system(tenant_id)
        if window_end is not None:
            latest = self._snapshots.latest(system, tenant_id)
            if latest is not None and as_utc(latest.window_end) == as_utc(window_end):
                return SealOut(snapshot_id=latest.id, rows=latest.row_count, message="sealed"), None
        end = window_end or utcnow()
        try:
            if keep_rows:
                snapshot, rows = self._snapshots.seal_for_scan(system, tenant_id, end, min_rows=min_rows)
            else:
                snapshot, rows = self._snapshots.seal(system, tenant_id, end, min_rows=min_rows), []
        except (InsufficientData, InvalidInput) as not_yet:
            return SealOut(snapshot_id=None, rows=0, message=str(not_yet)), None
        sealed = SealOut(snapshot_id=snapshot.id, rows=snapshot.row_count, message="sealed")
        return sealed, ((snapshot, rows) if keep_rows else None)

    def scan(self, tenant_id: str, model_name: str, snapshot_id: str) -> ScanOut:
        return self._scan(tenant_id, model_name, snapshot_id, None)

    def _scan(
        self,
        tenant_id: str,
        model_name: str,
        snapshot_id: str,
        window: tuple[SnapshotView, list[dict[str, Any]]] | None,
    ) -> ScanOut:
        """Scan ``window`` (the snapshot and the rows just sealed) or, without it, the stored snapshot."""
        system = Principal.system(tenant_id)
        against = self._champion_baseline(tenant_id, model_name)
        if isinstance(against, ScanOut):
            return against
        champion, frozen = against
        if window is None:
            snapshot = self._snapshots.get(system, snapshot_id)
            rows = self._snapshots.load_rows(snapshot, self._keyring)
        else:
            snapshot, rows = window
        result = self._result(tenant_id, champion, frozen, rows)
        report = self._reports.write(
            system,
            tenant_id=tenant_id,
            model_name=model_name,
            baseline_version_id=champion.version_id,
            baseline_model_hash=champion.model_hash,
            snapshot_id=snapshot.id,
            window_start=snapshot.window_start,
            window_end=snapshot.window_end,
            result=result,
        )
        log.info(
            "drift scan of %s over snapshot %s: %s",
            model_name,
            snapshot.id,
            result.level,
            extra={"tenantId": tenant_id, "modelHash": champion.model_hash},
        )
        return self._announce(
            tenant_id, model_name, result, report.id, snapshot.window_start, len(rows), snapshot.id
        )

    def _champion_baseline(self, tenant_id: str, model_name: str) -> tuple[LoadedModel, Baseline] | ScanOut:
        """The champion and the baseline windows are compared with (an admin's reset if one is in force)."""
        system = Principal.system(tenant_id)
        champion_view = self._registry.current(system, tenant_id, model_name, ModelState.CHAMPION)
        if champion_view is None:
            return ScanOut(
                report_id=None, level="no_champion", message="no champion: nothing to compare against"
            )
        champion = self._loader.load(champion_view)
        reset = (
            self._baselines.effective_source(tenant_id, model_name, champion.version_id, self._keyring)
            if self._baselines
            else None
        )
        frozen, source = reset or (champion.baseline, champion_view.dataset_snapshot_id)
        if frozen is None:
            return ScanOut(
                report_id=None, level="no_baseline", message=f"champion v{champion.number} has no baseline"
            )
        if self._quality is not None:
            # A baseline made before the data-quality checks gets their data once, from its snapshot (audited).
            frozen = self._quality.complete(tenant_id, model_name, frozen, source)
        return champion, frozen

    def _result(
        self, tenant_id: str, champion: LoadedModel, frozen: Baseline, rows: list[dict[str, Any]]
    ) -> DriftResult:
        """Drift, data quality and (on labelled rows) the champion's MAE of ``rows`` against ``frozen``."""
        names = [f.name for f in frozen.features]
        model = champion.model
        raw = _columns(rows, list(dict.fromkeys([*names, *model.features])))
        columns: dict[str, Any] = {name: _numeric_if_possible(raw[name]) for name in names}
        labelled = np.flatnonzero([row.get("actual") is not None for row in rows])
        abs_errors = None
        if labelled.size:
            predicted = model.predict(_model_columns(model, raw, columns, labelled))
            actual = np.asarray([rows[i]["actual"] for i in labelled], dtype=float)
            abs_errors = np.abs(actual - predicted)
        settings = self._tenants.tenant_settings(Principal.system(tenant_id), tenant_id)
        baseline = frozen.model_copy(update={"config": settings.drift_config_over(frozen.config)})
        return scan(baseline, columns, abs_errors)

    def scan_past_windows(
        self, tenant_id: str, model_name: str, snapshot_id: str, windows: Sequence[tuple[datetime, datetime]]
    ) -> list[str]:
        """Reports on past periods of one sealed snapshot (by event time), e.g. the season a tenant's history
        covers, each against the champion's baseline: the drift history a new tenant starts with.

        A backfill: no notification, no metric and no retraining follow from these reports; the ids written, in
        the order of ``windows`` (a period without rows is skipped).
        """
        against = self._champion_baseline(tenant_id, model_name)
        if isinstance(against, ScanOut):
            raise InvalidInput(f"{tenant_id}/{model_name}: {against.message}")
        champion, frozen = against
        system = Principal.system(tenant_id, "drift-backfill")
        rows = self._snapshots.load_rows(self._snapshots.get(system, snapshot_id), self._keyring)
        times = [as_utc(datetime.fromisoformat(row["event_time"])) for row in rows]
        written = []
        for start, end in windows:
            part = [row for row, at in zip(rows, times, strict=True) if start <= at < end]
            if not part:
                continue
            report = self._reports.write(
                system,
                tenant_id=tenant_id,
                model_name=model_name,
                baseline_version_id=champion.version_id,
                baseline_model_hash=champion.model_hash,
                snapshot_id=snapshot_id,
                window_start=start,
                window_end=end,
                result=self._result(tenant_id, champion, frozen, part),
            )
            written.append(report.id)
        return written

    def _announce(
        self,
        tenant_id: str,
        model_name: str,
        result: DriftResult,
        report_id: str,
        window_start: datetime,
        rows: int,
        snapshot_id: str,
    ) -> ScanOut:
        """Metrics and, on warn or alert, a notification for a written report; the step's answer.

        Data-quality alerts mark the window held and notify on their own: they never raise the drift level.
        """
        self._record(tenant_id, model_name, result, window_start)
        alerts = [f.feature for f in result.features if f.status == "alert"]
        warnings = [f.feature for f in result.features if f.status == "warn"]
        if result.mae is not None and result.mae.status in ("warn", "alert"):
            (alerts if result.mae.status == "alert" else warnings).append("mae")
        if result.level in ("warn", "alert"):
            self._notifier.notify(
                NotificationIn(
                    tenant_id=tenant_id,
                    severity="alert" if result.level == "alert" else "warning",
                    kind=f"drift.{result.level}",
                    subject=f"Drift {result.level} for {model_name}: {', '.join(alerts or warnings)}",
                    body={"report_id": report_id, "alerts": alerts, "warnings": warnings},
                )
            )
        quality = self._quality_alerts(tenant_id, model_name, result, report_id, snapshot_id)
        return ScanOut(
            report_id=report_id,
            level=result.level,
            alerts=alerts,
            quality_alerts=quality,
            message=f"{rows} rows scanned",
        )

    def _quality_alerts(
        self, tenant_id: str, model_name: str, result: DriftResult, report_id: str, snapshot_id: str
    ) -> list[str]:
        """Hold the window and notify when data-quality checks fired; their 'feature: check' names."""
        fired = result.quality.alerts if result.quality is not None else []
        if not fired:
            return []
        names = [f"{c.feature}: {c.check}" for c in fired]
        words = [f"{c.feature} {CHECK_WORDS[c.check]}" for c in fired]
        settings = self._tenants.tenant_settings(Principal.system(tenant_id), tenant_id)
        holding = [
            f"{c.feature} {CHECK_WORDS[c.check]}" for c in fired if c.check in settings.quality_hold_checks
        ]
        if holding and self._holds is not None:
            self._holds.hold(
                Principal.system(tenant_id, "drift-scan"), tenant_id, snapshot_id, report_id, holding
            )
        self._notifier.notify(
            NotificationIn(
                tenant_id=tenant_id,
                severity="alert",
                kind="data_quality.alert",
                subject=f"Data-quality alert for {model_name}: {'; '.join(words)[:300]} "
                "(this does not start a retraining)",
                body={
                    "report_id": report_id,
                    "snapshot_id": snapshot_id,
                    "checks": [_check_summary(c) for c in fired],
                    "retraining": NO_RETRAINING if holding else NO_RETRAINING.split(" A retraining")[0],
                    "window_held": bool(holding),
                },
            )
        )
        return names

    def _record(self, tenant_id: str, model_name: str, result: DriftResult, window_start: datetime) -> None:
        metrics.DRIFT_SCANS.labels(tenant_id, result.level).inc()
        for feature in result.features:
            if feature.psi is not None:
                metrics.DRIFT_PSI.labels(tenant_id, model_name, feature.feature).set(feature.psi)
        if result.level != "alert":
            return
        # The drifted data may have arrived as early as the window's start: that bounds the detection latency.
        latency = (utcnow() - window_start).total_seconds()
        metrics.DRIFT_DETECTION_LATENCY.labels(tenant_id).observe(latency)
        if latency > DRIFT_DETECTION_SLO_S:
            self._notifier.notify(
                NotificationIn(
                    tenant_id=tenant_id,
                    severity="warning",
                    kind="slo.drift_detection_latency",
                    subject=f"Drift in {model_name} detected {latency / 3600:.1f} h after its window opened "
                    f"(SLO: under {DRIFT_DETECTION_SLO_S / 3600:.0f} h); scan more often",
                    body={"latency_s": latency},
                )
            )


def _check_summary(c: QualityCheck) -> dict[str, Any]:
    return {
        "feature": c.feature,
        "check": c.check,
        "what": CHECK_WORDS[c.check],
        "description": c.description,
        "k": c.k,
        "m": c.m,
        "p_value": c.p_value,
        "p_adjusted": c.p_adjusted,
    }


def _columns(rows: list[dict[str, Any]], names: list[str]) -> dict[str, np.ndarray]:
    """Object columns of ``rows``; a name a row lacks is None there."""
    if not names:
        return {}
    if rows and len(names) > 1:
        try:
            # Every row usually has every feature: one C-level pick per row and one transpose.
            picked = list(zip(*map(itemgetter(*names), rows), strict=True))
        except KeyError:
            pass
        else:
            return {name: _object_array(values) for name, values in zip(names, picked, strict=True)}
    return {name: _object_array([row.get(name) for row in rows]) for name in names}


def _object_array(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values  # never a 2-D array, whatever the values are
    return out


def _model_columns(
    model: ServedModel, raw: dict[str, np.ndarray], numeric: dict[str, Any], rows: np.ndarray
) -> dict[str, np.ndarray]:
    """The model's features at ``rows``, as columns: predicting from them gives what predicting the rows gives.

    Categorical features keep their raw values (the model turns them to text itself); the others are float64
    where every value is a number (as the model would convert them) and raw values otherwise.
    """
    out = {}
    categorical = set(model.categorical)
    for name in model.features:
        if name in categorical:
            out[name] = raw[name][rows]
        else:
            values = numeric[name] if name in numeric else _numeric_if_possible(raw[name])
            out[name] = values[rows]
    return out


def _is_number_type(kind: type) -> bool:
    return kind is type(None) or (issubclass(kind, int | float) and not issubclass(kind, bool))


def _numeric_if_possible(values: np.ndarray) -> np.ndarray:
    """Numbers (with None as NaN) become float64 for the fast numeric path; anything textual stays as objects."""
    if all(_is_number_type(kind) for kind in set(map(type, values))):
        return values.astype(np.float64)  # float(v) for each value, None -> NaN
    return values
