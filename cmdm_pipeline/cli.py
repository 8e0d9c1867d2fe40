"""The ``cmdm`` command: run the pipeline without the UI and print what happened.

Exit codes: 0 success; 1 the run failed (a source could not be read, counts did not
reconcile...); 2 the command line or the config is wrong.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmdm",
        description="cmdm_pipeline: turn customer records from many sources into one trusted customer master.",
        epilog="The config path is --config, else $CMDM_CONFIG, else ./cmdm.yaml. Exit codes: 0 ok, 1 run failed, 2 usage or config error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the whole pipeline once, in this process, and print a summary",
        description="Extract every configured source, standardise, validate and reconcile into the warehouse, then print a summary.",
    )
    run.add_argument("--config", metavar="PATH", help="project config (default: $CMDM_CONFIG or ./cmdm.yaml)")
    run.add_argument("--quiet", action="store_true", help="print only the summary, not progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return run(args.config, quiet=args.quiet)
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands first


def run(config_path: str | None, quiet: bool = False) -> int:
    """Execute the job in-process; print progress, then the run summary."""
    started = time.perf_counter()
    from cmdm_pipeline.config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _progress(quiet, f"config {config.base_dir}: {len(config.sources)} sources, warehouse {config.warehouse_path}")

    import dagster as dg

    from cmdm_pipeline.definitions import JOB_NAME, build_definitions

    job = build_definitions(config).resolve_job_def(JOB_NAME)
    # Dagster's own event stream is DEBUG detail; the assets' INFO lines are the progress.
    logging.getLogger("dagster").setLevel(logging.WARNING if quiet else logging.INFO)
    run_config = {"loggers": {"console": {"config": {"log_level": "WARNING" if quiet else "INFO"}}}}
    with _instance(dg) as instance:
        result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    elapsed = time.perf_counter() - started
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data is not None:
                message = user_error_message(event.step_failure_data.error)
                print(f"cmdm: step {event.step_key} failed: {message}", file=sys.stderr)
        print(f"cmdm: run {result.run_id} failed after {elapsed:.1f}s", file=sys.stderr)
        return EXIT_RUN_FAILED
    print(_summary(config, result.run_id, elapsed))
    return EXIT_OK


def user_error_message(error) -> str:  # type: ignore[no-untyped-def]
    """The message of the error our code raised, under Dagster's wrapping errors."""
    if error is None:
        return "unknown error"
    while error.cause is not None:
        error = error.cause
    return str(error.message).strip()


def _instance(dg):  # type: ignore[no-untyped-def]
    """The user's Dagster instance when DAGSTER_HOME is set (runs show in the UI), else a throwaway one."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral(settings={"telemetry": {"enabled": False}})


def _progress(quiet: bool, message: str) -> None:
    if not quiet:
        print(f"cmdm: {message}", file=sys.stderr)


def _summary(config, run_id: str, elapsed: float) -> str:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.warehouse import Warehouse

    store = Warehouse(config.warehouse_path)
    counts = store.query(
        "SELECT source_system, rows_read, rows_validated, rows_quarantined FROM run_reconciliation "
        "WHERE run_id = $run_id ORDER BY source_system",
        {"run_id": run_id},
    )
    reasons = store.query(
        "SELECT rule, count(*) AS n FROM (SELECT unnest(rules_broken) AS rule FROM quarantined_records "
        "WHERE run_id = $run_id) GROUP BY rule ORDER BY n DESC, rule",
        {"run_id": run_id},
    )
    lines = [f"\ncmdm run {run_id} finished in {elapsed:.1f}s\n", f"{'source':<16}{'read':>10}{'validated':>12}{'quarantined':>13}"]
    for source, read, valid, held in counts.iter_rows():
        lines.append(f"{source:<16}{read:>10,}{valid:>12,}{held:>13,}")
    totals = counts.select("rows_read", "rows_validated", "rows_quarantined").sum().row(0)
    lines.append(f"{'total':<16}{totals[0]:>10,}{totals[1]:>12,}{totals[2]:>13,}")
    if reasons.height:
        lines.append("\nquarantined rows by rule broken (a row can break several):")
        lines += [f"  {rule:<40}{n:>8,}" for rule, n in reasons.iter_rows()]
    tables = set(store.tables())
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
    lines += [
        f"\nwarehouse: {shown}",
        "  tables: golden_customers, customer_xref, match_review_queue, validated_customers, quarantined_records,",
        "          run_reconciliation, golden_customers_history, ... (README.md, 'Output tables')",
        f"  look:   python -c \"import duckdb; duckdb.connect('{shown}', read_only=True).sql('FROM golden_customers LIMIT 5').show()\"",
        "          (inside the project environment: .uv/bin/uv run python -c ...)",
        "Dagster UI: .uv/bin/uv run dagster dev -w workspace.yaml   (then open http://127.0.0.1:3000)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
