"""The serving HTTP API: predictions per tenant from the cached champion, and learning-event ingestion."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from evolution import metrics
from evolution.errors import EvolutionError, InvalidInput, NotFound, PermissionDenied
from evolution.events import EventIngestor, IngestSummary
from evolution.security import Principal
from evolution.serving.predictor import PredictInstance, Predictor, PredictOut
from evolution.tracing import span

MAX_INSTANCES = 1000
MAX_EVENTS = 5000

STATUS_OF = {NotFound: 404, PermissionDenied: 403, InvalidInput: 422}


class PredictRequest(BaseModel):
    instances: list[PredictInstance] = Field(min_length=1, max_length=MAX_INSTANCES)


class PredictResponse(BaseModel):
    predictions: list[PredictOut]


class EventsRequest(BaseModel):
    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVENTS)


def _count_prediction(request: Request, status: str) -> None:
    params = request.path_params
    if request.url.path.endswith("/predict") and "tenant_id" in params:
        metrics.count_inference(params["tenant_id"], params.get("model_name", ""), "none", status)


def create_app(predictor: Predictor, ingestor: EventIngestor) -> FastAPI:
    app = FastAPI(
        title="Controlled Evolution serving API",
        version="1",
        description="Predictions from each tenant's verified champion (with shadow and canary candidates), "
        "and ingestion of signed learning events.",
    )

    @app.middleware("http")
    async def _availability(request: Request, call_next: Any) -> Any:
        # Availability counts server-side failures of prediction requests; a client's mistake (4xx) is not one.
        try:
            response = await call_next(request)
        except Exception:
            _count_prediction(request, "error")
            raise
        if response.status_code >= 500:
            _count_prediction(request, "error")
        elif response.status_code >= 400:
            _count_prediction(request, "client_error")
        return response

    @app.exception_handler(EvolutionError)
    async def _domain_error(_request: Request, error: EvolutionError) -> JSONResponse:
        status = next((code for kind, code in STATUS_OF.items() if isinstance(error, kind)), 409)
        return JSONResponse(status_code=status, content={"error": error.error_type, "detail": str(error)})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/tenants/{tenant_id}/models/{model_name}/predict", response_model=PredictResponse)
    def predict(tenant_id: str, model_name: str, body: PredictRequest) -> PredictResponse:
        principal = Principal.system(tenant_id, "serving")
        with span("Serving", tenant=tenant_id, model=model_name, instances=len(body.instances)):
            return PredictResponse(
                predictions=predictor.predict(principal, tenant_id, model_name, body.instances)
            )

    @app.get("/v1/tenants/{tenant_id}/models/{model_name}")
    def current(tenant_id: str, model_name: str) -> dict[str, Any]:
        return predictor.current(tenant_id, model_name)

    @app.post("/v1/tenants/{tenant_id}/events", response_model=IngestSummary)
    def ingest(tenant_id: str, body: EventsRequest) -> IngestSummary:
        # Each event carries its source's signature; the ingestor verifies every one before accepting it.
        principal = Principal.system(tenant_id, "ingest-api")
        return ingestor.ingest_objects(principal, tenant_id, body.events, source="http")

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=error.status_code, content={"error": "http", "detail": error.detail})

    return app
