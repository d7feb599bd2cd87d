"""The serving process (`evolution serve`): wires the predictor and the ingestor into the HTTP app.

It keeps answering from the models it has cached while the registry database is down (the models are refreshed in
the background, prediction records are written behind the answers and kept in memory until the registry is back,
API tokens are served from their cache); it never talks to Temporal.
"""

from __future__ import annotations

import gc
import sys

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from evolution.observability.logs import configure_logging
from evolution.observability.tracing import configure_tracing
from evolution.platform.settings import Settings, load_settings
from evolution.platform.wiring import build_services
from evolution.registry.pg_tls import DatabaseUnreachable
from evolution.serving.app import create_app
from evolution.serving.body_limits import BodyLimits
from evolution.serving.predictor import Predictor

# Prediction records are written behind the answers, each batch gathering what arrived within this window: the
# request path pays for no database round trip, and an outcome joins its prediction when the canary reads paired
# errors, long after. Ten transactions a second rather than fifty: each one holds the interpreter lock for about a
# millisecond, and a request arriving then waits for it (bench/bench_serving.py: the tail got a little shorter).
RECORDS_WRITE_BEHIND_S = 0.1
# Requests are answered on the event loop while background threads (the record writer, the model refresher) run
# Python too; the loop would wait up to the interpreter's 5 ms switch interval for the GIL behind them.
GIL_SWITCH_INTERVAL_S = 0.0005


def build(settings: Settings) -> tuple[FastAPI, Predictor]:
    services = build_services(settings)
    predictor = services.predictor(records_write_behind_s=RECORDS_WRITE_BEHIND_S)
    limits = BodyLimits(predict=settings.serve_max_predict_bytes, ingest=settings.serve_max_ingest_bytes)
    # API tokens are checked against the registry and cached (60 s fresh; up to 15 min while the registry is down).
    app = create_app(
        predictor,
        services.events,
        services.token_authenticator(),
        limits,
        definitions=services.model_definitions,
        # When the server stops (SIGTERM from Kubernetes or `evolution up`), buffered prediction records get
        # their last chance to reach the registry: uvicorn ends the process on SIGTERM before any code after it.
        on_shutdown=predictor.close,
    )
    return app, predictor


def main() -> None:
    try:
        settings = load_settings()
    except ValidationError as error:
        sys.exit(f"evolution serve: invalid settings: {error}")
    configure_logging(settings, "serving")
    configure_tracing(settings, "serving")
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        app, predictor = build(settings)
    except DatabaseUnreachable as error:  # a wrong CA, a refused login...: one line, no traceback
        sys.exit(f"evolution serve: {error}")
    # What start-up loaded (the libraries, the app) stays for the process's life: out of the collector's way, so
    # its full collections, which would pause a request for milliseconds, have little left to walk.
    gc.freeze()
    predictor.start()  # refresh cached models in the background: requests never wait on the registry for them
    try:
        uvicorn.run(app, host=settings.serve_host, port=settings.serve_port, log_config=None)
    finally:
        predictor.close()  # when uvicorn returns at all (it could not start): the app's shutdown did it otherwise


if __name__ == "__main__":
    main()
