"""The dashboard process: its Prometheus exporter, then Streamlit serving dashboard/app.py."""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client import start_http_server
from streamlit.web import cli as streamlit_cli

from dashboard.state import TOOLBAR_MODE, get_services
from evolution.platform.settings import load_settings

APP = Path(__file__).resolve().parent / "app.py"


def main() -> None:
    settings = load_settings()
    if settings.dashboard_metrics_port:
        start_http_server(settings.dashboard_metrics_port, addr=settings.metrics_host)
    get_services()  # migrations and wiring at process start, not in the first visitor's page load
    sys.argv = [
        "streamlit", "run", str(APP),
        "--server.headless", "true",
        "--server.address", settings.dashboard_host,
        "--server.port", str(settings.dashboard_port),
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", TOOLBAR_MODE,
    ]  # fmt: skip
    sys.exit(streamlit_cli.main())


if __name__ == "__main__":
    main()
