"""The `cmdm` command: summary, exit codes, and messages for wrong input."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cmdm_pipeline.assets import standardise as standardise_asset
from cmdm_pipeline.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, main
from cmdm_pipeline.engines.duckdb import scratch_db
from cmdm_pipeline_tests.conftest import GOOD_CSV


@pytest.mark.integration
def test_run_prints_the_summary(make_project, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_project(files={"crm.csv": GOOD_CSV + "4,,,x@example.org,,,GB,\n"})
    assert main(["run", "--config", str(config.base_dir / "cmdm.yaml")]) == EXIT_OK
    out = capsys.readouterr().out
    assert ["crm", "4", "3", "1", "0"] in [line.split() for line in out.splitlines()]
    assert "has_a_name" in out
    assert str(config.warehouse_path) in out or "warehouse/cmdm.duckdb" in out
    assert "dagster dev -w workspace.yaml" in out
    assert f"cmdm report --config {config.base_dir / 'cmdm.yaml'}" in out


@pytest.mark.integration
def test_failed_run_exits_1_with_the_reason(make_project, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_project(files={})
    assert main(["run", "--quiet", "--config", str(config.base_dir / "cmdm.yaml")]) == EXIT_RUN_FAILED
    err = capsys.readouterr().err
    assert "step raw_crm failed" in err and "file not found" in err


def _interrupted_while(working: str):  # type: ignore[no-untyped-def]
    """A standardise step that receives Ctrl-C, then goes on working in Python or in a DuckDB query; or that
    receives it while a long query of Splink's scratch database runs."""
    def standardise_table(*args, **kwargs):  # type: ignore[no-untyped-def]
        if working == "a long query":
            with scratch_db("1GB") as api:
                con = api.duckdb_con
                # Each key's 3,000 rows joined with each other: tasks so long that DuckDB, left alone, looks
                # for the signal only when the query ends, after about a minute (measured on 2 cores).
                con.execute("CREATE TABLE t AS SELECT range AS a, range % 1000 AS b FROM range(3000000)")
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
                started = time.perf_counter()
                try:
                    con.sql("SELECT count(*) FROM t AS x JOIN t AS y USING (b) WHERE x.a < y.a").fetchall()
                except BaseException:
                    assert time.perf_counter() - started < 15, "the interrupt waited for the query to end"
                    raise
                raise AssertionError("the query ran to its end")
        os.kill(os.getpid(), signal.SIGINT)
        if working == "duckdb":  # DuckDB sees the signal and ends the query with its own error
            duckdb.sql("SELECT sum(hash(i)) FROM range(10000000000) t(i)").fetchall()
        else:
            for _ in range(100):
                sum(range(1_000_000))
        raise AssertionError("the interrupt did not stop the step")
    return standardise_table


@pytest.mark.integration
def test_an_interrupted_run_exits_130_and_keeps_the_previous_tables(make_project, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    argv = ["run", "--quiet", "--config", str(config.base_dir / "cmdm.yaml")]
    assert main(argv) == EXIT_OK
    with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
        before = con.sql("SELECT * FROM run_reconciliation").pl()
    capsys.readouterr()
    for working in ("python", "duckdb", "a long query"):
        monkeypatch.setattr(standardise_asset, "standardise_table", _interrupted_while(working))
        assert main(argv) == EXIT_INTERRUPTED, working
        err = capsys.readouterr().err
        assert "interrupted after" in err and "failed" not in err, err
        with duckdb.connect(str(config.warehouse_path), read_only=True) as con:
            assert con.sql("SELECT * FROM run_reconciliation").pl().equals(before)


@pytest.mark.integration
def test_a_blocking_check_that_fails_exits_1_and_says_why(make_project, capfd: pytest.CaptureFixture[str]) -> None:
    config = make_project(
        files={"crm.csv": GOOD_CSV + "4,,,x@example.org,,,GB,\n"}, quality={"max_quarantine_rate": 0.1}
    )
    assert main(["run", "--quiet", "--config", str(config.base_dir / "cmdm.yaml")]) == EXIT_RUN_FAILED
    err = capfd.readouterr().err
    assert "check quarantine_rate_within_limit on validated_customers failed: " in err
    assert "crm" in err.split("check quarantine_rate_within_limit", 1)[1]
    # Quiet: the reasons once, in cmdm's words; no Dagster event lines, no stack traces (the one other line is
    # the warning that a development key was just created, which --quiet keeps on purpose).
    others = [line for line in err.splitlines() if line.strip() and not line.startswith("cmdm: ")]
    assert len(others) == 1 and others[0].startswith("!!! created a DEVELOPMENT key"), others
    assert err.count("quarantine_rate_within_limit") == 1


def test_invalid_config_exits_2(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "cmdm.yaml").write_text("sources: []\n", encoding="utf-8")
    assert main(["run", "--config", str(tmp_path / "cmdm.yaml")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "at schema: Field required" in err and "at sources: List should have at least 1 item" in err


def test_missing_config_exits_2_and_names_it(tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == EXIT_USAGE
    assert f"cmdm: {tmp_path / 'nope.yaml'}: config file not found (set --config or CMDM_CONFIG)" in capsys.readouterr().err
    monkeypatch.setenv("CMDM_CONFIG", str(tmp_path / "gone.yaml"))
    assert main(["report"]) == EXIT_USAGE
    assert "gone.yaml: config file not found" in capsys.readouterr().err


def test_a_cron_dagster_rejects_exits_2_before_running(make_project, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_project(schedule={"nightly": {"cron": "61 * * * *"}})
    assert main(["run", "--quiet", "--config", str(config.base_dir / "cmdm.yaml")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid configuration" in err and "Found invalid cron schedule '61 * * * *'" in err
    assert not config.warehouse_path.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no COMMAND given; choose one of: run, report"),
        (["fly"], "invalid choice: 'fly'"),
        (["run", "--unknown"], "unrecognized arguments: --unknown"),
        (["run", "--config"], "argument --config: expected one argument"),
        (["report", "--stage", "bronze"], "argument --stage: invalid choice: 'bronze'"),
        (["report", "--top", "ten"], "argument --top: expected a whole number, got 'ten'"),
        (["report", "--top", "0"], "argument --top: expected 1 or more, got 0"),
    ],
)
def test_wrong_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "usage: cmdm" in err and message in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ["run ", "report ", "--version", "exit codes:", "130"]),
        (["run"], ["--config PATH", "CMDM_CONFIG", "--quiet", "--accept-shrink SOURCE", "exit codes:", "the failing step",
                   "another run holds the"]),
        (["report"], ["--config PATH", "--run RUN_ID", "--stage {standardised,validated,golden,quarantine}",
                      "--top N", "read-only", "exit codes:", "run `cmdm run` first"]),
    ],
)
def test_help_describes_every_option_and_exit_code(argv: list[str], expected: list[str], capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--help"])
    assert caught.value.code == EXIT_OK
    out = capsys.readouterr().out
    assert [text for text in expected if text not in out] == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == EXIT_OK and capsys.readouterr().out.startswith("cmdm 0.")


# --- cmdm report, against a warehouse shaped like the quality stage writes it -----------------

QUALITY_SCHEMA = """
CREATE TABLE quality_report(run_id VARCHAR, run_at TIMESTAMP, stage VARCHAR, source_system VARCHAR,
    attribute VARCHAR, metric VARCHAR, rule VARCHAR, rows_evaluated BIGINT, rows_failed BIGINT,
    pass_rate DOUBLE, value DOUBLE);
"""
QUALITY_TREND = """
CREATE VIEW quality_trend AS
SELECT run_id, run_at, stage, source_system, attribute, metric, rule, value,
       lag(value) OVER w AS previous_value, value - lag(value) OVER w AS delta
FROM quality_report
WINDOW w AS (PARTITION BY stage, source_system, attribute, metric, rule ORDER BY run_at);
"""


def _rows(run: str, at: dt.datetime, shift: float) -> list[tuple[object, ...]]:
    """One run's quality rows; `shift` moves rates and counts so the later run differs."""

    def rate(n: int, failed: int) -> tuple[int, int, float, float]:
        return n, failed, 1 - failed / n, failed / n

    def duplicates(n: int, failed: int) -> tuple[int, int, float, float]:
        return n, failed, (n - failed) / n, n / (n - failed)  # value: records per master, as the stage writes it

    rows = [
        ("quarantine", "crm", None, "quarantine_rate", None, *rate(2000, 120 - round(shift * 10))),
        ("quarantine", "erp", None, "quarantine_rate", None, *rate(1000, 10)),
        ("quarantine", None, None, "quarantine_rate", None, *rate(3000, 130 - round(shift * 10))),
        ("validated", "crm", None, "duplicate_rate", None, *duplicates(1880, 58)),
        ("validated", "erp", None, "duplicate_rate", None, *duplicates(990, 20 + round(shift * 10))),
        ("validated", None, None, "duplicate_rate", None, *duplicates(2870, 78 + round(shift * 10))),
        ("validated", None, None, "rule", "has_a_name", 3000, 90 - round(shift * 12), None, None),
        ("validated", None, "email", "rule", "email.invalid", 3000, 40, None, None),
        ("validated", None, "country", "rule", "country.pattern", 3000, 0, 1.0, 1.0),
        ("quarantine", None, None, "rule", "has_a_name", 3000, 60, 0.98, 0.98),
        ("standardised", "crm", "email", "rule", "email.invalid", 2000, 30, None, None),
        ("standardised", "erp", "email", "rule", "email.invalid", 1000, 15, None, None),
        ("golden", None, "email", "completeness", None, 7432, None, None, 0.54 - shift / 100),
        ("golden", None, "phone", "completeness", None, 7432, None, None, 0.31),
        ("golden", None, "postcode", "completeness", None, 7432, None, None, 0.88),
        ("golden", None, "first_name", "completeness", None, 7432, None, None, 0.99),
        ("golden", "crm", "phone", "completeness", None, 2000, None, None, 0.0),
        ("golden", None, None, "golden_count", None, None, None, None, 7432.0 - shift * 12),
        ("golden", None, None, "quality_score", None, None, None, None, 0.874 - shift / 100),
    ]
    return [(run, at, *row) for row in rows]


@pytest.fixture
def quality_project(make_project):  # type: ignore[no-untyped-def]
    """A project whose warehouse holds two quality runs; returns (config path, warehouse path)."""
    config = make_project()

    def write(*statements: str, runs: bool = True) -> tuple[str, Path]:
        config.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        with duckdb.connect(str(config.warehouse_path)) as con:
            for sql in statements:
                con.execute(sql)
            if runs:
                rows = _rows("run-1", dt.datetime(2026, 11, 1, 2, 0, 5), 1) + _rows("run-2", dt.datetime(2026, 11, 2, 2, 0, 7), 0)
                con.executemany("INSERT INTO quality_report VALUES (" + ", ".join(["?"] * 11) + ")", rows)
        return str(config.base_dir / "cmdm.yaml"), config.warehouse_path

    return write


def test_report_shows_the_latest_run_and_its_changes(quality_project, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = quality_project(QUALITY_SCHEMA, QUALITY_TREND)
    assert main(["report", "--config", path, "--top", "5"]) == EXIT_OK
    out = capsys.readouterr().out
    lines = [line.rstrip() for line in out.splitlines()]
    assert lines[0] == "quality report · run run-2 at 2026-11-02 02:00:07 UTC"
    assert lines[1] == "changes (Δ) since run run-1 at 2026-11-01 02:00:05 UTC"
    # Each rate has its own label: quarantined rows, duplicates inside a source, duplicates across sources.
    # Duplicates are duplicate records / records (not the stage's records-per-master value).
    assert lines[3:7] == [
        "source        rows  quarantined  Δ quarantined  duplicates in source  Δ in source",
        "crm          2,000         6.0%        +0.5 pp                  3.1%      +0.0 pp",
        "erp          1,000         1.0%        +0.0 pp                  2.0%      -1.0 pp",
        "all sources  3,000         4.3%        +0.3 pp",
    ]
    assert lines[7] == "duplicates across sources: 2.7% of records are not their master's only record (Δ -0.3 pp)"
    rules = [line.split() for line in lines if line.startswith(("  standardised", "  validated", "  quarantine"))]
    assert rules == [
        ["standardised", "email.invalid", "45", "3,000", "98.5%", "+0"],  # summed over sources
        ["validated", "has_a_name", "90", "3,000", "97.0%", "+12"],
        ["validated", "email.invalid", "40", "3,000", "98.7%", "+0"],
        ["quarantine", "has_a_name", "60", "3,000", "98.0%", "+0"],
    ]  # country.pattern failed nothing: not listed
    # Lowest first, all-sources rows only (crm's 0 % phone is a column crm lacks), complete ones left out.
    assert [line.split() for line in lines if line.startswith("  golden")] == [
        ["golden", "phone", "31.0%", "+0.0", "pp"], ["golden", "email", "54.0%", "+1.0", "pp"],
        ["golden", "postcode", "88.0%", "+0.0", "pp"], ["golden", "first_name", "99.0%", "+0.0", "pp"],
    ]
    assert lines[-1] == "golden records: 7,432 (Δ +12) · mean quality score: 0.874 (Δ +0.010)"


def test_report_of_an_earlier_run_and_of_one_stage(quality_project, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = quality_project(QUALITY_SCHEMA, QUALITY_TREND)
    assert main(["report", "--config", path, "--run", "run-1", "--stage", "golden", "--top", "1"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "run run-1 at 2026-11-01 02:00:05 UTC" in out and "first quality run: no changes to show" in out
    assert "stage: golden" in out
    assert "quarantined" not in out and "worst rules" not in out  # no golden rows of those in this run
    assert [line.split() for line in out.splitlines() if line.startswith("  golden")] == [["golden", "phone", "31.0%"]]
    assert "golden records: 7,420 · mean quality score: 0.864" in out


def test_report_without_the_trend_view_still_reports(quality_project, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = quality_project(QUALITY_SCHEMA)
    assert main(["report", "--config", path]) == EXIT_OK
    out = capsys.readouterr().out
    assert "(no readable quality_trend view: changes of completeness, count and score are not shown)" in out
    assert "golden records: 7,432 · mean quality score: 0.874" in out
    # Shares and failed rows are compared with the previous run's counts, trend or not.
    assert ["crm", "2,000", "6.0%", "+0.5", "pp"] in [line.split()[:5] for line in out.splitlines()]
    assert "has_a_name" in out and "+12" in out


def test_report_of_an_unknown_run_exits_2(quality_project, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = quality_project(QUALITY_SCHEMA, QUALITY_TREND)
    assert main(["report", "--config", path, "--run", "run-9"]) == EXIT_USAGE
    assert "cmdm: no quality report for run 'run-9'; leave out --run for the latest" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("statements", "runs", "message"),
    [
        (None, False, "cmdm: no warehouse at {warehouse} yet: run `cmdm run` first"),
        (["CREATE TABLE golden_customers(master_id VARCHAR)"], False,
         "cmdm: the warehouse {warehouse} has no quality_report table yet: run `cmdm run` first"),
        ([QUALITY_SCHEMA], False, "cmdm: quality_report is empty: run `cmdm run` first"),
    ],
)
def test_nothing_to_report_exits_1(quality_project, statements, runs, message, capsys) -> None:  # type: ignore[no-untyped-def]
    path, warehouse = quality_project(*(statements or []), runs=runs)
    if statements is None:
        warehouse.unlink()
    assert main(["report", "--config", path]) == EXIT_RUN_FAILED
    assert capsys.readouterr().err.strip() == message.format(warehouse=warehouse)


@contextmanager
def _held_by_another_process(warehouse: Path, read_only: bool) -> Iterator[None]:
    code = (
        "import duckdb, sys, time\n"
        f"con = duckdb.connect(sys.argv[1], read_only={read_only})\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(warehouse)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_report_opens_the_warehouse_read_only(quality_project, capsys: pytest.CaptureFixture[str]) -> None:
    """Another reader does not block it (a writing connection would be refused), and the pipeline's lock is explained."""
    path, warehouse = quality_project(QUALITY_SCHEMA, QUALITY_TREND)
    with _held_by_another_process(warehouse, read_only=True):
        assert main(["report", "--config", path]) == EXIT_OK
    assert "run run-2" in capsys.readouterr().out
    with _held_by_another_process(warehouse, read_only=False):
        assert main(["report", "--config", path]) == EXIT_RUN_FAILED
    assert "is in use by a running pipeline" in capsys.readouterr().err


# --- cmdm keys -----------------------------------------------------------------------------------------


@pytest.fixture
def keys_project(make_project, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A project with no key yet, and no key-encryption key in the environment."""
    for name in ("CMDM_KEK", "CMDM_KEK_ID", "CMDM_KEK_PREVIOUS", "CMDM_KEK_PREVIOUS_ID"):
        monkeypatch.delenv(name, raising=False)
    config = make_project()
    return config, str(config.base_dir / "cmdm.yaml")


def _data_keys(config, owners: list[str]) -> None:  # type: ignore[no-untyped-def]
    import polars as pl

    from cmdm_pipeline.protect.keys.kek import load_keyring
    from cmdm_pipeline.protect.keys.keystore import KeyStore

    KeyStore.for_config(config, load_keyring(config)).keys_for_owners(pl.Series(owners))


def test_keys_help_lists_actions_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["keys", "--help"])
    assert caught.value.code == EXIT_OK
    out = capsys.readouterr().out
    assert [t for t in ["init", "status", "rotate", "retire", "exit codes:", "refused", "a wrong key"] if t not in out] == []
    with pytest.raises(SystemExit):
        main(["keys", "retire", "--help"])
    assert "KEK_ID" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "keys " in capsys.readouterr().out


def test_keys_without_an_action_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys"]) == EXIT_USAGE
    assert "no ACTION given; choose one of: init, status, rotate, retire" in capsys.readouterr().err


def test_keys_init_status_rotate_retire(keys_project, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    config, path = keys_project
    assert main(["keys", "status", "--config", path]) == EXIT_USAGE
    assert "no key-encryption key: set CMDM_KEK or run `cmdm keys init`" in capsys.readouterr().err

    assert main(["keys", "init", "--config", path]) == EXIT_OK
    out, err = capsys.readouterr()
    key_file = config.warehouse_path.parent / "keys" / "dev.kek.json"
    assert f"created key file {key_file} (mode 0600)" in out and "DEVELOPMENT only" in err
    first = out.split("key-encryption key ")[1].split()[0]
    assert main(["keys", "init", "--config", path]) == EXIT_RUN_FAILED
    assert "refusing to overwrite" in capsys.readouterr().err

    _data_keys(config, ["master/M1", "master/M2", "record/crm/1"])
    assert main(["keys", "status", "--config", path]) == EXIT_OK
    out = capsys.readouterr().out
    # Three keys asked for, and the blind-index key every store gets with the warehouse's pairing.
    assert f"{first}" in out and "active" in out and "4 data keys" in out and "4 live data keys, 0 destroyed" in out

    from cmdm_pipeline.run_lock import run_lock

    with run_lock(config.warehouse_path, "nightly-run"):  # a run is encrypting with these keys
        assert main(["keys", "rotate", "--config", path]) == EXIT_RUN_FAILED
    assert "in use by run nightly-run" in capsys.readouterr().err
    assert main(["keys", "rotate", "--config", path]) == EXIT_OK
    out = capsys.readouterr().out
    second = out.split("new key-encryption key ")[1].split()[0]
    assert f"re-wrapped 4 data keys (4 from {first})" in out and f"cmdm keys retire {first}" in out
    from cmdm_pipeline.warehouse import Warehouse

    audited = Warehouse(config.warehouse_path).read("audit_log").row(0, named=True)
    assert audited["action"] == "key_rotated" and audited["actor"].startswith("cli:")
    assert json.loads(audited["detail"]) == {"active_kek": second, "data_keys": 4, "rewrapped_from": {first: 4}}

    assert main(["keys", "retire", second, "--config", path]) == EXIT_RUN_FAILED
    assert "is the active one" in capsys.readouterr().err
    assert main(["keys", "retire", "kek-nope", "--config", path]) == EXIT_USAGE
    assert "no key-encryption key kek-nope" in capsys.readouterr().err
    assert main(["keys", "retire", first, "--config", path]) == EXIT_OK
    assert f"retired key-encryption key {first}: removed from {key_file}" in capsys.readouterr().out
    assert main(["keys", "status", "--config", path]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{second:<28}active" in out and f"{first:<28}retired" in out
    assert key_file.read_text(encoding="utf-8").count('"id"') == 1


def test_keys_with_a_wrong_or_unsafe_key_exit_2_and_write_nothing(keys_project, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import base64
    import os

    config, path = keys_project
    monkeypatch.setenv("CMDM_KEK", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("CMDM_KEK_ID", "prod")
    _data_keys(config, ["master/M1"])
    from cmdm_pipeline.protect.keys.keystore import keystore_path

    store = keystore_path(config)  # with CMDM_KEK: outside the warehouse folder
    before = store.read_bytes()
    monkeypatch.setenv("CMDM_KEK", base64.b64encode(os.urandom(32)).decode())
    assert main(["keys", "rotate", "--config", path]) == EXIT_USAGE
    assert "the key-encryption key prod cannot unwrap data key " in capsys.readouterr().err
    assert store.read_bytes() == before
    assert main(["keys", "init", "--config", path]) == EXIT_USAGE
    assert "CMDM_KEK is set" in capsys.readouterr().err

    monkeypatch.delenv("CMDM_KEK")
    assert main(["keys", "init", "--config", path]) == EXIT_OK
    key_file = config.warehouse_path.parent / "keys" / "dev.kek.json"
    key_file.chmod(0o644)
    capsys.readouterr()
    assert main(["keys", "rotate", "--config", path]) == EXIT_USAGE
    assert "readable or writable by group or others (mode 0644)" in capsys.readouterr().err


def test_report_shows_the_matching_threshold_estimates_and_queue() -> None:
    from cmdm_pipeline.report import _matching

    rows = pl.DataFrame({"stage": ["matching"] * 6 + ["golden"],
                         "metric": ["link_threshold", "match_prior", "estimated_precision", "estimated_recall",
                                    "queued", "doubtful", "golden_count"],
                         "value": [0.481, 1.9e-5, 0.948, 0.921, 157.0, 9818.0, 7.0]})
    rows = pl.concat([rows, pl.DataFrame({"stage": ["matching"], "metric": ["decided_automatically"], "value": [9661.0]})])
    assert _matching(rows) == [
        "", "matching: links at p >= 0.481 (prior 1.9e-05); the model estimates its clusters' pair precision 94.8% "
            "and recall 92.1%",
        "review queue: 157 to decide; 9,661 of 9,818 doubtful decisions left to the model (over the review budget)"]
    assert _matching(rows.filter(pl.col("stage") != "matching")) == []


@pytest.mark.integration
def test_run_with_an_absolute_config_from_another_folder(make_project, tmp_path: Path) -> None:
    config = make_project()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # As a cron line often has it: --config before the command, and a working directory without cmdm.yaml.
    done = subprocess.run([sys.executable, "-m", "cmdm_pipeline.cli", "--config", str(config.base_dir / "cmdm.yaml"),
                           "run", "--quiet"], cwd=elsewhere, capture_output=True, text=True, timeout=600)
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    assert "master customers:" in done.stdout and config.warehouse_path.is_file()
    assert not (elsewhere / "data").exists()


@pytest.mark.parametrize("argv", [["--config", "{path}", "report"], ["--config={path}", "report"]])
def test_config_may_come_before_the_command(argv: list[str], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "nope.yaml"
    assert main([a.format(path=path) for a in argv]) == EXIT_USAGE
    assert f"cmdm: {path}: config file not found" in capsys.readouterr().err  # read as the command's --config


def test_lenses_list_prints_tables_a_script_can_split(make_project, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline_tests.protect.test_lenses_job import CONSENT, EVENTS, LENSES

    config = make_project(files={"crm.csv": GOOD_CSV, "consent.csv": EVENTS}, consent=CONSENT,
                          lenses=[{**LENSES[0], "where": {"country": ["GB", "FR"]}}, LENSES[1]])
    assert main(["lenses", "list", "--config", str(config.base_dir / "cmdm.yaml")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "{" not in out  # no Python dict
    rows = [line.split("  ") for line in out.splitlines()]
    cells = [[cell.strip() for cell in row if cell.strip()] for row in rows]
    assert cells[:3] == [["lens", "consent", "filters", "description"],
                         ["marketing", "marketing", "country in GB, FR", "campaigns"],
                         ["service", "not needed", "none", "service desk"]]
    folder = config.warehouse_path.parent / "lenses"
    assert ["marketing", "mask", "first_name, email"] in cells
    assert ["service", f"{folder / 'service.parquet'}", "not published yet; encrypted: cmdm lenses key service"] in cells
