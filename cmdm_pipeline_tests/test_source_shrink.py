"""A source that yields nothing, shrinks or disappears stops the run before matching; records missing for a
night keep their master ids (issue 19, item 3)."""

from __future__ import annotations

import polars as pl
import pytest
import yaml

from cmdm_pipeline.cli import EXIT_OK, EXIT_RUN_FAILED, main
from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline_tests.conftest import GOOD_CSV, csv_source

pytestmark = pytest.mark.integration

HEADER = GOOD_CSV.splitlines(keepends=True)[0]
ERP_CSV = HEADER + "E1,Ada,Lovelace,ada@example.org,,,GB,10/12/1985\nE2,Edsger,Dijkstra,ed@example.nl,,,NL,11/05/1930\n"
KEY = ["source_system", "source_record_id"]


def two_sources(make_project) -> ProjectConfig:  # type: ignore[no-untyped-def]
    return make_project(files={"crm.csv": GOOD_CSV, "erp.csv": ERP_CSV},
                        sources=[csv_source(), csv_source("erp", "erp.csv", trust_rank=2)],
                        # A few records change their match rate a lot when a source goes: not what is tested here.
                        quality={"max_match_rate_drift": 1, "max_cluster_size_drift": 1})


def run(config: ProjectConfig, *options: str) -> int:
    return main(["run", "--quiet", *options, "--config", str(config.base_dir / "cmdm.yaml")])


def table(config: ProjectConfig, name: str) -> pl.DataFrame:
    return open_warehouse(config).read(name)


def master_ids(config: ProjectConfig) -> dict[tuple[str, str], str]:
    xref = table(config, "customer_xref")
    return {(s, r): m for s, r, m in xref.select(*KEY, "master_id").iter_rows()}


def test_an_empty_source_stops_the_run_and_its_records_keep_their_master_ids(make_project, capsys) -> None:  # type: ignore[no-untyped-def]
    config = two_sources(make_project)
    assert run(config) == EXIT_OK
    first, golden = master_ids(config), table(config, "golden_customers").height
    assert len(first) == 5 and golden < 5  # Ada is in both sources

    (config.base_dir / "crm.csv").write_text(HEADER, encoding="utf-8")  # the file came with its header only
    capsys.readouterr()
    assert run(config) == EXIT_RUN_FAILED
    err = capsys.readouterr().err
    assert "check sources_did_not_shrink on validated_customers failed: crm: read 0 rows, 3 at the last good run" in err
    assert master_ids(config) == first and table(config, "golden_customers").height == golden  # nothing mastered

    assert run(config, "--accept-shrink", "crm") == EXIT_OK  # someone decided the night may go on without crm
    absent = table(config, "customer_xref_absent")
    assert {(s, r): m for s, r, m in absent.select(*KEY, "master_id").iter_rows()} == {
        k: m for k, m in first.items() if k[0] == "crm"}
    assert master_ids(config) == {k: m for k, m in first.items() if k[0] == "erp"}

    (config.base_dir / "crm.csv").write_text(GOOD_CSV, encoding="utf-8")  # back the next night
    assert run(config) == EXIT_OK
    assert master_ids(config) == first
    assert table(config, "customer_xref_absent").is_empty()
    assert table(config, "master_id_lineage").is_empty()  # no id merged, split or lost
    assert table(config, "golden_customers").height == golden


def test_a_source_removed_from_the_config_must_be_retired(make_project, capsys) -> None:  # type: ignore[no-untyped-def]
    config = two_sources(make_project)
    assert run(config) == EXIT_OK
    path = config.base_dir / "cmdm.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["sources"] = [s for s in document["sources"] if s["name"] != "erp"]
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    capsys.readouterr()
    assert run(config) == EXIT_RUN_FAILED
    assert ("erp: read 2 rows at the last good run and is no longer in `sources`; list it under `retired_sources`"
            in capsys.readouterr().err)
    path.write_text(yaml.safe_dump({**document, "retired_sources": ["erp"]}, sort_keys=False), encoding="utf-8")
    assert run(config) == EXIT_OK
    assert {s for s, _ in master_ids(config)} == {"crm"}


def test_a_second_run_on_the_same_warehouse_is_refused_at_once(make_project, capsys) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.run_lock import run_lock

    config = make_project()
    with run_lock(config.warehouse_path, "the-nightly-run"):
        assert run(config) == EXIT_RUN_FAILED
    err = capsys.readouterr().err
    assert f"warehouse {config.warehouse_path} is in use by run the-nightly-run (pid " in err
    assert not config.warehouse_path.exists()  # refused before anything was written
    assert run(config) == EXIT_OK  # the lock went with its holder
