"""The ``cmdm`` command: run the pipeline without the UI, report on data quality, manage keys.

Exit codes: 0 success; 1 the run failed (a source could not be read, counts did not
reconcile...), there is nothing to report yet, or `keys` refused (nothing changed); 2 the
command line or the config is wrong, or no (or a wrong) key-encryption key; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import textwrap
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_CONFIG_HELP = "project config (default: $CMDM_CONFIG, else ./cmdm.yaml); relative paths in it are read from its folder"
_EXIT_CODES = {
    None: "exit codes:\n  0    success\n  1    a run failed, `report` found nothing to report yet, or `keys` refused\n"
    "  2    wrong arguments or an invalid config (every problem is printed with its key path),\n"
    "       or (keys) no key-encryption key or a wrong one\n"
    "  130  interrupted (Ctrl-C)",
    "run": "exit codes:\n  0    the run succeeded; the summary is printed\n"
    "  1    the run failed (the failing step and its reason are printed), or another run holds the\n"
    "       warehouse (refused at once, naming that run)\n"
    "  2    wrong arguments or an invalid config (every problem is printed with its key path)\n"
    "  130  interrupted (Ctrl-C)",
    "report": "exit codes:\n  0    the report is printed\n"
    "  1    nothing to report: no warehouse or no quality_report table yet (run `cmdm run` first),\n"
    "       or the warehouse is in use by a running pipeline\n"
    "  2    wrong arguments, an invalid config, or a --run id that has no quality report",
}


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {number}")
    return number


def _parser() -> argparse.ArgumentParser:
    from cmdm_pipeline.report import STAGES

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="cmdm",
        description=_wrap("cmdm_pipeline: turn customer records from many sources into one trusted customer master."),
        epilog="Run `cmdm COMMAND --help` for a command's options.\n\n" + _EXIT_CODES[None],
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"cmdm {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    run = commands.add_parser(
        "run",
        help="run the whole pipeline once, in this process, and print a summary",
        description=_wrap(
            "Extract every configured source, standardise, validate, reconcile, match and master into the "
            "warehouse, in this process, then print rows per source, quarantine reasons and master counts. "
            "Progress goes to stderr, the summary to stdout, library warnings to the run log. The run is recorded in "
            "$DAGSTER_HOME, else in the project's .dagster folder; the summary says how to start the Dagster UI on it."
        ),
        epilog=_EXIT_CODES["run"],
        formatter_class=formatter,
    )
    run.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    run.add_argument("--quiet", action="store_true", help="print only the summary and errors, not progress or warnings")
    run.add_argument("--accept-shrink", metavar="SOURCE", action="append", default=[],
                     help="let this run master SOURCE although it yields no rows or shrank by more than "
                     "quality.max_shrink since the last good run (repeat for several sources)")
    report = commands.add_parser(
        "report",
        help="print the latest data-quality summary from the warehouse",
        description=_wrap(
            "Print one run's data-quality summary from the warehouse table quality_report: quarantine and "
            "duplicate rates per source, the worst rules by failed rows per stage, the least complete attributes, "
            "golden-record count and mean quality score, each with its change (Δ) since the previous run "
            "(view quality_trend). The warehouse is opened read-only."
        ),
        epilog=_EXIT_CODES["report"],
        formatter_class=formatter,
    )
    report.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    report.add_argument("--run", metavar="RUN_ID", help="the Dagster run id to report (default: the latest run)")
    report.add_argument("--stage", choices=STAGES, help="show only this stage's rows (default: every stage)")
    report.add_argument("--top", metavar="N", type=_positive, default=3,
                        help="worst rules and least complete attributes listed per stage (default: 3)")
    from cmdm_pipeline.protect.keys_cli import add_keys_parser

    add_keys_parser(commands, formatter, _CONFIG_HELP, _wrap)
    from cmdm_pipeline.backup import add_backup_parser

    add_backup_parser(commands, formatter, _CONFIG_HELP, _wrap)
    from cmdm_pipeline.protect.lenses_cli import add_lenses_parser

    add_lenses_parser(commands, formatter, _CONFIG_HELP, _wrap)
    from cmdm_pipeline.protect.erasure_cli import add_erase_parser

    add_erase_parser(commands, formatter, _CONFIG_HELP, _wrap)
    from cmdm_pipeline.protect.lookup_cli import add_lookup_parser

    add_lookup_parser(commands, formatter, _CONFIG_HELP, _wrap)
    from cmdm_pipeline.protect.consent_cli import add_consent_parser

    add_consent_parser(commands, formatter, _CONFIG_HELP, _wrap)
    return parser


def _wrap(text: str) -> str:
    # The raw formatter keeps the exit-code tables as written, so prose is wrapped here.
    return textwrap.fill(text, width=min(100, max(40, shutil.get_terminal_size().columns - 2)))


def _version() -> str:
    try:
        return version("cmdm_pipeline")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
        return "unknown"


def _config_after_command(argv: list[str]) -> list[str]:
    """``cmdm --config PATH COMMAND ...`` as ``cmdm COMMAND ... --config PATH``: each command reads its own
    ``--config``, and cron lines are often written the first way."""
    if argv[:1] == ["--config"] and len(argv) >= 3:
        return [*argv[2:], *argv[:2]]
    if argv[:1] and argv[0].startswith("--config=") and len(argv) >= 2:
        return [*argv[1:], argv[0]]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(_config_after_command(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        names = ", ".join(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
        parser.exit(EXIT_USAGE, f"\ncmdm: error: no COMMAND given; choose one of: {names}\n")
    try:
        if args.command == "run":
            return run(args.config, quiet=args.quiet, accept_shrink=args.accept_shrink)
        if args.command == "keys":
            from cmdm_pipeline.protect.keys_cli import keys_command

            return keys_command(args)
        if args.command == "backup":
            from cmdm_pipeline.backup import backup_command

            return backup_command(args)
        if args.command == "consent":
            from cmdm_pipeline.protect.consent_cli import consent_command

            return consent_command(args)
        if args.command == "lookup":
            from cmdm_pipeline.protect.lookup_cli import lookup_command

            return lookup_command(args)
        if args.command == "lenses":
            from cmdm_pipeline.protect.lenses_cli import lenses_command

            return lenses_command(args)
        if args.command == "erase":
            from cmdm_pipeline.protect.erasure_cli import erase_command

            return erase_command(args)
        return report(args.config, run_id=args.run, stage=args.stage, top=args.top)
    except KeyboardInterrupt:
        print("cmdm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def report(config_path: str | None, run_id: str | None = None, stage: str | None = None, top: int = 3) -> int:
    """Print a quality run's summary; exit 1 when there is nothing to report yet."""
    from cmdm_pipeline.config import ConfigError, load_config
    from cmdm_pipeline.report import ReportError, read_report, render

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        quality = read_report(config.warehouse_path, run_id)
    except ReportError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.usage else EXIT_RUN_FAILED
    print(render(quality, stage=stage, top=top))
    return EXIT_OK


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

    from cmdm_pipeline.definitions import JOB_NAME, build_definitions

    try:
        job = build_definitions(config).resolve_job_def(JOB_NAME)
    except dg.DagsterInvalidDefinitionError as exc:  # e.g. a cron expression Dagster cannot read
        print(f"cmdm: {config.base_dir}: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Dagster's own event stream is DEBUG detail; the assets' INFO lines are the progress. Quiet: errors only.
    level = "ERROR" if quiet else "INFO"
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
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data is not None:
                message = user_error_message(event.step_failure_data.error)
                print(f"cmdm: step {event.step_key} failed: {message}", file=sys.stderr)
        for check in result.get_asset_check_evaluations():
            if not check.passed and check.blocking:
                detail = f": {check.description}" if check.description else ""
                print(f"cmdm: check {check.check_name} on {check.asset_key.to_user_string()} failed{detail}", file=sys.stderr)
        print(f"cmdm: run {result.run_id} failed after {elapsed:.1f}s", file=sys.stderr)
        return EXIT_RUN_FAILED
    print(_summary(config, result.run_id, elapsed, config_path))
    return EXIT_OK


def user_error_message(error) -> str:  # type: ignore[no-untyped-def]
    """The message of the error our code raised, under Dagster's wrapping errors."""
    if error is None:
        return "unknown error"
    while error.cause is not None:
        error = error.cause
    return str(error.message).strip()


def _instance(dg, project: Path):  # type: ignore[no-untyped-def]
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


def _summary(config, run_id: str, elapsed: float, config_path: str | None = None) -> str:  # type: ignore[no-untyped-def]
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
        f"  look:   python -c \"import duckdb; duckdb.connect('{shown}', read_only=True).sql('SELECT master_id, party_type, city, "
        "country, record_count, source_systems FROM golden_customers LIMIT 5').show()\"",
        "          (inside the project environment: .uv/bin/uv run python -c ...; personal columns are ciphertext: read them"
        " through a lens)",
        f"Lenses:     .uv/bin/uv run cmdm lenses list{suffix}   (what each business area may read, and where)",
        f"Find:       .uv/bin/uv run cmdm lookup --email ADDRESS [--lens NAME]{suffix}",
        f"Dagster UI: {ui_home}.uv/bin/uv run dagster dev -w workspace.yaml   (then open http://127.0.0.1:3000)",
        f"Quality:    .uv/bin/uv run cmdm report{suffix}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
