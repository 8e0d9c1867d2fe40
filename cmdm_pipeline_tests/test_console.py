"""What `cmdm` shows on the terminal: tables, progress of long steps, library chatter kept off it,
and runs recorded where the Dagster UI reads them."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from cmdm_pipeline import progress
from cmdm_pipeline.console import library_logs_to_run_log, table
from cmdm_pipeline_tests.conftest import GOOD_CSV


def test_a_table_off_a_terminal_is_plain_columns_with_numbers_right_aligned() -> None:
    shown = table(["source", "rows", "quarantined", "Δ quarantined"],
                  [("crm", "2,000", "6.0%", "+0.5 pp"), ("all sources", "13", ">99.9%", "")], file=io.StringIO())
    assert shown.splitlines() == [
        "source        rows  quarantined  Δ quarantined",
        "crm          2,000         6.0%        +0.5 pp",
        "all sources     13       >99.9%",
    ]


def test_a_table_on_a_terminal_is_drawn_by_rich() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown = table(["lens", "consent"], [("marketing", "marketing/email")], file=Terminal())
    assert "─" in shown and "marketing/email" in shown and "lens" in shown


def test_a_step_logs_its_start_and_end_with_counts_and_time(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dagster.builtin.cmdm.progress"), progress.step("golden records", total=3) as advance:
        advance(2)
        advance(1)
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        "golden records: started (3 to do)", "golden records: 3/3 done"]


def test_a_failed_step_says_where_it_stopped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="dagster.builtin.cmdm.progress"), pytest.raises(ValueError):
        with progress.step("training", total=4) as advance:
            advance(1)
            raise ValueError
    assert "training: 1/4 done then stopped after" in caplog.records[-1].getMessage()


def test_quiet_shows_no_step(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), progress.showing(None), progress.step("training", total=4) as advance:
        advance(4)
    assert caplog.records == []


def test_library_warnings_leave_the_terminal_and_ours_stay(capfd: pytest.CaptureFixture[str]) -> None:
    moved: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = moved.append  # type: ignore[method-assign]
    run_log = logging.getLogger("dagster.builtin.cmdm.library")
    run_log.addHandler(catcher)
    handlers_before = list(logging.getLogger().handlers)
    # Great Expectations turns warnings capture on for good when imported (an earlier test may have): then
    # the block's own capture would be a no-op and pytest's recorder would keep the warning.
    logging.captureWarnings(False)
    try:
        with library_logs_to_run_log(), warnings.catch_warnings():
            warnings.simplefilter("always")
            logging.getLogger("a_library.training").warning("Level Exact match not observed in dataset")  # any library but splink, which match_model quiets for good
            warnings.warn("You have called predict() without a threshold", UserWarning, stacklevel=1)
            logging.getLogger("cmdm_pipeline.protect.keys.kek").warning("created a DEVELOPMENT key")
    finally:
        run_log.removeHandler(catcher)
    err = capfd.readouterr().err
    assert err == "created a DEVELOPMENT key\n"
    assert [(r.levelno, r.getMessage().split(":")[0]) for r in moved] == [
        (logging.DEBUG, "a_library.training"), (logging.DEBUG, "py.warnings")]
    # Outside the block logging is as it was.
    assert logging.getLogger().handlers == handlers_before


def _cmdm(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return subprocess.run([sys.executable, "-m", "cmdm_pipeline.cli", *args, "--config", str(project / "cmdm.yaml")],
                          cwd=project, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.integration
def test_run_shows_no_library_warning_quiet_shows_only_the_summary_and_the_ui_sees_the_runs(
        make_project, no_kek_in_environment) -> None:  # type: ignore[no-untyped-def]
    config = make_project(files={"crm.csv": GOOD_CSV + "4,,,x@example.org,,,GB,\n"})
    project = config.base_dir
    first = _cmdm(project, "run")
    assert first.returncode == 0, first.stderr[-3000:]
    lines = first.stderr.splitlines()
    library = [line for line in lines if any(word in line for word in ("Level ", "predict()", "Warning", "warn("))]
    assert library == []
    # Every line is ours: the config line, the assets' own progress, a step's progress, the dev-key notice.
    ours = re.compile(r"^\d\d:\d\d:\d\d  \S+ +\S")  # the run's log: time, step, message
    assert all(line.startswith(("cmdm: ", "!!! ")) or ours.match(line) for line in lines), lines
    assert any("matching: training on 3 records: " in line for line in lines)
    home = project / ".dagster"
    assert f"DAGSTER_HOME={home} .uv/bin/uv run dagster dev" in first.stdout

    quiet = _cmdm(project, "run", "--quiet")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr == ""
    assert quiet.stdout.lstrip().startswith("cmdm run ") and "master customers:" in quiet.stdout

    # Another process on the same DAGSTER_HOME (as `dagster dev` is started) sees both runs' materialisations.
    reader = subprocess.run(
        [sys.executable, "-c", "import dagster as dg\n"
         "i = dg.DagsterInstance.get()\n"
         "print(len(i.get_runs()), i.get_latest_materialization_event(dg.AssetKey('golden_customers')).run_id)"],
        env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True, timeout=120)
    assert reader.returncode == 0, reader.stderr[-2000:]
    runs, latest = reader.stdout.split()
    assert runs == "2" and latest in quiet.stdout


def test_a_failed_run_shows_each_failure_once_by_its_reason_without_stack_traces() -> None:
    import dagster as dg

    from cmdm_pipeline.console import terminal_logger

    @dg.op
    def read_source(context) -> int:  # type: ignore[no-untyped-def]  # no annotation: this module's are strings
        context.log.info("read 3 rows")
        raise ValueError("source 'pos' (pos.csv): file not found")

    @dg.op
    def standardise(rows: int) -> int:
        return rows

    @dg.op
    def validate(rows: int) -> int:
        return rows

    @dg.job(logger_defs={"console": terminal_logger(shown := io.StringIO())})
    def job() -> None:
        validate(standardise(read_source()))

    result = job.execute_in_process(raise_on_error=False, run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
    assert not result.success
    lines = shown.getvalue().splitlines()
    failed = [line for line in lines if "ERROR" in line]
    assert len(failed) == 2, lines
    assert "read_source" in failed[0] and "failed: ValueError: source 'pos' (pos.csv): file not found" in failed[0]
    assert "later steps are not run" in failed[1]
    assert any(line.split()[1:] == ["read_source", "read", "3", "rows"] for line in lines)
    assert "Traceback" not in shown.getvalue() and "Stack Trace" not in shown.getvalue()
