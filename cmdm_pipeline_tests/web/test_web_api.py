"""The HTTP API on a hand-made snapshot: bearer tokens, a golden record through a lens, health, OpenAPI
docs served offline, and every bad input of a resolve call refused with the field named and nothing written."""

from __future__ import annotations

import json

import pytest

from cmdm_pipeline.decision_store import read_reveals
from cmdm_pipeline_tests.web.conftest import API_TOKEN

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def test_healthz_names_the_run_of_the_snapshot(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    assert bench.client.get("/healthz").json()["run_id"] == "in-memory"


def test_a_golden_record_is_read_through_the_clients_lens(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    response = bench.client.get("/api/v1/masters/M3", headers=AUTH)
    assert response.status_code == 200
    record = response.json()["record"]
    assert record == {"master_id": "M3", "first_name": "Alan", "email": "a***@e***.org", "country": "GB"}
    reveals = read_reveals(bench.config.decision_store_path).to_dicts()
    assert [(r["viewed_by"], r["page"], r["master_id"], json.loads(r["columns"])) for r in reveals] == [
        ("web:shop-api", "api/masters", "M3", ["first_name"])]


@pytest.mark.parametrize(("path", "headers", "status", "field"), [
    ("/api/v1/masters/M3", {}, 401, "token:"),
    ("/api/v1/masters/M3", {"Authorization": "Bearer wrong"}, 401, "token:"),
    ("/api/v1/masters/M3?lens=stewardship", AUTH, 403, "lens:"),
    ("/api/v1/masters/M3?lens=nope", AUTH, 404, "lens:"),
    ("/api/v1/masters/M404", AUTH, 404, "master_id:"),
    ("/api/v1/masters/M2", AUTH, 404, "master_id:"),  # US: outside the service lens, told like an unknown id
])
def test_a_master_request_that_may_not_be_answered_is_refused(workbench, path, headers, status, field) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    response = bench.client.get(path, headers=headers)
    assert response.status_code == status and response.json()["detail"].startswith(field)
    assert read_reveals(bench.config.decision_store_path).is_empty()


@pytest.mark.parametrize(("body", "content_type", "status", "field"), [
    (b'{"first_name": "Ada",', "application/json", 400, "body: malformed JSON"),
    (b"\xff\xfe", "application/json", 400, "body: malformed JSON"),
    (b'["Ada"]', "application/json", 422, "body:"),
    (b'{"first_name": "Ada", "shoe_size": 42}', "application/json", 422, "shoe_size: unknown attribute"),
    (b'{"first_name": {"given": "Ada"}}', "application/json", 422, "first_name: expected a string"),
    (b'{"email": ["a@b.c"]}', "application/json", 422, "email: expected a string"),
    (json.dumps({"last_name": "x" * 1001}).encode(), "application/json", 422, "last_name: longer than"),
    (b'{"first_name": null}', "application/json", 422, "body: the record has no values"),
    (b"first_name=Ada", "application/x-www-form-urlencoded", 415, "body: send Content-Type: application/json"),
])
def test_bad_resolve_input_is_refused_naming_the_field(workbench, body, content_type, status, field) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    response = bench.client.post("/api/v1/resolve", content=body, headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(field)
    assert "Ada" not in response.text and "a@b.c" not in response.text  # no value echoed back
    assert read_reveals(bench.config.decision_store_path).is_empty()


def test_an_oversized_body_is_refused_before_it_is_read(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    big = json.dumps({"first_name": "A" * 70_000}).encode()
    response = bench.client.post("/api/v1/resolve", content=big, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["detail"].startswith("body: larger than 64 KB")

    def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: counted while it streams
        for _ in range(80):
            yield b"x" * 1024

    streamed = bench.client.post("/api/v1/resolve", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_resolve_needs_a_token_and_a_valid_limit(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    body = {"content": b'{"first_name": "Ada"}', "headers": {"Content-Type": "application/json"}}
    assert bench.client.post("/api/v1/resolve", **body).status_code == 401
    bad_limit = bench.client.post("/api/v1/resolve?limit=0", content=body["content"], headers={**AUTH, **body["headers"]})
    assert bad_limit.status_code == 422 and bad_limit.json()["detail"].startswith("limit:")


def test_the_openapi_docs_load_nothing_from_a_cdn(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    docs = bench.client.get("/docs").text
    assert "/static/swagger/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert bench.client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    spec = bench.client.get("/openapi.json").json()
    assert {"/api/v1/resolve", "/api/v1/masters/{master_id}", "/healthz"} <= set(spec["paths"])
    assert "/queue" not in spec["paths"]
