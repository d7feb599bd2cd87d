"""The serving HTTP API: predictions per tenant from the cached champion, and learning-event ingestion.

Every ``/v1/`` operation needs ``Authorization: Bearer <API token>`` (``evolution users token create``): a missing,
malformed, unknown, revoked or expired token gets 401 with ``WWW-Authenticate``, before the request body is even
read. The token's user acts with their role on the tenant named in the path; whether that role may do the operation
is decided by the service layer (``authorize`` in the predictor and the ingestor), whose refusal this layer turns
into 403. It never re-implements the permission table. An operation only admins may do (defining a model) asks the
same table before the body is validated, so that a refusal says nothing about the body.

Request bodies are limited per operation (:mod:`evolution.serving.body_limits`; ``EVOLUTION_SERVE_MAX_PREDICT_BYTES``,
default 1 MiB, and ``EVOLUTION_SERVE_MAX_INGEST_BYTES``, default 16 MiB; a model definition, 256 KiB): one announced larger gets 413 before its
token is checked (the limits are in the public schema, so the answer tells an anonymous caller nothing new), one
streamed larger gets 413 once the limit is passed; neither is read further.

Open without a token: ``/healthz`` (liveness, no data), ``/openapi.json`` and ``/docs`` (the schema), and
``/metrics``: Prometheus counters and histograms whose only tenant data are bounded labels (tenant ids and model
names this process has served; a request naming anything else is counted under ``_unknown``, and unauthenticated
requests are not counted per tenant at all), so a scraper needs no credential and no request can grow the label
set. Where tenant ids themselves are confidential, keep the port behind the NetworkPolicy that admits only
Prometheus.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidatorFunctionWrapHandler, WrapValidator, field_validator
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evolution.data.event_schema import IngestSummary
from evolution.data.events import EventIngestor
from evolution.errors import EvolutionError, InvalidInput, NotFound, PermissionDenied
from evolution.governance.users import UserAccess
from evolution.observability import metrics
from evolution.observability.tracing import span
from evolution.registry.model_definitions import (
    MAX_REASON_CHARS,
    CommandTrainer,
    DefinitionView,
    ModelDefinition,
    ModelDefinitions,
    describe_error,
    unstorable,
)
from evolution.registry.tenants import TENANT_ID_PATTERN
from evolution.registry.versions import MODEL_NAME_PATTERN
from evolution.security import Action, Principal, authorize
from evolution.serving.auth import AuthenticationUnavailable, TokenAuthenticator
from evolution.serving.body_limits import BodyLimitMiddleware, BodyLimits
from evolution.serving.predictor import (
    RETRY_AFTER_S,
    CurrentModels,
    ModelUnavailable,
    PredictInstance,
    Predictor,
    PredictOut,
    UnknownFeatures,
)

MAX_INSTANCES = 1000
# A request of at most this many rows, of a model answered from memory, is answered on the event loop.
INLINE_MAX_INSTANCES = 8
MAX_EVENTS = 5000
API_PREFIX = "/v1/"
PREDICT_PATH = "/v1/tenants/{tenant_id}/models/{model_name}/predict"
EVENTS_PATH = "/v1/tenants/{tenant_id}/events"
DEFINITION_PATH = "/v1/tenants/{tenant_id}/models/{model_name}/definition"
MAX_DEFINITION_BYTES = 256 * 1024
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

    error: str = Field(
        description="e.g. PermissionDenied, NotFound, InvalidInput, Unauthorized, ContentTooLarge"
    )
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
    # Any JSON value per element, not an object: one malformed element is that element's reject, not the batch's.
    events: list[Any] = Field(
        min_length=1,
        max_length=MAX_EVENTS,
        description="Signed learning events, each an object (tenant, request_id, event_time, features, actual, "
        "source_key_id, signature). Each element is checked on its own: one that fails (not an object "
        "included) is rejected with a reason naming its position and field, and kept in the dead-letter table; "
        "the others are accepted. records_read = accepted + duplicate + rejected.",
    )


class DefinitionRequest(ModelDefinition):
    """The model's whole definition (what it leaves out takes its default, not the previous revision's value), and
    why it changes."""

    reason: str = Field(
        default="", max_length=MAX_REASON_CHARS, description="Why; recorded in the audit log."
    )

    @field_validator("reason")
    @classmethod
    def _storable(cls, reason: str) -> str:
        why = unstorable(reason)
        if why:
            raise ValueError(why)
        return reason

    def definition(self) -> ModelDefinition:
        return ModelDefinition.model_validate(self.model_dump(exclude={"reason"}))


def _strictly(value: Any, _lax: ValidatorFunctionWrapHandler) -> DefinitionRequest:
    """What the schema says is what is accepted: "5" is no number and true is no 1 (a definition says what runs)."""
    return DefinitionRequest.model_validate(value, strict=True)


DefinitionBody = Annotated[DefinitionRequest, WrapValidator(_strictly)]


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


def _too_large(limit: int, setting: str) -> dict[str, Any]:
    return _error(
        f"The request body is larger than {limit} bytes (the operator's {setting}); nothing was read"
    )


def _count_prediction(request: Request, predictor: Predictor, status: str) -> None:
    """Count an authenticated prediction request that was refused or failed. Its tenant and model become labels
    only when this process serves them and the caller has a role on the tenant; the rest are counted under
    UNKNOWN_LABEL, so no request can add a label value."""
    access: UserAccess | None = getattr(request.state, "access", None)
    if access is None or not request.url.path.endswith("/predict"):
        return
    tenant, model = request.path_params.get("tenant_id"), request.path_params.get("model_name")
    labels = (metrics.UNKNOWN_LABEL, metrics.UNKNOWN_LABEL)
    if isinstance(tenant, str) and isinstance(model, str) and access.role_for(tenant) is not None:
        labels = predictor.metric_labels(tenant, model)
    metrics.count_inference(*labels, "none", status)


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="apiToken",
    description="An API token (`evo_…`); it acts with its user's role on the tenant in the path.",
)


async def _caller(  # async: no I/O here, and a sync dependency would cost every request a thread hop
    request: Request,
    tenant_id: TenantId,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> Principal:
    """The authenticated user (checked by the middleware) acting on ``tenant_id`` with their role there."""
    access: UserAccess = request.state.access
    return access.principal(tenant_id)  # no role on the tenant: PermissionDenied -> 403


Caller = Annotated[Principal, Security(_caller)]


def _definer(principal: Caller, tenant_id: TenantId) -> Principal:
    """The caller, if the permission table lets them define the tenant's models (asked before the body is read)."""
    return authorize(principal, Action.DEFINE_MODEL, tenant_id)


Definer = Annotated[Principal, Security(_definer)]


class TokenGate:
    """Authenticates every /v1/ request before its body is read, and counts prediction requests that fail.

    A plain ASGI middleware (Starlette's ``BaseHTTPMiddleware`` relays the body through a task group and a stream:
    about a millisecond per request on this path). The caller's access is left in ``scope["state"]``, where
    ``request.state.access`` reads it."""

    def __init__(self, app: ASGIApp, authenticator: TokenAuthenticator, predictor: Predictor) -> None:
        self._app = app
        self._authenticator = authenticator
        self._predictor = predictor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request = Request(scope)
        if scope["path"].startswith(API_PREFIX):
            refusal = await self._authenticate(request)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        # Availability counts server-side failures of prediction requests; a client's mistake (4xx) is not one.
        status = 0

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_and_see)
        except Exception:
            _count_prediction(request, self._predictor, "error")
            raise
        if status >= 500:
            _count_prediction(request, self._predictor, "error")
        elif status >= 400:
            _count_prediction(request, self._predictor, "client_error")

    async def _authenticate(self, request: Request) -> JSONResponse | None:
        """None when the request may go on (its access recorded), else the refusal to send."""
        token = _bearer_token(request)
        if token is None:
            return _unauthorized("this operation needs an API token: Authorization: Bearer evo_…", False)
        # A token checked recently is answered from the cache on the event loop; only a lookup in the registry
        # goes to a worker thread (a thread hop per request costs more than the cached check itself).
        cached = self._authenticator.cached(token)
        try:
            request.state.access = (
                cached
                if cached is not None
                else await run_in_threadpool(self._authenticator.authenticate, token)
            )
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
        return None


def create_app(
    predictor: Predictor,
    ingestor: EventIngestor,
    authenticator: TokenAuthenticator,
    limits: BodyLimits | None = None,
    *,
    definitions: ModelDefinitions | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> FastAPI:
    """The API; the model-definition operations are offered when ``definitions`` is given (the serving process
    gives it). ``on_shutdown`` runs, in a worker thread, once the server has stopped taking requests: uvicorn
    re-raises the SIGTERM it caught once it has shut down, so code after ``uvicorn.run`` never runs on SIGTERM."""
    limits = limits or BodyLimits()
    metrics.export_inference_availability()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            await run_in_threadpool(on_shutdown)

    app = FastAPI(
        lifespan=lifespan,
        title="Controlled Evolution serving API",
        version="1",
        description="Predictions from each tenant's verified champion (with shadow and canary candidates), "
        "and ingestion of signed learning events. Every /v1/ operation needs an API token "
        "(`Authorization: Bearer evo_…`, created with `evolution users token create`).",
    )

    app.add_middleware(TokenGate, authenticator=authenticator, predictor=predictor)

    # Added after the middleware above, so it runs first: a body announced too large is refused before anything
    # else is done for it (no token lookup), and a refusal that leaves a body unread closes the connection.
    app.add_middleware(
        BodyLimitMiddleware,
        limits={
            PREDICT_PATH: limits.predict,
            EVENTS_PATH: limits.ingest,
            DEFINITION_PATH: MAX_DEFINITION_BYTES,
        },
        default=limits.predict,
    )

    @app.exception_handler(EvolutionError)
    async def _domain_error(_request: Request, error: EvolutionError) -> JSONResponse:
        status = next((code for kind, code in STATUS_OF.items() if isinstance(error, kind)), 409)
        retry = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        content: dict[str, Any] = {"error": error.error_type, "detail": str(error)}
        if isinstance(error, UnknownFeatures):
            content["errors"] = error.problems
        return JSONResponse(status_code=status, content=content, headers=retry)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for e in error.errors():
            loc, msg = describe_error(e)  # in words, and without a trainer's kind in the location
            problems.append({"loc": [str(p) for p in loc], "msg": msg, "type": str(e.get("type"))})
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
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        PREDICT_PATH,
        response_model=PredictResponse,
        tags=["predictions"],
        responses={
            **AUTH_RESPONSES,
            404: _error("No champion to serve for this tenant and model"),
            413: _too_large(limits.predict, "EVOLUTION_SERVE_MAX_PREDICT_BYTES"),
            422: _error(
                "The request does not match the schema, or an instance names a feature that no serving model "
                "was trained on (nor an identifier column of the tenant); `errors` names each problem"
            ),
        },
    )
    async def predict(
        tenant_id: TenantId,
        model_name: ModelName,
        body: PredictRequest,
        principal: Caller,
    ) -> Response:
        """Forecasts from the champion (a canary candidate serves its share; a shadow candidate scores alongside).

        An absent or null feature is missing (the model takes the branch it learned for missing values; an unseen
        category counts as missing); a feature no serving model knows is refused with 422 naming it."""

        def answer() -> Response:
            with span("Serving", tenant=tenant_id, model=model_name, instances=len(body.instances)):
                outs = predictor.predict(principal, tenant_id, model_name, body.instances)
            # Serialized here from the model we built: FastAPI would validate it all over again first.
            return Response(
                PredictResponse(predictions=outs).model_dump_json(), media_type="application/json"
            )

        # A few rows of a model already loaded are answered on the event loop: about a millisecond of work, and
        # no wait (records are written behind). A thread hop costs more than that on a busy machine, since the
        # worker thread must win the GIL from the loop. Anything that may read the registry or take long goes to
        # a worker thread.
        inline = len(body.instances) <= INLINE_MAX_INSTANCES
        if inline and predictor.answers_without_io(tenant_id, model_name):
            return answer()
        return await run_in_threadpool(answer)

    @app.get(
        "/v1/tenants/{tenant_id}/models/{model_name}",
        response_model=CurrentModels,
        tags=["predictions"],
        responses={**AUTH_RESPONSES, 404: _error("No such tenant, or no version of this model")},
    )
    def current(tenant_id: TenantId, model_name: ModelName, principal: Caller) -> CurrentModels:
        """Which versions serve this model now (champion, and the candidate in shadow or canary, if any)."""
        return predictor.current(principal, tenant_id, model_name)

    @app.post(
        EVENTS_PATH,
        response_model=IngestSummary,
        tags=["ingestion"],
        responses={
            **AUTH_RESPONSES,
            404: _error("No such tenant"),
            413: _too_large(limits.ingest, "EVOLUTION_SERVE_MAX_INGEST_BYTES"),
        },
    )
    def ingest(tenant_id: TenantId, body: EventsRequest, principal: Caller) -> IngestSummary:
        """Signed learning events; each is verified against its source's key before it is accepted."""
        return ingestor.ingest_objects(principal, tenant_id, body.events, source="http")

    if definitions is not None:
        _definition_routes(app, definitions)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics_endpoint() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    return app


def _definition_routes(app: FastAPI, definitions: ModelDefinitions) -> None:
    @app.put(
        DEFINITION_PATH,
        response_model=DefinitionView,
        tags=["model definitions"],
        responses={
            **AUTH_RESPONSES,
            201: {"model": DefinitionView, "description": "The model's first definition: revision 1"},
            403: _error(
                "The token's user is not an admin of this tenant, or the trainer is a command (which runs on the "
                "worker's host: the platform operator's CLI only)"
            ),
            404: _error("No such tenant"),
            413: _error(f"The request body is larger than {MAX_DEFINITION_BYTES} bytes; nothing was read"),
            422: _error("A field of the definition is bad (`errors` names each one), or the body is not one"),
        },
    )
    def define(
        tenant_id: TenantId,
        model_name: ModelName,
        principal: Definer,
        body: DefinitionBody,
        response: Response,
    ) -> DefinitionView:
        """Admins: a new revision of the model's definition (features, target, loss, hyperparameters, trainer),
        audited with the revision before it. The next retraining uses it; a running one keeps the revision it
        started with. 201 for the model's first definition, 200 for a later one. A `command` trainer is refused
        here (403): it runs on the worker's own host, which a tenant's admin does not control; the platform's
        operator defines one with the CLI on that host, and tenants use `image` trainers."""
        definition = body.definition()
        if isinstance(definition.trainer, CommandTrainer):
            raise PermissionDenied(
                "a command trainer runs on the worker's own host: only the platform's operator may define one, "
                "with `evolution model define` on that host; over the API, use an image trainer "
                "(an OCI image pinned by digest, run as a Kubernetes Job)"
            )
        view = definitions.define(principal, tenant_id, model_name, definition, body.reason)
        if view.revision == 1:
            response.status_code = 201
        return view

    @app.get(
        DEFINITION_PATH,
        response_model=DefinitionView,
        tags=["model definitions"],
        responses={**AUTH_RESPONSES, 404: _error("No such tenant")},
    )
    def definition(tenant_id: TenantId, model_name: ModelName, principal: Caller) -> DefinitionView:
        """The model's definition in force: who defined it and when (revision 0: never defined, the built-in
        default applies)."""
        return definitions.current(principal, tenant_id, model_name)
