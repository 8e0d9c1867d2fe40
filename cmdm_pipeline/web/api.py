"""The HTTP API: resolve one customer against the master, read a golden record through a lens, health.

Clients authenticate with ``Authorization: Bearer <token>``. Bodies are limited (app.BodyLimit); every
refusal is a 4xx whose message names the field, never a value, and nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.lenses.build import build_lens
from cmdm_pipeline.web import views
from cmdm_pipeline.web.auth import AuthError, User, bearer_user
from cmdm_pipeline.web.snapshot import Snapshot, batch_calibration
from cmdm_pipeline.web.views import ViewError

router = APIRouter()
_bearer = HTTPBearer(auto_error=False, description="The token `cmdm serve --new-token NAME` printed.")
#: Columns a resolve request may carry besides the schema's attributes.
EXTRA_FIELDS = ("party_type", "record_type")
MAX_VALUE_CHARS = 1000
MAX_LIMIT = 50


def _client(request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> User:
    # The dependency on HTTPBearer puts the scheme into the OpenAPI document (Swagger's Authorize button).
    return bearer_user(request, request.app.state.config.web)


def _config(request: Request) -> ProjectConfig:
    config: ProjectConfig = request.app.state.config
    return config


def _snapshot(request: Request) -> Snapshot:
    snapshot: Snapshot = request.app.state.snapshots.get()
    return snapshot


@router.get("/healthz", tags=["health"], summary="Liveness, and the run whose snapshot is served")
async def healthz(request: Request) -> JSONResponse:
    snapshot = _snapshot(request)
    return JSONResponse({"status": "ok", "run_id": snapshot.run_id, "published_at": snapshot.published_at})


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    # Swagger UI's files are served from this package (static/swagger), not from a CDN: the machine may be offline.
    return get_swagger_ui_html(openapi_url="/openapi.json", title="cmdm API", swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                               swagger_css_url="/static/swagger/swagger-ui.css", swagger_favicon_url="/static/favicon.svg")


@router.get("/api/v1/masters/{master_id}", tags=["masters"], summary="A golden record through a lens")
async def master(request: Request, master_id: str, client: Annotated[User, Depends(_client)],
                 lens: str | None = Query(None, description="Lens name; default: the lens of the client's role "
                                          "(web.role_lenses).")) -> JSONResponse:
    config, snapshot = _config(request), _snapshot(request)
    allowed = config.web.role_lenses.get(client.role)  # type: ignore[call-overload]
    name = lens or allowed
    chosen = next((candidate for candidate in config.lenses if candidate.name == name), None) if name else None
    if chosen is None:
        raise ViewError("lens", "no lens of that name in cmdm.yaml" if name else f"role {client.role} has no lens "
                        "(web.role_lenses)", 404 if name else 403)
    if chosen.name != allowed:
        raise AuthError(403, f"lens: role {client.role} may use lens {allowed or '(none)'} only")
    if len(master_id) > 64:
        raise ViewError("master_id", "too long", 422)
    golden = snapshot.con.sql("SELECT * FROM golden_customers WHERE master_id = $m", params={"m": master_id}).pl()
    consent = snapshot.con.sql("SELECT * FROM consent_current WHERE master_id = $m", params={"m": master_id}).pl()
    shown = build_lens(golden, consent, chosen, config.customer_schema, snapshot.token_keys.get(chosen.name)) \
        if golden.height else golden
    if shown.is_empty():  # unknown, or not shown by this lens: the same answer, so a lens does not tell who exists
        raise ViewError("master_id", f"no master of that id is visible through lens {chosen.name}")
    from cmdm_pipeline.protect.lenses.build import revealed_pii

    revealed = [c for c in revealed_pii(chosen, config.customer_schema) if c in shown.columns]
    request.app.state.store.log_reveal(client.name, "api/masters", revealed, [], master_id)
    return JSONResponse(jsonable_encoder({"lens": chosen.name, "run_id": snapshot.run_id, "record": shown.row(0, named=True)}))


@router.post("/api/v1/resolve", tags=["resolve"], summary="Find the masters one customer record belongs to",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
                 "example": {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.org", "country": "GB"}}}}}})
async def resolve(request: Request, client: Annotated[User, Depends(_client)],
                  limit: int = Query(5, ge=1, le=MAX_LIMIT)) -> JSONResponse:
    """One customer record (schema attribute names) -> the standardised record, the issues found, and the
    candidate masters with evidence, match probability and the comparison levels that decided it."""
    config, snapshot = _config(request), _snapshot(request)
    record = parse_record(await request.body(), request.headers.get("content-type", ""), config)
    try:
        from cmdm_pipeline.web.resolve import ResolveIndex, ResolveInputError
    except ImportError:
        raise ViewError("resolve", "the resolver is not installed in this build", 503) from None
    holder = request.app.state.snapshots
    index = holder.cache.get("resolve")
    if index is None:  # built once per snapshot (a new run's snapshot empties the cache)
        records = snapshot.con.sql("SELECT v.*, x.master_id FROM validated_customers v LEFT JOIN customer_xref x "
                                   "USING (source_system, source_record_id)").pl()
        if snapshot.model is None:
            raise ViewError("resolve", "the snapshot has no match model (the run trained none)", 503)
        index = holder.cache["resolve"] = await run_in_threadpool(
            ResolveIndex.build, records, config, snapshot.model, **batch_calibration(snapshot))
    try:
        # Tens of milliseconds of Polars and DuckDB work: off the event loop, so other requests are served meanwhile.
        resolution = await run_in_threadpool(index.resolve, record, limit)
    except ResolveInputError as exc:
        field = exc.field or "record"
        message = str(exc).removeprefix(f"{field}:").strip() or "invalid value"
        raise ViewError(field, message, 422) from None
    body = _resolution_json(resolution, views.lens_view(config, snapshot, client.role))
    revealed = body.pop("_revealed")
    request.app.state.store.log_reveal(client.name, "api/resolve", revealed,
                                       [c["master_id"] for c in body.get("candidates", []) if c.get("master_id")])
    return JSONResponse(jsonable_encoder({"run_id": snapshot.run_id, **body}))


def parse_record(raw: bytes, content_type: str, config: ProjectConfig) -> dict[str, Any]:
    """The request body as one record: a JSON object of known attributes with scalar values (else ViewError)."""
    if "json" not in content_type.lower():
        raise ViewError("body", "send Content-Type: application/json", 415)
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ViewError("body", f"malformed JSON{where}", 400) from None
    if not isinstance(document, dict):
        raise ViewError("body", "expected a JSON object of attribute names to values", 422)
    known = set(config.customer_schema.attributes) | set(EXTRA_FIELDS)
    unknown = sorted(k for k in document if k not in known)
    if unknown:
        raise ViewError(unknown[0][:64], "unknown attribute (not in the customer schema)", 422)
    for name, value in document.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ViewError(name, "expected a string, number, boolean or null", 422)
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            raise ViewError(name, f"longer than {MAX_VALUE_CHARS} characters", 422)
    if not any(v not in (None, "") for v in document.values()):
        raise ViewError("body", "the record has no values to resolve by", 422)
    return document


def _resolution_json(resolution: Any, lens: views.LensView) -> dict[str, Any]:
    """The resolver's answer as JSON, each candidate's record through the client's lens."""
    body = dataclasses.asdict(resolution) if dataclasses.is_dataclass(resolution) and not isinstance(resolution, type) \
        else dict(resolution)
    revealed: set[str] = set()
    for candidate in body.get("candidates", []):
        record = candidate.get("record")
        if isinstance(record, dict) and record:
            frame = pl.DataFrame([record])
            treated, shown = views.through_lens(frame, lens, [c for c in frame.columns if c in lens.pii])
            candidate["record"] = treated.row(0, named=True)
            revealed.update(shown)
    body["_revealed"] = sorted(revealed)
    return body
