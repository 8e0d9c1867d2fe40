"""The workbench's HTML pages: login, review queue, pair / cluster, master, accuracy, and the run's reports.

Every POST checks the session's CSRF token; deciding needs the steward role. A decision is validated
against the snapshot (both records must be in it) before anything is written.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.decision_store import DECISIONS, DecisionStore, actor
from cmdm_pipeline.web import accuracy, views
from cmdm_pipeline.web.auth import AuthError, User, check_csrf, check_password, csrf_token, session_user, start_session
from cmdm_pipeline.web.snapshot import Snapshot
from cmdm_pipeline.web.views import QueueFilter, ViewError, parse_key

router = APIRouter(include_in_schema=False)


def _config(request: Request) -> ProjectConfig:
    return request.app.state.config


def _store(request: Request) -> DecisionStore:
    return request.app.state.store


def _snapshot(request: Request) -> Snapshot:
    return request.app.state.snapshots.get()


def _user(request: Request) -> User:
    return session_user(request, _config(request).web)


def _steward(request: Request, csrf: str | None) -> User:
    user = _user(request)
    check_csrf(request, csrf)
    if not user.may_decide:
        raise AuthError(403, f"role: a {user.role} may look but not decide; ask a steward")
    return user


def _render(request: Request, name: str, user: User | None, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    flash = request.session.pop("flash", None) if user else None
    base = {"user": user, "csrf": csrf_token(request), "flash": flash, "run_id": None}
    try:
        base["run_id"] = _snapshot(request).run_id if user else None
    except FileNotFoundError:
        pass
    templates = request.app.state.templates
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)


def _log_reveal(request: Request, user: User, page: str, columns: list[str], records: list[str],
                master_id: str | None = None) -> None:
    _store(request).log_reveal(user.name, page, columns, records, master_id)


# --- login ---------------------------------------------------------------------------------------------


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/queue", status_code=303)


@router.get("/login")
async def login_form(request: Request, expired: int = 0) -> Response:
    if _config(request).web.trusted_user_header:
        return RedirectResponse("/queue", status_code=303)
    message = "session: your login expired; log in again" if expired else None
    return _render(request, "login.html", None, {"message": message})


@router.post("/login")
async def login(request: Request, username: str = Form(""), password: str = Form(""),
                csrf: str | None = Form(None)) -> Response:
    check_csrf(request, csrf)
    user = check_password(_config(request).web, username, password)
    if user is None or user.role == "api":
        return _render(request, "login.html", None, {"message": "login: unknown user or wrong password"}, 401)
    start_session(request, user)
    return RedirectResponse("/queue", status_code=303)


@router.post("/logout")
async def logout(request: Request, csrf: str | None = Form(None)) -> Response:
    check_csrf(request, csrf)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# --- review queue --------------------------------------------------------------------------------------


def _workspace(request: Request, user: User, filters: QueueFilter, page: int, at: int,
               message: str | None = None) -> dict[str, Any]:
    snapshot = _snapshot(request)
    config = _config(request)
    queue = views.queue_page(snapshot, _store(request).decisions(), actor(user.name), filters, page,
                             dt.datetime.now(dt.UTC))
    at = min(max(at, 0), max(len(queue.items) - 1, 0))
    current = queue.items[at] if queue.items else None
    compare = comparisons = None
    if current is not None:
        keys = [parse_key(current["key_l"], "l"), parse_key(current["key_r"], "r")]
        lens = views.lens_view(config, snapshot, user.role)
        compare = views.records_view(config, snapshot, lens, keys)
        comparisons = views.comparisons(snapshot.model, current["comparison_levels"])
        _log_reveal(request, user, "queue", compare.revealed, [current["key_l"], current["key_r"]])
    return {"queue": queue, "filters": filters, "at": at, "current": current, "compare": compare,
            "comparisons": comparisons, "prior": views.prior_weight(snapshot.model), "message": message,
            "bands": list(views.BANDS), "reasons": list(views.REASONS), "query": filters.query()}


@router.get("/queue")
async def queue(request: Request, reason: str | None = Query(None), source: str | None = Query(None),
                band: str | None = Query(None), page: int = Query(1, ge=1, le=100_000),
                at: int = Query(0, ge=0, le=10_000)) -> Response:
    user = _user(request)
    filters = QueueFilter(reason or None, source or None, band or None)
    context = _workspace(request, user, filters, page, at)
    template = "_workspace.html" if request.headers.get("hx-request") and request.headers.get("hx-target") == "workspace" \
        else "queue.html"
    return _render(request, template, user, context)


@router.post("/queue/decide")
async def queue_decide(request: Request, l: str = Form(...), r: str = Form(...), decision: str = Form(...),  # noqa: E741
                       reason: str = Form(""), csrf: str | None = Form(None), f_reason: str = Form(""),
                       f_source: str = Form(""), f_band: str = Form(""), page: int = Form(1), at: int = Form(0)) -> Response:
    user = _steward(request, csrf)
    filters = QueueFilter(f_reason or None, f_source or None, f_band or None)
    message = _decide_pair(request, user, l, r, decision, reason)
    return _render(request, "_workspace.html", user, _workspace(request, user, filters, page, at, message))


@router.post("/queue/undo")
async def queue_undo(request: Request, csrf: str | None = Form(None), f_reason: str = Form(""), f_source: str = Form(""),
                     f_band: str = Form(""), page: int = Form(1), at: int = Form(0)) -> Response:
    user = _steward(request, csrf)
    message = _undo(request, user)
    filters = QueueFilter(f_reason or None, f_source or None, f_band or None)
    return _render(request, "_workspace.html", user, _workspace(request, user, filters, page, at, message))


def _decide_pair(request: Request, user: User, left: str, right: str, decision: str, reason: str) -> str:
    if decision not in DECISIONS:
        raise ViewError("decision", f"expected one of {', '.join(DECISIONS)}", 422)
    if len(reason) > 500:
        raise ViewError("reason", "at most 500 characters", 422)
    a, b = parse_key(left, "l"), parse_key(right, "r")
    snapshot = _snapshot(request)
    if not views.pair_known(snapshot, a, b):
        raise ViewError("pair", "these records are not both in the current snapshot (a newer run replaced them?)", 409)
    masters = views.records(snapshot, [a, b])["master_id"].to_list()
    _store(request).decide([(a, b)], decision, user.name, reason or None, "pair", (masters[0], masters[1]))
    return f"Decided {decision}; the next run applies it (z undoes)."


def _undo(request: Request, user: User) -> str:
    store = _store(request)
    batch = store.last_batch(user.name)
    if batch is None:
        return "Nothing of yours to undo."
    count = store.undo(batch, user.name)
    return f"Undid your last decision ({count} pair{'s' if count != 1 else ''})."


@router.post("/undo")
async def undo(request: Request, csrf: str | None = Form(None), back: str = Form("/queue")) -> Response:
    user = _steward(request, csrf)
    request.session["flash"] = _undo(request, user)
    return RedirectResponse(back if back.startswith("/") and not back.startswith("//") else "/queue", status_code=303)


# --- pair and cluster ----------------------------------------------------------------------------------


@router.get("/pair")
async def pair(request: Request, l: str = Query(...), r: str = Query(...)) -> Response:  # noqa: E741
    user = _user(request)
    config, snapshot = _config(request), _snapshot(request)
    a, b = parse_key(l, "l"), parse_key(r, "r")
    item = views.queue_item(snapshot, a, b)
    lens = views.lens_view(config, snapshot, user.role)
    keys = [a, b]
    if item is not None and item["review_type"] == "cluster":
        keys = [parse_key(k, "records") for k in item["records"]]
    shown = views.records_view(config, snapshot, lens, keys)
    shown.rows.sort(key=lambda row: (row["master_id"] or "", row["record_key"]))  # grouped by today's master
    scores = views.pair_scores(snapshot, a, b)
    levels = (item or {}).get("comparison_levels") or (scores or {}).get("comparison_levels")
    candidates = views.other_candidates(snapshot, [a, b], keys)
    _log_reveal(request, user, "pair", shown.revealed, [row["record_key"] for row in shown.rows])
    return _render(request, "pair.html", user, {
        "l": l, "r": r, "item": item, "compare": shown, "scores": scores, "candidates": candidates,
        "comparisons": views.comparisons(snapshot.model, levels), "prior": views.prior_weight(snapshot.model),
    })


@router.post("/pair/decide")
async def pair_decide(request: Request, l: str = Form(...), r: str = Form(...), decision: str = Form(...),  # noqa: E741
                      reason: str = Form(""), csrf: str | None = Form(None)) -> Response:
    user = _steward(request, csrf)
    request.session["flash"] = _decide_pair(request, user, l, r, decision, reason)
    return RedirectResponse("/queue", status_code=303)


@router.post("/cluster/split")
async def cluster_split(request: Request, l: str = Form(...), r: str = Form(...),  # noqa: E741
                        records: Annotated[list[str] | None, Form()] = None,
                        reason: str = Form(""), csrf: str | None = Form(None)) -> Response:
    """Split the chosen records of a cluster item off the others: ``different`` between each chosen and each other."""
    user = _steward(request, csrf)
    snapshot = _snapshot(request)
    item = views.queue_item(snapshot, parse_key(l, "l"), parse_key(r, "r"))
    if item is None or item["review_type"] != "cluster":
        raise ViewError("pair", "not a cluster item of the current review queue", 409)
    members = list(item["records"])
    chosen = list(dict.fromkeys(records or []))
    if any(c not in members for c in chosen):
        raise ViewError("records", "every record to split off must belong to this cluster item", 422)
    rest = [m for m in members if m not in chosen]
    if not chosen or not rest:
        raise ViewError("records", "choose at least one record to split off, and leave at least one", 422)
    pairs = [(parse_key(c, "records"), parse_key(m, "records")) for c in chosen for m in rest]
    found = views.records(snapshot, [k for pair in pairs for k in pair])
    master_of = {f"{s}:{r}": m for s, r, m in found.select("source_system", "source_record_id", "master_id").iter_rows()}
    seen = [(master_of.get(views.key_text(a)), master_of.get(views.key_text(b))) for a, b in pairs]
    _store(request).decide(pairs, "different", user.name, reason or None, "split", seen)
    request.session["flash"] = f"Split {len(chosen)} record(s) off ({len(pairs)} decisions); the next run applies it."
    return RedirectResponse("/queue", status_code=303)


# --- master --------------------------------------------------------------------------------------------


@router.get("/masters")
async def find_master(request: Request, id: str = Query("")) -> Response:  # noqa: A002
    _user(request)
    if not id.strip():
        raise ViewError("id", "enter a master id", 422)
    if not views.master_exists(_snapshot(request), id.strip()):
        raise ViewError("id", "no such master in this snapshot")
    return RedirectResponse(f"/masters/{id.strip()}", status_code=303)


@router.get("/masters/{master_id}")
async def master(request: Request, master_id: str) -> Response:
    user = _user(request)
    config, snapshot = _config(request), _snapshot(request)
    shown = views.master_view(config, snapshot, views.lens_view(config, snapshot, user.role), master_id)
    _log_reveal(request, user, "master", shown.revealed, [row["record_key"] for row in shown.sources.rows], master_id)
    return _render(request, "master.html", user, {"m": shown})


@router.post("/masters/{master_id}/merge")
async def master_merge(request: Request, master_id: str, other: str = Form(""), reason: str = Form(""),
                       csrf: str | None = Form(None)) -> Response:
    user = _steward(request, csrf)
    other = other.strip()
    if not other:
        raise ViewError("other", "enter the master id to merge with", 422)
    a, b = views.merge_pair(_snapshot(request), master_id, other)
    _store(request).decide([(a, b)], "same", user.name, reason or None, "merge", (master_id, other))
    request.session["flash"] = f"Merge of {master_id} and {other} recorded; the next run makes them one master."
    return RedirectResponse(f"/masters/{master_id}", status_code=303)


@router.post("/masters/{master_id}/split")
async def master_split(request: Request, master_id: str, records: Annotated[list[str] | None, Form()] = None,
                       reason: str = Form(""),
                       csrf: str | None = Form(None)) -> Response:
    user = _steward(request, csrf)
    pairs = views.split_pairs(_snapshot(request), master_id, records or [])
    _store(request).decide(pairs, "different", user.name, reason or None, "split", (master_id, master_id))
    request.session["flash"] = f"Split recorded ({len(pairs)} decisions); the next run moves the records to another master."
    return RedirectResponse(f"/masters/{master_id}", status_code=303)


# --- accuracy ------------------------------------------------------------------------------------------


@router.get("/accuracy")
async def accuracy_page(request: Request) -> Response:
    """The master and the model judged against the stewards' decisions: counts and figures only, no record."""
    user = _user(request)
    report = accuracy.report_for(_config(request), _snapshot(request), _store(request).decisions())
    return _render(request, "accuracy.html", user, {"a": report, "min_labels": accuracy.MIN_LABELS,
                                                    "min_each": accuracy.MIN_EACH})


# --- the run's reports ---------------------------------------------------------------------------------


def _serve_folder(request: Request, folder: Path, path: str, what: str) -> Response:
    _user(request)
    root = folder.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        raise ViewError("path", "outside the folder", 404)
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        raise ViewError("path", f"no such file in the {what} (has a run written them yet?)", 404)
    return FileResponse(target)


@router.get("/quality/data-docs/{path:path}")
async def data_docs(request: Request, path: str) -> Response:
    from cmdm_pipeline.quality.docs import docs_folder

    return _serve_folder(request, docs_folder(_config(request).warehouse_path), path, "quality Data Docs")


@router.get("/match/charts/{path:path}")
async def match_charts(request: Request, path: str) -> Response:
    return _serve_folder(request, charts_folder(_config(request)), path, "match charts")


def charts_folder(config: ProjectConfig) -> Path:
    """Where the match asset saves Splink's charts (assets/match.py)."""
    return config.warehouse_path.parent / "reports" / "splink"
