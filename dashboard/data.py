"""What the dashboard pages show, computed from the services (importable and testable without Streamlit)."""

from __future__ import annotations

from typing import Any

from evolution.security import Principal, Role
from evolution.wiring import Services

VIEWER = Principal(user="dashboard", role=Role.VIEWER, tenants=("*",))


def tenants(services: Services) -> list[str]:
    return services.registry.tenant_ids()


def version_rows(services: Services, tenant_id: str) -> list[dict[str, Any]]:
    return [
        {
            "model": v.model_name,
            "version": v.number,
            "state": v.state.value,
            "holdout MAE": v.metrics.get("holdout_mae"),
            "model hash": (v.model_hash or "")[:16],
            "updated": v.updated_at.isoformat(timespec="seconds"),
        }
        for v in services.registry.list_versions(VIEWER, tenant_id)
    ]


def audit_rows(services: Services, tenant_id: str, limit: int = 30) -> list[dict[str, Any]]:
    entries = services.registry.audit_trail(VIEWER, tenant_id)[-limit:]
    return [
        {
            "seq": e.seq,
            "at": e.at.isoformat(timespec="seconds"),
            "actor": e.actor,
            "role": e.role,
            "action": e.action,
            "change": f"{e.from_state or ''} → {e.to_state}" if e.to_state else "",
            "reason": str(e.details.get("reason", ""))[:80],
        }
        for e in reversed(entries)
    ]


def drift_rows(services: Services, tenant_id: str, limit: int = 10) -> list[dict[str, Any]]:
    rows = []
    for report in services.drift_reports.list_reports(VIEWER, tenant_id, limit=limit):
        features = report.report["result"]["features"]
        worst = max(features, key=lambda f: f.get("psi") or 0.0) if features else None
        rows.append(
            {
                "report": report.id,
                "window end": report.window_end.isoformat(timespec="seconds"),
                "level": report.level,
                "worst feature": worst["feature"] if worst else "",
                "PSI": round(worst["psi"], 3) if worst and worst.get("psi") is not None else None,
            }
        )
    return rows


def chain_status(services: Services, tenant_id: str) -> str:
    report = services.registry.verify_audit(VIEWER, tenant_id)
    return f"intact ({report.entries} entries)" if report.ok else "BROKEN: " + "; ".join(report.problems[:3])
