"""The ``cmdm`` command: the parser and ``main``; one module per command (``run``, ``report``, ``keys``,
``lenses``, ``erase``, ``lookup``, ``consent``, ``backup``, ``serve``), each with its parser and handler.

Exit codes: 0 success; 1 the run failed (a source could not be read, counts did not
reconcile...), there is nothing to report yet, or `keys` refused (nothing changed); 2 the
command line or the config is wrong, or no (or a wrong) key-encryption key; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import textwrap
from importlib.metadata import PackageNotFoundError, version

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
    from cmdm_pipeline.cli.keys import add_keys_parser

    add_keys_parser(commands, formatter, _CONFIG_HELP, _wrap)
    from cmdm_pipeline.cli.backup import add_backup_parser

    add_backup_parser(commands, formatter, _CONFIG_HELP, _wrap)
    from cmdm_pipeline.cli.lenses import add_lenses_parser

    add_lenses_parser(commands, formatter, _CONFIG_HELP, _wrap)
    from cmdm_pipeline.cli.erase import add_erase_parser

    add_erase_parser(commands, formatter, _CONFIG_HELP, _wrap)
    from cmdm_pipeline.cli.lookup import add_lookup_parser

    add_lookup_parser(commands, formatter, _CONFIG_HELP, _wrap)
    from cmdm_pipeline.cli.consent import add_consent_parser

    add_consent_parser(commands, formatter, _CONFIG_HELP, _wrap)
    from cmdm_pipeline.cli.serve import add_serve_parser

    add_serve_parser(commands, formatter, _CONFIG_HELP, _wrap)
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
        names = ", ".join(str(name) for name in parser._subparsers._group_actions[0].choices or ())  # type: ignore[union-attr]
        parser.exit(EXIT_USAGE, f"\ncmdm: error: no COMMAND given; choose one of: {names}\n")
    try:
        if args.command == "run":
            from cmdm_pipeline.cli.run import run

            return run(args.config, quiet=args.quiet, accept_shrink=args.accept_shrink)
        if args.command != "report":
            # Each other command is the module of its name, with `<name>_command(args)`; imported on use
            # so `cmdm --help` does not load Dagster, Splink or the crypto stack.
            module = importlib.import_module(f"cmdm_pipeline.cli.{args.command}")
            code: int = getattr(module, f"{args.command}_command")(args)
            return code
        from cmdm_pipeline.cli.report import report

        return report(args.config, run_id=args.run, stage=args.stage, top=args.top)
    except KeyboardInterrupt:
        print("cmdm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
