"""Drift-scan activities: seal the window, scan it, write the signed report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeats
from evolution.contracts import ScanIn, ScanOut, SealIn, SealOut, SealScanIn, SealScanOut

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.drift.scanner import DriftScanner


class DriftActivities:
    def __init__(self, scanner: DriftScanner) -> None:
        self._scanner = scanner

    @activity.defn(name="seal_window")
    @domain_errors_are_final
    @heartbeats
    def seal_window(self, inp: SealIn) -> SealOut:
        return self._scanner.seal_latest_window(inp.tenant_id, inp.min_rows, inp.window_end)

    @activity.defn(name="scan_drift")
    @domain_errors_are_final
    @heartbeats
    def scan_drift(self, inp: ScanIn) -> ScanOut:
        return self._scanner.scan(inp.tenant_id, inp.model_name, inp.snapshot_id)

    @activity.defn(name="seal_and_scan_window")
    @domain_errors_are_final
    @heartbeats
    def seal_and_scan_window(self, inp: SealScanIn) -> SealScanOut:
        return self._scanner.seal_and_scan(inp.tenant_id, inp.model_name, inp.min_rows, inp.window_end)
