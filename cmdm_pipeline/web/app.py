"""The workbench application: ``create_app(config)`` wires the snapshot, the decision store, auth and the routes.

Routes are ``async`` on purpose: they run one at a time on the event loop, so the snapshot's in-memory
DuckDB connection is never used by two threads at once (each query takes milliseconds).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import traceback
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.decision_store import DecisionStore, DecisionStoreError
from cmdm_pipeline.web.snapshot import MANIFEST, Snapshot, SnapshotMissingError, load_snapshot, snapshot_folder
from cmdm_pipeline.web.views import ViewError

log = logging.getLogger("cmdm.web")
HERE = Path(__file__).parent
MAX_BODY_BYTES = 64 * 1024
SECRET_ENV = "CMDM_WEB_SESSION_SECRET"  # noqa: S105 - the name of a variable, not a secret
#: How often (at most) a request looks whether a run published a new snapshot.
RELOAD_CHECK_S = 3.0


class SnapshotHolder:
    """The current snapshot, reloaded when ``manifest.json`` changes (looked at most every few seconds),
    with a per-snapshot cache for what is costly to build (the resolve index)."""

    def __init__(self, config: ProjectConfig, fixed: Snapshot | None = None, check_every_s: float = RELOAD_CHECK_S) -> None:
        self.config = config
        self.folder = snapshot_folder(config.warehouse_path)
        self.check_every_s = check_every_s
        self._snapshot = fixed
        self._fixed = fixed is not None
        self._mtime: float | None = None
        self._checked = 0.0
        self.cache: dict[str, Any] = {}

    def get(self) -> Snapshot:
        if self._fixed:
            assert self._snapshot is not None
            return self._snapshot
        now = time.monotonic()
        if self._snapshot is not None and now - self._checked < self.check_every_s:
            return self._snapshot
        self._checked = now
        try:
            mtime = (self.folder / MANIFEST).stat().st_mtime
        except FileNotFoundError:
            if self._snapshot is not None:
                return self._snapshot  # keep serving the last one; a run is replacing it
            raise SnapshotMissingError(f"{self.folder / MANIFEST}: no workbench snapshot yet; run `cmdm run` first") from None
        if self._snapshot is None or mtime != self._mtime:
            from cmdm_pipeline.protect.keys.kek import load_keyring

            try:
                loaded = load_snapshot(self.folder, load_keyring(self.config))
            except SnapshotMissingError:
                if self._snapshot is not None:
                    return self._snapshot
                raise
            if self._snapshot is not None:
                self._snapshot.con.close()
            self._snapshot, self._mtime, self.cache = loaded, mtime, {}
            log.info("loaded workbench snapshot of run %s (%s)", loaded.run_id, loaded.publication)
        return self._snapshot


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413, by its Content-Length or while it streams."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _too_large(scope, send, self.limit)
            return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking)
        except _TooLarge:
            if not started:
                await _too_large(scope, send, self.limit)


class _TooLarge(Exception):
    pass


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    response = JSONResponse({"detail": f"body: larger than {limit // 1024} KB"}, status_code=413)
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class SecurityHeaders:
    """No caching of pages that may show personal values; no framing; scripts only from this server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        strict_csp = not path.startswith(("/docs", "/quality/", "/match/"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"no-referrer")]
                if not path.startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                if strict_csp:
                    headers.append((b"content-security-policy",
                                    b"default-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(config: ProjectConfig, snapshot: Snapshot | None = None, session_secret: str | None = None) -> FastAPI:
    """The workbench; ``snapshot`` fixes the data (tests), else the published one is read and reloaded."""
    from cmdm_pipeline.web import api, pages

    app = FastAPI(title="cmdm workbench and resolve API", version="1", docs_url=None, redoc_url=None,
                  description="Resolve a customer against the master and read golden records through a lens. "
                  "Authenticate with `Authorization: Bearer <token>` (`cmdm serve --new-token NAME`).")
    app.state.config = config
    app.state.snapshots = SnapshotHolder(config, snapshot)
    app.state.store = DecisionStore(config.decision_store_path)
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)
    _error_handlers(app)
    secret = session_secret or os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32)
    # The cookie outlives the login by a day so an expired login is told as such (auth.session_user), not
    # silently dropped by the signature's own age check.
    app.add_middleware(SessionMiddleware, secret_key=secret, session_cookie="cmdm_session",
                       max_age=config.web.session_minutes * 60 + 86_400, same_site="strict",
                       https_only=config.web.base_url.startswith("https://"))
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit)
    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/healthz")) or "application/json" in request.headers.get("accept", "")


def _error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": message}, status_code=status, headers=headers)
    if request.headers.get("hx-request"):
        return HTMLResponse(f'<div class="error">{_escape(message)}</div>', status_code=status, headers=headers)
    if status == 401 and request.method == "GET" and not request.app.state.config.web.trusted_user_header:
        expired = "?expired=1" if message.startswith("session:") else ""
        return RedirectResponse(f"/login{expired}", status_code=303)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, "error.html", {"status": status, "message": message},
                                      status_code=status, headers=headers)


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = "path: no such page"
        return _error(request, exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own answer echoes the input back; a field name and what was expected is enough.
        problems = ["{}: {}".format(".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")),
                                    e.get("msg", "invalid")) for e in exc.errors()]
        return _error(request, 422, "; ".join(problems) or "request: invalid")

    @app.exception_handler(ViewError)
    async def view_error(request: Request, exc: ViewError) -> Response:
        return _error(request, exc.status, str(exc))

    @app.exception_handler(DecisionStoreError)
    async def store_error(request: Request, exc: DecisionStoreError) -> Response:
        return _error(request, 422, str(exc))

    @app.exception_handler(SnapshotMissingError)
    async def no_snapshot(request: Request, exc: SnapshotMissingError) -> Response:
        return _error(request, 503, "snapshot: no run has published the workbench data yet; run `cmdm run` first")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        # The message of an unexpected error might quote a value: only its type and where it happened are logged.
        where = "".join(traceback.format_tb(exc.__traceback__)[-3:])
        log.error("%s on %s %s\n%s", type(exc).__name__, request.method, request.url.path, where)
        return _error(request, 500, "server: internal error (logged without values); try again or tell the operator")
