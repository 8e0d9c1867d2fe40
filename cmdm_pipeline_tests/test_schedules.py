"""The nightly schedule, the landing-folder sensor and the extract retry policy, as Dagster evaluates them."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from cmdm_pipeline.assets import extract as extract_assets
from cmdm_pipeline.config import ConfigError, ProjectConfig, load_config
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.schedules import SCHEDULE_NAME, SENSOR_NAME, parse_cursor
from cmdm_pipeline_tests.conftest import REPO_ROOT, csv_source

HOUR_AGO = time.time() - 3600


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    """A persistent throwaway instance: the schedule and sensor ask it for runs in progress."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def landing(make_project: Callable[..., ProjectConfig], tmp_path: Path) -> Callable[..., dg.Definitions]:
    """Definitions whose sensor watches ``tmp_path/landing`` with the given settings."""

    def make(**settings: Any) -> dg.Definitions:
        (tmp_path / "landing").mkdir(exist_ok=True)
        return build_definitions(make_project(schedule={"landing": {"folder": "landing", **settings}}))

    return make


def drop(folder: Path, name: str, content: str = "Id\n1\n", mtime: float = HOUR_AGO) -> None:
    """A file as a finished copy leaves it: written, then not touched for an hour."""
    (folder / name).write_text(content, encoding="utf-8")
    os.utime(folder / name, (mtime, mtime))


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None) -> Any:
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))


def test_shipped_config_has_a_stopped_nightly_schedule_and_sensor() -> None:
    defs = build_definitions(load_config(REPO_ROOT / "cmdm.yaml"))
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    assert (schedule.job_name, schedule.cron_schedule, schedule.execution_timezone) == (JOB_NAME, "0 2 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.job_name == JOB_NAME and sensor.minimum_interval_seconds == 60
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_schedule_requests_a_valid_run_at_the_configured_time(make_project, instance: dg.DagsterInstance) -> None:
    config = make_project(schedule={"nightly": {"cron": "30 1 * * 1-5", "timezone": "Europe/Berlin", "running": True}})
    defs = build_definitions(config)
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 1 * * 1-5", "Europe/Berlin")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    at = dt.datetime(2026, 11, 2, 1, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    data = schedule.evaluate_tick(dg.build_schedule_context(instance=instance, scheduled_execution_time=at))
    assert data.skip_message is None and len(data.run_requests) == 1
    request = data.run_requests[0]
    assert request.tags.items() >= {"cmdm/trigger": SCHEDULE_NAME, "cmdm/scheduled_for": "2026-11-02T00:30+00:00"}.items()
    assert dg.validate_run_config(defs.resolve_job_def(JOB_NAME), request.run_config) is not None


def test_schedule_and_sensor_skip_while_the_job_is_running(landing, tmp_path: Path) -> None:
    defs = landing(settle_seconds=0)
    drop(tmp_path / "landing", "crm.csv")
    job = defs.resolve_job_def(JOB_NAME)
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    at = dt.datetime(2026, 11, 2, 2, 0, tzinfo=dt.UTC)
    with dg.instance_for_test() as instance:
        instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.SUCCESS)
        assert schedule.evaluate_tick(dg.build_schedule_context(instance, at)).run_requests
        assert tick(defs, instance).run_requests
        running = instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)
        skipped = schedule.evaluate_tick(dg.build_schedule_context(instance, at))
        assert not skipped.run_requests and f"run {running.run_id} of cmdm_job is still in progress" in skipped.skip_message
        waiting = tick(defs, instance)
        assert not waiting.run_requests and f"run {running.run_id} is in progress" in waiting.skip_message
        assert waiting.cursor is None  # the new file still counts as new once the run has ended


def test_sensor_without_a_landing_folder_skips_and_says_why(make_project, instance: dg.DagsterInstance) -> None:
    data = tick(build_definitions(make_project()), instance)
    assert not data.run_requests
    assert data.skip_message == "no landing folder configured: set schedule.landing.folder in cmdm.yaml"


def test_sensor_on_a_missing_folder_skips_and_names_it(make_project, tmp_path: Path, instance) -> None:  # type: ignore[no-untyped-def]
    data = tick(build_definitions(make_project(schedule={"landing": {"folder": "nowhere"}})), instance)
    assert not data.run_requests
    assert data.skip_message == f"landing folder {tmp_path / 'nowhere'} does not exist or is not a folder"


def test_sensor_runs_once_per_new_or_changed_file(landing, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    defs = landing(pattern="*.csv")
    folder = tmp_path / "landing"
    drop(folder, "crm.csv")
    drop(folder, "erp.csv")
    first = tick(defs, instance)
    assert len(first.run_requests) == 1
    assert first.run_requests[0].tags.items() >= {"cmdm/trigger": SENSOR_NAME, "cmdm/landing_files": "2"}.items()
    assert set(parse_cursor(first.cursor)) == {"crm.csv", "erp.csv"}

    again = tick(defs, instance, first.cursor)
    assert not again.run_requests and again.skip_message.startswith("no new or changed files in")
    assert "(2 seen)" in again.skip_message

    drop(folder, "shop.csv")  # added between ticks
    drop(folder, "notes.txt")  # not matching the pattern
    drop(folder, ".crm.csv.swx")  # hidden: an editor's or a copy tool's scratch file
    drop(folder, "pos.csv.part")  # still being copied
    added = tick(defs, instance, again.cursor)
    assert [r.tags["cmdm/landing_files"] for r in added.run_requests] == ["1"]
    assert set(parse_cursor(added.cursor)) == {"crm.csv", "erp.csv", "shop.csv"}

    drop(folder, "crm.csv", "Id\n1\n2\n")  # replaced by a new delivery
    changed = tick(defs, instance, added.cursor)
    assert len(changed.run_requests) == 1 and changed.run_requests[0].tags["cmdm/landing_files"] == "1"
    keys = {first.run_requests[0].run_key, added.run_requests[0].run_key, changed.run_requests[0].run_key}
    assert len(keys) == 3


def test_sensor_run_key_is_the_same_for_the_same_files(landing, tmp_path: Path, instance) -> None:  # type: ignore[no-untyped-def]
    """A lost cursor (a daemon restarted mid-tick) sees the same files again: Dagster drops the repeat by run key."""
    defs = landing()
    drop(tmp_path / "landing", "crm.csv")
    assert tick(defs, instance).run_requests[0].run_key == tick(defs, instance).run_requests[0].run_key


def test_sensor_counts_a_removed_file_put_back_as_new(landing, tmp_path: Path, instance) -> None:  # type: ignore[no-untyped-def]
    defs = landing()
    folder = tmp_path / "landing"
    drop(folder, "crm.csv")
    drop(folder, "erp.csv")
    first = tick(defs, instance)
    (folder / "erp.csv").unlink()
    gone = tick(defs, instance, first.cursor)
    assert not gone.run_requests and set(parse_cursor(gone.cursor)) == {"crm.csv"}
    drop(folder, "erp.csv")
    assert len(tick(defs, instance, gone.cursor).run_requests) == 1


def test_sensor_waits_until_a_batch_has_settled(landing, tmp_path: Path, instance: dg.DagsterInstance) -> None:
    defs = landing(settle_seconds=30)
    folder = tmp_path / "landing"
    drop(folder, "crm.csv")
    drop(folder, "erp.csv", mtime=time.time())  # still arriving
    waiting = tick(defs, instance)
    assert not waiting.run_requests
    assert waiting.skip_message == "1 file(s) changed in the last 30s; waiting until the batch settles"
    assert waiting.cursor is None
    os.utime(folder / "erp.csv", (HOUR_AGO, HOUR_AGO))
    settled = tick(defs, instance, waiting.cursor)
    assert [r.tags["cmdm/landing_files"] for r in settled.run_requests] == ["2"]  # one run for the whole batch


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"nightly": {"cron": "at two"}}, "at schedule.nightly.cron: Value error, 'at two' is not a 5-field cron"),
        ({"nightly": {"timezone": "Mars/Olympus"}}, "at schedule.nightly.timezone: Value error, 'Mars/Olympus' is not an IANA"),
        ({"landing": {"interval_seconds": 1}}, "at schedule.landing.interval_seconds: Input should be greater than or equal to 5"),
        ({"extract_retry": {"source_kinds": ["ftp"]}}, "at schedule.extract_retry.source_kinds[0]: Input should be"),
        ({"nightly": {"cronn": "0 2 * * *"}}, "at schedule.nightly.cronn: Extra inputs are not permitted"),
    ],
)
def test_bad_schedule_settings_name_the_key(make_project, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_project(schedule=settings)
    assert message in str(caught.value)


def test_retry_policy_applies_to_database_sources_by_default(make_project) -> None:
    postgres = csv_source("pg", kind="postgresql", path=None, url="postgresql://127.0.0.1/db", table="customers")
    config = make_project(sources=[csv_source(), postgres])
    assert extract_assets.extract_retry_policy(config.source("crm"), config) is None
    policy = extract_assets.extract_retry_policy(config.source("pg"), config)
    assert policy == dg.RetryPolicy(max_retries=2, delay=5.0, backoff=dg.Backoff.EXPONENTIAL)
    off = make_project(sources=[postgres], schedule={"extract_retry": {"max_retries": 0}})
    assert extract_assets.extract_retry_policy(off.source("pg"), off) is None


def test_a_flaky_source_succeeds_on_retry(make_project, monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_project(schedule={"extract_retry": {"source_kinds": ["csv"], "delay_seconds": 0, "backoff": "constant"}})
    real_extract = extract_assets.extract
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("server closed the connection unexpectedly")
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(extract_assets, "extract", flaky)
    result = dg.materialize(
        [extract_assets.raw_asset(config.source("crm"), config)],
        resources={"warehouse": WarehouseResource(path=str(config.warehouse_path))},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert result.success and len(calls) == 2
    retried = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retried) == 1
