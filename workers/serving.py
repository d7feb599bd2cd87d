"""The serving process (`evolution serve`): wires the predictor and the ingestor into the HTTP app.

It keeps answering from the models it has cached while the registry database is down (the models are refreshed in
the background, prediction records are buffered in memory and written when the registry is back, API tokens are
served from their cache); it never talks to Temporal.
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from evolution.observability.logs import configure_logging
from evolution.observability.tracing import configure_tracing
from evolution.platform.settings import Settings, load_settings
from evolution.platform.wiring import build_services
from evolution.serving.app import create_app
from evolution.serving.predictor import Predictor


def build(settings: Settings) -> tuple[FastAPI, Predictor]:
    services = build_services(settings)
    predictor = services.predictor()
    # API tokens are checked against the registry and cached (60 s fresh; up to 15 min while the registry is down).
    return create_app(predictor, services.events, services.token_authenticator()), predictor


def main() -> None:
    settings = load_settings()
    configure_logging(settings, "serving")
    configure_tracing(settings, "serving")
    app, predictor = build(settings)
    predictor.start()  # refresh cached models in the background: requests never wait on the registry for them
    try:
        uvicorn.run(app, host=settings.serve_host, port=settings.serve_port, log_config=None)
    finally:
        predictor.close()  # a last chance for buffered prediction records to reach the registry


if __name__ == "__main__":
    main()
