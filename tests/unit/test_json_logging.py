from __future__ import annotations

import json
import logging
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from evolution.observability.logs import configure_logging
from evolution.platform.settings import Settings


def test_log_lines_are_json_with_the_tenant_and_model_hash(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(Settings(home=tmp_path), "unit")
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("Training") as current:
            logging.getLogger("evolution.test").info(
                "trained %s", "v3", extra={"tenantId": "acme", "modelHash": "ab" * 32}
            )
        for handler in root.handlers:
            handler.flush()
        line = (tmp_path / "logs" / "unit.log").read_text().strip().splitlines()[-1]
        entry = json.loads(line)
        assert entry["message"] == "trained v3" and entry["level"] == "INFO" and entry["process"] == "unit"
        assert entry["tenantId"] == "acme" and entry["modelHash"] == "ab" * 32 and "timestamp" in entry
        assert entry["traceId"] == f"{current.get_span_context().trace_id:032x}"
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
