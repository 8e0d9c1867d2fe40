"""When `cmdm_job` runs on its own: the nightly schedule and the landing-folder sensor.

Both need the Dagster daemon (`dagster dev` starts one; in production `dagster-daemon run`).
Both are STOPPED unless `schedule.*.running` in cmdm.yaml says otherwise, so a laptop running
`dagster dev` does not start pipelines by itself. Neither starts a run while another run of
the job is in progress: DuckDB allows one writer per warehouse file.
"""

# No `from __future__ import annotations`: Dagster reads the context parameter's type hint.

import datetime as dt
import fnmatch
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from cmdm_pipeline.config import ProjectConfig

SCHEDULE_NAME = "nightly_consolidation"
SENSOR_NAME = "landing_files"
TRIGGER_TAG = "cmdm/trigger"

# Names that copy tools and editors use while a file is still being written.
_PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart", ".swp")
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

#: A file's identity for the sensor: (size in bytes, modification time in ns).
Signature = tuple[int, int]


@dataclass(frozen=True)
class LandingScan:
    """What the sensor decided for one look at the landing folder."""

    changed: dict[str, Signature]  # new or changed since the cursor, all settled
    seen: dict[str, Signature]  # the folder now: the next cursor
    settling: int  # changed files modified less than `settle_seconds` ago


def scan_landing(folder: Path, pattern: str, cursor: dict[str, Signature], settle_seconds: float,
                 now: float) -> LandingScan:
    """Compare the folder with the cursor. While any changed file is settling nothing is taken and `seen`
    stays the cursor, so the whole batch is taken together once it has settled."""
    current: dict[str, Signature] = {}
    for path in folder.iterdir():
        name = path.name
        if name.startswith((".", "~")) or name.endswith(_PARTIAL_SUFFIXES) or not fnmatch.fnmatch(name, pattern):
            continue
        try:
            if not path.is_file():
                continue
            stat = path.stat()
        except FileNotFoundError:  # removed between listing and stat
            continue
        current[name] = (stat.st_size, stat.st_mtime_ns)
    changed = {name: sig for name, sig in current.items() if cursor.get(name) != sig}
    settling = sum(1 for _, mtime in changed.values() if now - mtime / 1e9 < settle_seconds)
    if settling:
        # Nothing is taken from a batch still arriving: the whole batch waits for the next look.
        return LandingScan(changed={}, seen=dict(cursor), settling=settling)
    return LandingScan(changed=changed, seen=current, settling=0)


def landing_run_key(changed: dict[str, Signature]) -> str:
    """The same files in the same state give the same key, so Dagster never starts them twice."""
    digest = hashlib.sha256(json.dumps(sorted(changed.items())).encode()).hexdigest()
    return f"landing-{digest[:20]}"


def parse_cursor(cursor: str | None) -> dict[str, Signature]:
    if not cursor:
        return {}
    return {name: (int(sig[0]), int(sig[1])) for name, sig in json.loads(cursor).get("files", {}).items()}


def dump_cursor(seen: dict[str, Signature]) -> str:
    return json.dumps({"files": {name: list(sig) for name, sig in sorted(seen.items())}}, separators=(",", ":"))


def _active_run(instance: dg.DagsterInstance, job_name: str) -> str | None:
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=_ACTIVE), limit=1)
    return runs[0].run_id if runs else None


def nightly_schedule(config: ProjectConfig, job_name: str) -> dg.ScheduleDefinition:
    nightly = config.schedule.nightly

    @dg.schedule(
        name=SCHEDULE_NAME,
        job_name=job_name,
        cron_schedule=nightly.cron,
        execution_timezone=nightly.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if nightly.running else dg.DefaultScheduleStatus.STOPPED,
        description=f"Run {job_name} at `{nightly.cron}` ({nightly.timezone}); skipped while a run of it is in progress.",
    )
    def _nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        active = _active_run(context.instance, job_name)
        if active:
            return dg.SkipReason(f"run {active} of {job_name} is still in progress; the next tick runs again")
        # The daemon and the UI's "Test schedule" always set the tick's time.
        scheduled = context.scheduled_execution_time.astimezone(dt.UTC).isoformat(timespec="minutes")
        return dg.RunRequest(tags={TRIGGER_TAG: SCHEDULE_NAME, "cmdm/scheduled_for": scheduled})

    return _nightly


def landing_sensor(config: ProjectConfig, job_name: str) -> dg.SensorDefinition:
    landing = config.schedule.landing
    folder = config.resolve(landing.folder) if landing.folder is not None else None

    @dg.sensor(
        name=SENSOR_NAME,
        job_name=job_name,
        minimum_interval_seconds=landing.interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if landing.running else dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Run {job_name} when files matching `{landing.pattern}` are new or changed in "
            f"{folder if folder else 'the landing folder (not configured: schedule.landing.folder)'}."
        ),
    )
    def _landing(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        if folder is None:
            return dg.SkipReason("no landing folder configured: set schedule.landing.folder in cmdm.yaml")
        if not folder.is_dir():
            return dg.SkipReason(f"landing folder {folder} does not exist or is not a folder")
        cursor = parse_cursor(context.cursor)
        scan = scan_landing(folder, landing.pattern, cursor, landing.settle_seconds, time.time())
        if scan.settling:
            return dg.SkipReason(
                f"{scan.settling} file(s) changed in the last {landing.settle_seconds}s; waiting until the batch settles"
            )
        if not scan.changed:
            # Files removed since the last run leave the cursor, so one put back counts as new.
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"no new or changed files in {folder} ({len(scan.seen)} seen)"),
                cursor=dump_cursor(scan.seen),
            )
        active = _active_run(context.instance, job_name)
        if active:
            # The cursor stays, so these files start a run once the current one has ended.
            return dg.SkipReason(f"{len(scan.changed)} new or changed file(s), but run {active} is in progress")
        request = dg.RunRequest(
            run_key=landing_run_key(scan.changed),
            tags={TRIGGER_TAG: SENSOR_NAME, "cmdm/landing_files": str(len(scan.changed))},
        )
        return dg.SensorResult(run_requests=[request], cursor=dump_cursor(scan.seen))

    return _landing


def automation(config: ProjectConfig, job_name: str) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    """The schedules and sensors of one project config, for `Definitions`."""
    return [nightly_schedule(config, job_name)], [landing_sensor(config, job_name)]
