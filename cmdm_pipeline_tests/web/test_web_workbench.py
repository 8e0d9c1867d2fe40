"""The workbench pages through FastAPI's TestClient on a hand-made snapshot: login, CSRF, queue, decisions,
lenses, master actions, and what is refused (with nothing written)."""

from __future__ import annotations

import json
import re
import time

import polars as pl
import pytest

from cmdm_pipeline.decision_store import read_reveals
from cmdm_pipeline.protect.lenses.build import tokenise
from cmdm_pipeline_tests.web.conftest import TOKEN_KEY, Workbench, tiny_snapshot


def _decisions(bench: Workbench) -> list[dict]:  # type: ignore[type-arg]
    return bench.client.app.state.store.decisions().to_dicts()  # type: ignore[attr-defined,no-any-return]


def _counts(html: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r'id="count-(\w+)">(\d+)<', html)}


def test_pages_need_a_login_and_a_right_password(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    response = bench.client.get("/queue", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert bench.login(password="wrong").status_code == 401
    assert bench.login(user="nobody", password="x").status_code == 401
    assert bench.login(user="shop-api", password="x").status_code == 401  # an API client has no password
    ok = bench.login()
    assert ok.status_code == 303 and ok.headers["location"] == "/queue"
    assert bench.client.get("/queue").status_code == 200


def test_a_post_without_the_csrf_token_is_refused_and_writes_nothing(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login()
    refused = bench.client.post("/queue/decide", data={"l": "crm:1", "r": "crm:2", "decision": "same"},
                                headers={"HX-Request": "true"})
    assert refused.status_code == 403 and "csrf" in refused.text
    wrong = bench.client.post("/queue/decide", data={"l": "crm:1", "r": "crm:2", "decision": "same"},
                              headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403
    # The login form needs it too (login CSRF).
    assert bench.client.post("/login", data={"username": "steward", "password": "pw-steward"}).status_code == 403
    assert _decisions(bench) == []


def test_the_queue_counts_filters_and_pages_open_items(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login()
    page = bench.client.get("/queue")
    assert _counts(page.text) == {"open": 2, "today": 0, "mine": 0}
    assert 'name="l" value="crm:1"' in page.text  # the highest priority item is the current one
    linked = bench.client.get("/queue", params={"reason": "linked"})
    assert 'name="l" value="crm:2"' in linked.text and "1</b> match the filter" in linked.text
    by_source = bench.client.get("/queue", params={"source": "shop"})
    assert 'name="l" value="crm:2"' in by_source.text and 'value="crm:1"' not in by_source.text
    weak = bench.client.get("/queue", params={"band": "likely"})
    assert 'name="l" value="crm:1"' in weak.text and 'name="l" value="crm:2"' not in weak.text
    fragment = bench.client.get("/queue", params={"band": "strong"}, headers={"HX-Request": "true", "HX-Target": "workspace"})
    assert fragment.text.lstrip().startswith('<div id="workspace">')
    bad = bench.client.get("/queue", params={"band": "huge"})
    assert bad.status_code == 422 and "band: expected one of" in bad.text
    assert bench.client.get("/queue", params={"source": "nope"}).status_code == 422


def test_a_decision_is_stored_moves_the_queue_on_and_undo_takes_it_back(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login()
    after = bench.post("/queue/decide", {"l": "crm:1", "r": "crm:2", "decision": "different", "reason": "other DOB"})
    assert after.status_code == 200
    assert _counts(after.text) == {"open": 1, "today": 1, "mine": 1}
    assert 'name="l" value="crm:2"' in after.text  # the next item took its place
    [stored] = _decisions(bench)
    assert (stored["source_system_l"], stored["source_record_id_l"], stored["source_record_id_r"]) == ("crm", "1", "2")
    assert stored["decision"] == "different" and stored["decided_by"] == "web:steward" and stored["reason"] == "other DOB"
    assert (stored["master_l"], stored["master_r"]) == ("M1", "M2")
    undone = bench.post("/queue/undo", {})
    assert _counts(undone.text) == {"open": 2, "today": 0, "mine": 0} and "Undid your last decision" in undone.text
    assert _decisions(bench)[0]["undone_by"] == "web:steward"


@pytest.mark.parametrize(("form", "status", "field"), [
    ({"l": "crm:1", "r": "crm:99", "decision": "same"}, 409, "pair:"),
    ({"l": "crm:1", "r": "crm:1", "decision": "same"}, 422, "r:"),
    ({"l": "crm-1", "r": "crm:2", "decision": "same"}, 422, "l:"),
    ({"l": "crm:1", "r": "crm:2", "decision": "maybe"}, 422, "decision:"),
    ({"l": "crm:1", "r": "crm:2", "decision": "same", "reason": "x" * 501}, 422, "reason:"),
    ({"l": "crm:1", "decision": "same"}, 422, "r:"),
])
def test_a_bad_decision_is_refused_naming_the_field(workbench, form, status, field) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login()
    response = bench.post("/queue/decide", form)
    assert response.status_code == status and field in response.text
    assert _decisions(bench) == []


def test_a_viewer_may_look_but_not_decide(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login("viewer")
    page = bench.client.get("/queue")
    assert page.status_code == 200 and "may look but not decide" in page.text
    response = bench.post("/queue/decide", {"l": "crm:1", "r": "crm:2", "decision": "same"})
    assert response.status_code == 403 and "role:" in response.text
    assert bench.post("/masters/M1/merge", {"other": "M2"}, htmx=False).status_code == 403
    assert _decisions(bench) == []


def test_personal_values_are_shown_only_as_the_lens_allows_and_reveals_are_logged(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login()
    page = bench.client.get("/pair", params={"l": "crm:1", "r": "crm:2"}).text
    assert "ada@example.org" in page  # revealed
    assert "SW1A 1AA" not in page and "SW***" in page  # masked
    assert "+441234567890" not in page  # tokenised ...
    assert tokenise(pl.Series("phone", ["+441234567890"]), TOKEN_KEY)[0] in page  # ... with the lens's key
    assert "1985-12-10" not in page and ">date_of_birth<" not in page  # not in the lens: not shown
    reveals = read_reveals(bench.config.decision_store_path)
    assert reveals["page"].to_list() == ["pair"]
    logged = reveals.row(0, named=True)
    assert json.loads(logged["columns"]) == ["email", "first_name", "last_name"]  # country is not personal
    assert json.loads(logged["records"]) == ["crm:1", "crm:2"]
    assert logged["viewed_by"] == "web:steward"
    assert "ada@example.org" not in reveals.write_csv()  # names only, never values


def test_a_lens_row_filter_hides_personal_values_of_masters_outside_it(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login("viewer")  # the service lens: GB only, e-mail masked, no last name
    page = bench.client.get("/pair", params={"l": "crm:1", "r": "crm:2"}).text
    assert "a***@e***.org" in page  # crm:1 is M1 in GB
    assert "Lovelace" not in page
    m2 = bench.client.get("/masters/M2").text  # US: outside the lens
    assert "Ada" not in m2 and "a***@e***.org" not in m2


def test_no_personal_value_is_in_a_url_of_any_page(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login()
    values = {"Ada", "Lovelace", "ada@example.org", "Alan", "Turing", "+441234567890", "SW1A"}
    for path in ("/queue", "/pair?l=crm:2&r=shop:7", "/masters/M3", "/masters/M1"):
        html = bench.client.get(path).text
        urls = re.findall(r'(?:href|action|hx-get|hx-post)="([^"]*)"', html)
        assert urls, path
        assert not [u for u in urls if any(v in u for v in values)], path


def test_the_pair_page_shows_bayes_factors_and_other_candidates(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login()
    page = bench.client.get("/pair", params={"l": "crm:1", "r": "crm:2"}).text
    assert "Exact match on first_name" in page and ">90<" in page  # m/u = 0.9/0.01
    assert "All other comparisons" in page and "0.2" in page  # e-mail level 0: 0.2/0.999
    assert "shop:7" in page  # crm:2's other candidate
    cluster = bench.client.get("/pair", params={"l": "crm:2", "r": "shop:7"}).text
    assert "Split the checked records off" in cluster and 'value="shop:8"' in cluster


def test_a_cluster_split_decides_the_chosen_records_apart_from_the_rest(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login()
    response = bench.post("/cluster/split", {"l": "crm:2", "r": "shop:7", "records": ["crm:2"]}, htmx=False)
    assert response.status_code == 303
    stored = {(d["source_record_id_l"], d["source_record_id_r"], d["decision"], d["action"]) for d in _decisions(bench)}
    assert stored == {("2", "7", "different", "split"), ("2", "8", "different", "split")}
    everything = bench.post("/cluster/split", {"l": "crm:2", "r": "shop:7", "records": ["crm:2", "shop:7", "shop:8"]},
                            htmx=False)
    assert everything.status_code == 422 and "records:" in everything.text


def test_the_master_page_shows_lineage_consent_and_records(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login()
    page = bench.client.get("/masters/M3")
    assert page.status_code == 200
    assert "shop:7" in page.text and "trust_rank" in page.text and "most_recent" in page.text
    assert "marketing" in page.text and "consent" in page.text
    assert "run-1" in page.text
    missing = bench.client.get("/masters/M404")
    assert missing.status_code == 404 and "master_id: no such master" in missing.text


def test_merge_and_split_of_masters_are_stored_as_decisions(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench()
    bench.login()
    merged = bench.post("/masters/M1/merge", {"other": "M3", "reason": "same person"}, htmx=False)
    assert merged.status_code == 303
    [merge] = _decisions(bench)
    assert (merge["action"], merge["decision"], merge["master_l"], merge["master_r"]) == ("merge", "same", "M1", "M3")
    assert {merge["source_record_id_l"], merge["source_record_id_r"]} == {"1", "7"}
    for other, status in (("M1", 422), ("M404", 404), ("", 422)):
        assert bench.post("/masters/M1/merge", {"other": other}, htmx=False).status_code == status
    split = bench.post("/masters/M3/split", {"records": ["shop:8"]}, htmx=False)
    assert split.status_code == 303
    assert {(d["action"], d["source_record_id_l"], d["source_record_id_r"]) for d in _decisions(bench)} >= {("split", "7", "8")}
    assert bench.post("/masters/M3/split", {"records": ["crm:1"]}, htmx=False).status_code == 422  # not its record
    assert bench.post("/masters/M3/split", {"records": ["shop:7", "shop:8"]}, htmx=False).status_code == 422  # all of them
    assert len(_decisions(bench)) == 2


def test_an_expired_login_is_told_and_writes_nothing(workbench, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bench = workbench(session_minutes=1)
    bench.login()
    token = bench.csrf()
    later = time.time() + 120
    monkeypatch.setattr("cmdm_pipeline.web.auth.time.time", lambda: later)
    response = bench.client.post("/queue/decide", data={"l": "crm:1", "r": "crm:2", "decision": "same"},
                                 headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert response.status_code == 401 and "session: your login expired" in response.text
    page = bench.client.get("/queue", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"  # the expired session was cleared
    assert _decisions(bench) == []


def test_a_trusted_proxy_header_names_the_user(workbench) -> None:  # type: ignore[no-untyped-def]
    bench = workbench(trusted_user_header="X-Forwarded-User")
    assert bench.client.get("/queue").status_code == 401
    assert bench.client.get("/queue", headers={"X-Forwarded-User": "mallory"}).status_code == 403
    page = bench.client.get("/queue", headers={"X-Forwarded-User": "steward"})
    assert page.status_code == 200
    token = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    decided = bench.client.post("/queue/decide", data={"l": "crm:1", "r": "crm:2", "decision": "same"},
                                headers={"X-Forwarded-User": "steward", "X-CSRF-Token": token, "HX-Request": "true"})
    assert decided.status_code == 200 and _decisions(bench)[0]["decided_by"] == "web:steward"


def test_reports_are_served_to_logged_in_users_only_and_inside_their_folder(workbench) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.quality.docs import docs_folder

    bench = workbench()
    folder = docs_folder(bench.config.warehouse_path)
    folder.mkdir(parents=True)
    (folder / "index.html").write_text("<h1>Validation results</h1>", encoding="utf-8")
    assert bench.client.get("/quality/data-docs/", follow_redirects=False).status_code == 303
    bench.login()
    assert "Validation results" in bench.client.get("/quality/data-docs/").text
    assert bench.client.get("/quality/data-docs/..%2F..%2Fcmdm.yaml").status_code == 404
    assert bench.client.get("/match/charts/match_weights.html").status_code == 404


def test_the_snapshot_is_reloaded_when_a_run_publishes_a_new_one(make_project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.protect.keys.kek import load_keyring
    from cmdm_pipeline.web.app import SnapshotHolder
    from cmdm_pipeline.web.snapshot import publish_snapshot, snapshot_folder
    from cmdm_pipeline_tests.web.conftest import MODEL, T0, frames

    config = make_project()
    keyring = load_keyring(config, create_dev_key=True)
    folder = snapshot_folder(config.warehouse_path)
    publish_snapshot(frames(), MODEL, folder, keyring, "run-a", T0)
    holder = SnapshotHolder(config, check_every_s=0)
    assert holder.get().run_id == "run-a"
    time.sleep(0.01)
    publish_snapshot(frames(), MODEL, folder, keyring, "run-b", T0)
    assert holder.get().run_id == "run-b"
    assert tiny_snapshot().run_id == "in-memory"
