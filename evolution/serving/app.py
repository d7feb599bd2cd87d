"""The serving HTTP API: predictions per tenant from the cached champion, and learning-event ingestion.

Every ``/v1/`` operation needs ``Authorization: Bearer <API token>`` (``evolution users token create``): a missing,
malformed, unknown, revoked or expired token gets 401 with ``WWW-Authenticate``, before the request body is even
read. The token's user acts with their role on the tenant named in the path; whether that role may do the operation
is decided by the service layer (``authorize`` in the predictor and the ingestor), whose refusal this layer turns
into 403. It never re-implements the permission table.

Open without a token: ``/healthz`` (liveness, no data), ``/openapi.json`` and ``/docs`` (the schema), and
``/metrics``: Prometheus counters and histograms whose only tenant data are bounded labels (tenant ids and model
names of authenticated traffic: unauthenticated requests never create a label), so a scraper needs no credential.
Where tenant ids themselves are confidential, keep the port behind the NetworkPolicy that admits only Prometheus.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from evolution.data.event_schema import IngestSummary
from evolution.data.events import EventIngestor
from evolution.errors import EvolutionError, InvalidInput, NotFound, PermissionDenied
from evolution.governance.users import UserAccess
from evolution.observability import metrics
from evolution.observability.tracing import span
from evolution.registry.tenants import TENANT_ID_PATTERN
from evolution.registry.versions import MODEL_NAME_PATTERN
from evolution.security import Principal
from evolution.serving.auth import AuthenticationUnavailable, TokenAuthenticator
from evolution.serving.predictor import (
    RETRY_AFTER_S,
    CurrentModels,
    ModelUnavailable,
    PredictInstance,
    Predictor,
    PredictOut,
)

MAX_INSTANCES = 1000
MAX_EVENTS = 5000
API_PREFIX = "/v1/"
REALM = "evolution"

STATUS_OF = {
    NotFound: 404,
    PermissionDenied: 403,
    InvalidInput: 422,
    AuthenticationUnavailable: 503,
    ModelUnavailable: 503,
}


class ErrorBody(BaseModel):
    """Every error answer: a stable machine-readable kind and a message naming the problem."""

    error: str = Field(description="e.g. PermissionDenied, NotFound, InvalidInput, Unauthorized")
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For invalid requests: each problem with its location."
    )


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The body is not JSON (or not UTF-8)"),
    401: _error("No API token, or one that is malformed, unknown, revoked or expired"),
    403: _error("The token's user may not do this on this tenant"),
    422: _error("The request does not match the schema; `errors` names each problem"),
    503: _error(
        "The registry is unreachable and this token was not checked recently (or, for a prediction, this "
        "model was not loaded before the outage); Retry-After says when to try again"
    ),
}


class PredictRequest(BaseModel):
    instances: list[PredictInstance] = Field(min_length=1, max_length=MAX_INSTANCES)


class PredictResponse(BaseModel):
    predictions: list[PredictOut]


class EventsRequest(BaseModel):
    events: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_EVENTS,
        description="Signed learning events (tenant, request_id, event_time, features, actual, source_key_id, "
        "signature). Each is verified on its own: one that fails is rejected with a reason in the answer and "
        "kept in the dead-letter table, the others are accepted.",
    )


TenantId = Annotated[
    str, Path(pattern=TENANT_ID_PATTERN.pattern, min_length=1, max_length=63, description="Tenant id")
]
ModelName = Annotated[
    str, Path(pattern=MODEL_NAME_PATTERN.pattern, min_length=1, max_length=100, description="Model name")
]


def _unauthorized(detail: str, invalid_token: bool) -> JSONResponse:
    challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid_token else "")
    return JSONResponse(
        status_code=401,
        content={"error": "Unauthorized", "detail": detail},
        headers={"WWW-Authenticate": challenge},
    )


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _count_prediction(request: Request, status: str) -> None:
    """Only authenticated traffic for a tenant the caller may reach creates metric labels (bounded cardinality)."""
    params = request.path_params
    access: UserAccess | None = getattr(request.state, "access", None)
    tenant = params.get("tenant_id")
    model = params.get("model_name", "")
    if (
        access is None
        or not request.url.path.endswith("/predict")
        or not isinstance(tenant, str)
        or not TENANT_ID_PATTERN.match(tenant)
        or not MODEL_NAME_PATTERN.match(model)
        or access.role_for(tenant) is None
    ):
        return
    metrics.count_inference(tenant, model, "none", status)


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="apiToken",
    description="An API token (`evo_…`); it acts with its user's role on the tenant in the path.",
)


def _caller(
    request: Request,
    tenant_id: TenantId,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> Principal:
    """The authenticated user (checked by the middleware) acting on ``tenant_id`` with their role there."""
    access: UserAccess = request.state.access
    return access.principal(tenant_id)  # no role on the tenant: PermissionDenied -> 403


Caller = Annotated[Principal, Security(_caller)]


def create_app(predictor: Predictor, ingestor: EventIngestor, authenticator: TokenAuthenticator) -> FastAPI:
    app = FastAPI(
        title="Controlled Evolution serving API",
        version="1",
        description="Predictions from each tenant's verified champion (with shadow and canary candidates), "
        "and ingestion of signed learning events. Every /v1/ operation needs an API token "
        "(`Authorization: Bearer evo_…`, created with `evolution users token create`).",
    )

    @app.middleware("http")
    async def _authenticate_and_count(request: Request, call_next: Any) -> Any:
        # Authentication comes first, before the body is read or validated: no token, no information.
        if request.url.path.startswith(API_PREFIX):
            token = _bearer_token(request)
            if token is None:
                return _unauthorized("this operation needs an API token: Authorization: Bearer evo_…", False)
            try:
                request.state.access = await run_in_threadpool(authenticator.authenticate, token)
            except PermissionDenied as refused:
                return _unauthorized(str(refused), True)
            except AuthenticationUnavailable as unavailable:
                if request.url.path.endswith("/predict"):
                    metrics.count_unattributed_failure()  # unavailable, though no tenant label may be made
                return JSONResponse(
                    status_code=503,
                    content={"error": unavailable.error_type, "detail": str(unavailable)},
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
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
        retry = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        return JSONResponse(
            status_code=status, content={"error": error.error_type, "detail": str(error)}, headers=retry
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type")),
            }
            for e in error.errors()
        ]
        summary = "; ".join(f"{'.'.join(p['loc'])}: {p['msg']}" for p in problems[:5])
        return JSONResponse(
            status_code=422, content={"error": "InvalidInput", "detail": summary, "errors": problems[:50]}
        )

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, error: HTTPException) -> JSONResponse:
        # Starlette's own refusals too (a body that is not JSON, a method the path does not take).
        return JSONResponse(
            status_code=error.status_code,
            content={"error": "http", "detail": str(error.detail)},
            headers=error.headers,
        )

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/tenants/{tenant_id}/models/{model_name}/predict",
        response_model=PredictResponse,
        tags=["predictions"],
        responses={**AUTH_RESPONSES, 404: _error("No champion to serve for this tenant and model")},
    )
    def predict(
        tenant_id: TenantId,
        model_name: ModelName,
        body: PredictRequest,
        principal: Caller,
    ) -> PredictResponse:
        """Forecasts from the champion (a canary candidate serves its share; a shadow candidate scores alongside)."""
        with span("Serving", tenant=tenant_id, model=model_name, instances=len(body.instances)):
            return PredictResponse(
                predictions=predictor.predict(principal, tenant_id, model_name, body.instances)
            )

    @app.get(
        "/v1/tenants/{tenant_id}/models/{model_name}",
        response_model=CurrentModels,
        tags=["predictions"],
        responses=AUTH_RESPONSES,
    )
    def current(tenant_id: TenantId, model_name: ModelName, principal: Caller) -> CurrentModels:
        """Which versions serve this model now (champion, and the candidate in shadow or canary, if any)."""
        return predictor.current(principal, tenant_id, model_name)

    @app.post(
        "/v1/tenants/{tenant_id}/events",
        response_model=IngestSummary,
        tags=["ingestion"],
        responses={**AUTH_RESPONSES, 404: _error("No such tenant")},
    )
    def ingest(tenant_id: TenantId, body: EventsRequest, principal: Caller) -> IngestSummary:
        """Signed learning events; each is verified against its source's key before it is accepted."""
        return ingestor.ingest_objects(principal, tenant_id, body.events, source="http")

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics_endpoint() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    return app
