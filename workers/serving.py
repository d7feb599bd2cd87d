"""The serving process (`evolution serve`): wires the predictor and the ingestor into the HTTP app.

It keeps answering from the models it has cached while the registry database is down (the models are refreshed in
the background, prediction records are buffered in memory and written when the registry is back, API tokens are
served from their cache); it never talks to Temporal.
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from evolution.observability.logs import configure_logging
from evolution.observability.tracing import configure_tracing
from evolution.platform.settings import Settings, load_settings
from evolution.platform.wiring import build_services
from evolution.serving.app import create_app
from evolution.serving.body_limits import BodyLimits
from evolution.serving.predictor import Predictor


def build(settings: Settings) -> tuple[FastAPI, Predictor]:
    services = build_services(settings)
    predictor = services.predictor()
    limits = BodyLimits(predict=settings.serve_max_predict_bytes, ingest=settings.serve_max_ingest_bytes)
    # API tokens are checked against the registry and cached (60 s fresh; up to 15 min while the registry is down).
    app = create_app(
        predictor,
        services.events,
        services.token_authenticator(),
        limits,
        definitions=services.model_definitions,
    )
    return app, predictor


def main() -> None:
    try:
        settings = load_settings()
    except ValidationError as error:
        sys.exit(f"evolution serve: invalid settings: {error}")
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
