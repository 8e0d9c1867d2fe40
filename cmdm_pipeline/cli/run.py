"""``cmdm run``: execute the job in this process, then print the run summary."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
import uuid
from pathlib import Path

from cmdm_pipeline.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE


def run(config_path: str | None, quiet: bool = False, accept_shrink: list[str] | None = None) -> int:
    """Execute the job in-process; print progress, then the run summary. ``accept_shrink``: sources this run
    may master although they yield no rows, shrank past ``quality.max_shrink`` or left ``sources``."""
    started = time.perf_counter()
    from cmdm_pipeline.config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _progress(quiet, f"config {config.base_dir}: {len(config.sources)} sources, warehouse {config.warehouse_path}")

    import dagster as dg

    from cmdm_pipeline.console import root_cause, terminal_logger
    from cmdm_pipeline.definitions import JOB_NAME, build_definitions

    try:
        job = build_definitions(config).resolve_job_def(JOB_NAME).with_logger_defs({"console": terminal_logger()})
    except dg.DagsterInvalidDefinitionError as exc:  # e.g. a cron expression Dagster cannot read
        print(f"cmdm: {config.base_dir}: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Dagster's own event stream is DEBUG detail; the assets' INFO lines are the progress. Quiet: nothing from
    # the run's log, as the errors (a failed step, a failed check) are printed below once, without stack traces.
    level = "CRITICAL" if quiet else "INFO"
    logging.getLogger("dagster").setLevel(level)
    run_config = {"loggers": {"console": {"config": {"log_level": level}}}}
    from cmdm_pipeline.assets.reconcile import ACCEPT_SHRINK_TAG
    from cmdm_pipeline.console import library_logs_to_run_log
    from cmdm_pipeline.progress import shown_on_terminal
    from cmdm_pipeline.run_lock import WarehouseBusyError, run_lock

    tags = {ACCEPT_SHRINK_TAG: ",".join(accept_shrink)} if accept_shrink else None
    run_id = str(uuid.uuid4())  # Dagster's own form of run id, chosen here so the lock can name it
    try:
        with run_lock(config.warehouse_path, run_id), _instance(dg, config.base_dir) as instance, \
                library_logs_to_run_log(), shown_on_terminal(quiet):
            result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False,
                                            tags=tags, run_id=run_id)
    except WarehouseBusyError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    elapsed = time.perf_counter() - started
    if not result.success and _interrupted(result):
        print(f"cmdm: run {result.run_id} interrupted after {elapsed:.1f}s: the steps that had finished wrote their "
              "tables, the others keep their previous ones", file=sys.stderr)
        return EXIT_INTERRUPTED
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data is not None:
                if _failed_check(event.step_failure_data.error):
                    continue  # said below, with the check's own description
                message = root_cause(event.step_failure_data.error)
                print(f"cmdm: step {event.step_key} failed: {message}", file=sys.stderr)
        for check in result.get_asset_check_evaluations():
            if not check.passed and check.blocking:
                detail = f": {check.description}" if check.description else ""
                print(f"cmdm: check {check.check_name} on {check.asset_key.to_user_string()} failed{detail}", file=sys.stderr)
        print(f"cmdm: run {result.run_id} failed after {elapsed:.1f}s", file=sys.stderr)
        return EXIT_RUN_FAILED
    print(_summary(config, result.run_id, elapsed, config_path))
    return EXIT_OK


def _interrupted(result) -> bool:
    """Whether Ctrl-C (or SIGTERM) ended the run. Dagster turns it into a failed step; a DuckDB query running
    then turns it into its own error ("Query interrupted", or "Interrupted!" when :mod:`cmdm_pipeline.interrupts`
    stopped it), and the interrupt's type is lost."""
    from dagster._core.execution.plan.objects import ErrorSource

    from cmdm_pipeline.console import root_cause

    return any(
        event.step_failure_data.error_source == ErrorSource.INTERRUPT
        or _interrupted_query(root_cause(event.step_failure_data.error))
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data is not None
    )


def _interrupted_query(cause: str) -> bool:
    # DuckDB's exception classes print with their module, which moved between releases (duckdb, _duckdb).
    return cause == "RuntimeError: Query interrupted" or cause.endswith("InterruptException: INTERRUPT Error: Interrupted!")


def _failed_check(error) -> bool:
    return error is not None and error.cls_name == "DagsterAssetCheckFailedError"


def _instance(dg, project: Path):
    """The instance in $DAGSTER_HOME, else the project's own (``dagster_home``), which the docs start the UI on."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.local_temp(tempdir=str(dagster_home(project)))


def dagster_home(project: Path) -> Path:
    """``<project>/.dagster``, made on first use with the project's dagster.yaml (or telemetry off)."""
    home = project / ".dagster"
    settings = home / "dagster.yaml"
    if not settings.is_file():
        home.mkdir(exist_ok=True)
        shared = project / "dagster.yaml"
        partial = settings.with_suffix(".partial")
        partial.write_text(shared.read_text() if shared.is_file() else "telemetry:\n  enabled: false\n")
        partial.replace(settings)
    return home


def _progress(quiet: bool, message: str) -> None:
    if not quiet:
        print(f"cmdm: {message}", file=sys.stderr)


def _summary(config, run_id: str, elapsed: float, config_path: str | None = None) -> str:
    from cmdm_pipeline.console import table
    from cmdm_pipeline.warehouse import Warehouse

    store = Warehouse(config.warehouse_path)
    counts = store.query(
        "SELECT source_system, rows_read, rows_validated, rows_quarantined, rows_erased FROM run_reconciliation "
        "WHERE run_id = $run_id ORDER BY source_system",
        {"run_id": run_id},
    )
    reasons = store.query(
        "SELECT rule, count(*) AS n FROM (SELECT unnest(rules_broken) AS rule FROM quarantined_records "
        "WHERE run_id = $run_id) GROUP BY rule ORDER BY n DESC, rule",
        {"run_id": run_id},
    )
    totals = counts.select("rows_read", "rows_validated", "rows_quarantined", "rows_erased").sum().row(0)
    rows = [(source, *(f"{n:,}" for n in numbers)) for source, *numbers in [*counts.iter_rows(), ("total", *totals)]]
    lines = [f"\ncmdm run {run_id} finished in {elapsed:.1f}s\n",
             table(["source", "read", "validated", "quarantined", "erased"], rows)]
    if reasons.height:
        lines.append("\nquarantined rows by rule broken (a row can break several):")
        lines.append(table(["rule", "rows"], [(rule, f"{n:,}") for rule, n in reasons.iter_rows()], indent=2))
    tables = set(store.tables())
    if "cmdm_encrypted_columns" in tables:
        encrypted = store.query("SELECT count(*) AS n, count(DISTINCT table_name) AS t FROM cmdm_encrypted_columns").row(0)
        lines.append(f"\nencrypted at rest: {encrypted[0]} personal columns in {encrypted[1]} tables")
    elif not config.protection.encrypt:
        lines.append("\nencryption at rest is OFF (protection.encrypt: false): personal data is stored in plaintext")
    if "erasure_log" in tables:
        done = store.query("SELECT status, count(*) AS n FROM erasure_log WHERE run_id = $run_id GROUP BY 1 ORDER BY 1",
                           {"run_id": run_id})
        if done.height:
            lines.append("erasure requests processed: " + ", ".join(f"{n:,} {status}" for status, n in done.iter_rows()))
    if {"customer_xref", "golden_customers", "match_review_queue"} <= tables:
        masters = store.query("SELECT party_type, count(*) AS n FROM golden_customers GROUP BY 1 ORDER BY 1")
        review = store.query("SELECT review_type, count(*) AS n FROM match_review_queue GROUP BY 1 ORDER BY 1")
        lines.append(
            "\nmaster customers: " + ", ".join(f"{n:,} {party}" for party, n in masters.iter_rows())
            + "; to review: " + (", ".join(f"{n:,} {kind}s" for kind, n in review.iter_rows()) or "nothing")
        )
    warehouse = config.warehouse_path
    try:
        shown = warehouse.relative_to(Path.cwd())
    except ValueError:
        shown = warehouse
    suffix = f" --config {shlex.quote(config_path)}" if config_path else ""
    # The UI shows this run only on the instance it was recorded in.
    ui_home = "" if os.environ.get("DAGSTER_HOME") else f"DAGSTER_HOME={shlex.quote(str(dagster_home(config.base_dir)))} "
    lines += [
        f"\nwarehouse: {shown}",
        "  tables: golden_customers, customer_xref, match_review_queue, validated_customers, quarantined_records,",
        "          run_reconciliation, golden_customers_history, ... (docs/reference/tables.md)",
        f"  look:   python -c \"import duckdb; duckdb.connect('{shown}', read_only=True).sql('SELECT master_id, party_type, city, "  # noqa: S608 - identifiers are constants or quoted, values bound
        "country, record_count, source_systems FROM golden_customers LIMIT 5').show()\"",
        "          (inside the project environment: .uv/bin/uv run python -c ...; personal columns are ciphertext: read them"
        " through a lens)",
        f"Lenses:     .uv/bin/uv run cmdm lenses list{suffix}   (what each business area may read, and where)",
        f"Find:       .uv/bin/uv run cmdm lookup --email ADDRESS [--lens NAME]{suffix}",
        f"Dagster UI: {ui_home}.uv/bin/uv run dagster dev -w workspace.yaml   (then open http://127.0.0.1:3000)",
        f"Quality:    .uv/bin/uv run cmdm report{suffix}",
        f"Workbench:  .uv/bin/uv run cmdm serve{suffix}   (review queue, masters, resolve API; then open "
        f"{config.web.base_url})",
    ]
    return "\n".join(lines)
