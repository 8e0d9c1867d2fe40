"""Lenses in the real Dagster job: files published and audited, the revealing lens encrypted, its key from
`cmdm lenses key`, and rotated with `--rotate` at the next publication."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from cmdm_pipeline.cli import main
from cmdm_pipeline.config import load_config
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.protect.keys.keystore import keystore_path
from cmdm_pipeline_tests.conftest import GOOD_CSV

pytestmark = pytest.mark.integration

CONSENT = {"purposes": ["marketing", "profiling"], "source": {"kind": "csv", "path": "consent.csv", "columns": {
    "Email": "email", "Purpose": "purpose", "Channel": "channel", "Action": "action", "At": "occurred_at"}}}
EVENTS = ("Email,Purpose,Channel,Action,At\n"
          "ada@example.org,marketing,any,granted,2026-01-01T10:00:00Z\n"
          "alan@example.org,marketing,email,granted,2026-01-01T10:00:00Z\n"
          "alan@example.org,marketing,email,withdrawn,2026-02-01T10:00:00Z\n")
LENSES = [
    {"name": "marketing", "description": "campaigns", "purpose": "marketing",
     "columns": {"master_id": "tokenise", "first_name": "mask", "email": "mask", "phone": "tokenise", "country": "reveal"},
     "formats": ["duckdb", "parquet", "csv"]},
    {"name": "service", "description": "service desk", "purpose": None,
     "columns": {"first_name": "reveal", "last_name": "reveal", "email": "reveal", "phone": "reveal", "country": "reveal"}},
]
PERSONAL = ("ada@example.org", "Lovelace", "Hopper", "grace@example.com", "+441614960000", "+12025550143", "1614960000")


def run(root: Path) -> tuple[dg.ExecuteInProcessResult, str]:
    instance = dg.DagsterInstance.ephemeral()
    job = build_definitions(load_config(root / "cmdm.yaml")).resolve_job_def(JOB_NAME)
    result = job.execute_in_process(instance=instance, raise_on_error=True)
    metadata = {e.asset_key.to_user_string(): {k: str(v.value) for k, v in e.step_materialization_data.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}
    logs = " ".join(entry.user_message for entry in instance.all_logs(result.run_id))
    return result, json.dumps(metadata) + logs


def test_lenses_published_by_the_job(make_project, capsys) -> None:  # type: ignore[no-untyped-def]
    config = make_project(files={"crm.csv": GOOD_CSV, "consent.csv": EVENTS}, consent=CONSENT, lenses=LENSES)
    folder = config.warehouse_path.parent / "lenses"
    _, said = run(config.base_dir)
    for value in PERSONAL:
        assert value not in said, value
    assert sorted(p.name for p in folder.iterdir()) == [
        "marketing.csv", "marketing.duckdb", "marketing.parquet", "service.parquet"]

    marketing = pl.read_parquet(folder / "marketing.parquet")
    assert marketing.columns == ["master_id", "first_name", "email", "phone", "country", "consent_channels"]
    assert marketing.select("first_name", "email", "country").rows() == [("A***", "a***@e***.org", "GB")]  # Alan withdrew
    with duckdb.connect(str(folder / "marketing.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM customers").fetchall() == [(1,)]

    # Nothing personal in plaintext in any lens file, the revealing one included (it is encrypted).
    for path in folder.iterdir():
        data = path.read_bytes()
        for value in PERSONAL:
            assert value.encode() not in data, (path.name, value)
    with pytest.raises(OSError):
        pq.read_table(folder / "service.parquet")

    capsys.readouterr()
    assert main(["lenses", "key", "service", "--config", str(config.base_dir / "cmdm.yaml")]) == 0
    key = capsys.readouterr().out.strip()
    assert len(base64.b64decode(key)) == 32
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"PRAGMA add_parquet_key('service', '{key}')")
    service = con.sql(f"SELECT last_name, email, phone FROM read_parquet('{folder / 'service.parquet'}', "
                      "encryption_config = {footer_key: 'service'}) ORDER BY last_name").fetchall()
    assert service == [("Hopper", "grace@example.com", "+12025550143"), ("Lovelace", "ada@example.org", "+442079460018"),
                       ("Turing", "alan@example.org", "+441614960000")]

    # The next run rebuilds the files: same tokens, same key, the withdrawn customer still absent.
    run(config.base_dir)
    again = pl.read_parquet(folder / "marketing.parquet")
    assert again.equals(marketing)
    assert main(["lenses", "key", "service", "--config", str(config.base_dir / "cmdm.yaml")]) == 0
    assert capsys.readouterr().out.strip() == key
    assert main(["lenses", "key", "nosuch", "--config", str(config.base_dir / "cmdm.yaml")]) == 2

    # Every publication is audited: one lens_published row per lens and run, names and counts only.
    published = load_store(config).read("audit_log").filter(pl.col("action") == "lens_published").sort("detail")
    assert published.height == 4 and published["master_id"].null_count() == 4
    details = [json.loads(d) for d in published["detail"]]
    assert details[0] == {"lens": "marketing", "rows": 1, "columns": marketing.columns, "encrypted": False,
                          "targets": ["duckdb", "parquet", "csv"], "key_generation": 1}
    assert {d["lens"]: d["rows"] for d in details} == {"marketing": 1, "service": 3}
    for value in PERSONAL:
        assert value not in " ".join(published["detail"]), value


def test_a_lens_key_rotates_at_the_next_publication(make_project, capsys) -> None:  # type: ignore[no-untyped-def]
    config = make_project(files={"crm.csv": GOOD_CSV, "consent.csv": EVENTS}, consent=CONSENT, lenses=LENSES)
    path = str(config.base_dir / "cmdm.yaml")
    folder = config.warehouse_path.parent / "lenses"
    assert main(["lenses", "key", "service", "--rotate", "--config", path]) == 2  # no run yet: no key-encryption key
    assert "key-encryption key" in capsys.readouterr().err
    run(config.base_dir)
    assert main(["lenses", "key", "service", "--config", path]) == 0
    old = capsys.readouterr().out.strip()

    assert main(["lenses", "key", "service", "--rotate", "--config", path]) == 0
    said = capsys.readouterr()
    assert old not in said.out + said.err and "generation 2" in said.out
    # Until the next publication, the old key is the one printed: it opens the file as it is.
    assert main(["lenses", "key", "service", "--config", path]) == 0
    assert capsys.readouterr().out.strip() == old
    assert _service_names(folder, old) == ["Hopper", "Lovelace", "Turing"]
    rotated = load_store(config).read("audit_log").filter(pl.col("action") == "lens_key_rotated")
    detail = json.loads(rotated["detail"][0])
    assert (rotated.height, detail["lens"], detail["generation"], detail["key_owner"]) == (1, "service", 2, "lens/service/2")
    assert rotated["actor"][0].startswith("cli:") and len(detail["data_key_id"]) == 32

    run(config.base_dir)
    assert main(["lenses", "key", "service", "--config", path]) == 0
    new = capsys.readouterr().out.strip()
    assert new != old and len(base64.b64decode(new)) == 32
    assert _service_names(folder, new) == ["Hopper", "Lovelace", "Turing"]
    with pytest.raises(duckdb.Error, match="AES tag"):
        _service_names(folder, old)
    with duckdb.connect(str(keystore_path(config)), read_only=True) as con:  # the old key is destroyed
        assert con.execute("SELECT wrapped_key IS NULL AND destroyed_at IS NOT NULL FROM data_keys "
                           "WHERE owner = 'lens/service'").fetchall() == [(True,)]
    last = load_store(config).read("audit_log").filter(pl.col("action") == "lens_published").sort("event_time").tail(2)
    assert sorted((d["lens"], d["key_generation"]) for d in map(json.loads, last["detail"])) == [
        ("marketing", 1), ("service", 2)]  # other lenses keep theirs

    # Wrong arguments: an unknown lens, no lens at all.
    capsys.readouterr()
    assert main(["lenses", "key", "nosuch", "--rotate", "--config", path]) == 2
    assert "no lens 'nosuch'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["lenses", "key", "--rotate", "--config", path])
    assert exited.value.code == 2


def _service_names(folder: Path, key: str) -> list[str]:
    """The service lens's last names, read by DuckDB with ``key`` as a BI tool would."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"PRAGMA add_parquet_key('service', '{key}')")
    rows = con.sql(f"SELECT last_name FROM read_parquet('{folder / 'service.parquet'}', "
                   "encryption_config = {footer_key: 'service'}) ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def load_store(config):  # type: ignore[no-untyped-def]
    from cmdm_pipeline.protect.keys.at_rest import open_warehouse

    return open_warehouse(config)


def test_each_lens_is_its_own_asset_and_the_reports_are_published_beside_them(make_project) -> None:  # type: ignore[no-untyped-def]
    lenses = [{**LENSES[0], "description": "campaigns for <region> teams"}, LENSES[1]]
    config = make_project(files={"crm.csv": GOOD_CSV, "consent.csv": EVENTS}, consent=CONSENT, lenses=lenses)
    graph = build_definitions(config).resolve_asset_graph()
    for name in ("lens_marketing", "lens_service", "published_reports"):
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == "publish" and node.description.startswith("One row per")
        assert "<" not in node.description, node.description  # Markdown would swallow <region> as a tag
    assert "&lt;region&gt;" in graph.get(dg.AssetKey("lens_marketing")).description
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("lens_service")).parent_keys} == {
        "golden_customers", "consent_current"}

    result, said = run(config.base_dir)
    counts = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata["dagster/row_count"].value
              for e in result.get_asset_materialization_events() if e.step_key == "publish_for_bi"}
    assert (counts["lens_marketing"], counts["lens_service"]) == (1, 3)  # each lens its own count, not a sum
    published = config.warehouse_path.parent / "published"
    assert sorted(p.name for p in published.iterdir()) == [
        "match_review_queue.parquet", "quality_report.parquet", "run_reconciliation.parquet"]
    store = load_store(config)
    for name in ("quality_report", "run_reconciliation", "match_review_queue"):
        assert pl.read_parquet(published / f"{name}.parquet").equals(store.read(name)), name
    assert counts["published_reports"] == sum(store.read(n).height for n in
                                              ("quality_report", "run_reconciliation", "match_review_queue"))
    for path in published.iterdir():  # BI reads them without a key: nothing personal may be in them
        data = path.read_bytes()
        for value in PERSONAL:
            assert value.encode() not in data, (path.name, value)


def test_without_lenses_there_is_no_lens_asset_but_the_reports_are_published(make_project) -> None:  # type: ignore[no-untyped-def]
    graph = build_definitions(make_project()).resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert not any(k.startswith("lens") for k in keys) and "published_reports" in keys
