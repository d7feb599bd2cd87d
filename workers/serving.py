"""The serving process (`evolution serve`): wires the predictor and the ingestor into the HTTP app."""

from __future__ import annotations

import uvicorn

from evolution.logging_setup import configure_logging
from evolution.serving.app import create_app
from evolution.serving.auth import TokenAuthenticator
from evolution.serving.predictor import Predictor
from evolution.settings import Settings, load_settings
from evolution.tracing import configure_tracing
from evolution.wiring import build_services


def build_app(settings: Settings):  # type: ignore[no-untyped-def]
    services = build_services(settings)
    predictor = Predictor(services.registry, services.loader, services.outcomes, settings.canary_share)
    # API tokens are checked against the registry and cached (60 s fresh; up to 15 min while the registry is down).
    authenticator = TokenAuthenticator(services.users.authenticate_token)
    return create_app(predictor, services.events, authenticator)


def main() -> None:
    settings = load_settings()
    configure_logging(settings, "serving")
    configure_tracing(settings, "serving")
    uvicorn.run(build_app(settings), host=settings.serve_host, port=settings.serve_port, log_config=None)


if __name__ == "__main__":
    main()
