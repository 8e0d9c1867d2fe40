"""``cmdm report``: print a run's data-quality summary from the warehouse."""

from __future__ import annotations

import sys

from cmdm_pipeline.cli import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE


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
