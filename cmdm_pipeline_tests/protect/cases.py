"""Tiny hand-made frames the consent and audit tests share."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from cmdm_pipeline.protect.consent.update import HISTORY_COLUMNS

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
LINEAGE_SCHEMA = {"run_id": pl.String(), "event": pl.String(), "master_id": pl.String(),
                  "related_master_id": pl.String(), "records": pl.Int64(), "recorded_at": pl.Datetime("us", "UTC")}


def history(*events: dict[str, Any]) -> pl.DataFrame:
    """consent_history rows; each event names what it needs, the rest is filled in."""
    rows = []
    for i, event in enumerate(events, start=1):
        row: dict[str, Any] = {name: None for name in HISTORY_COLUMNS}
        row.update(event_id=f"E{i:03d}", event_hash=f"h{i}", purpose="marketing", channel="email", action="granted",
                   occurred_at=T0, source_row_number=i, run_id="r0", ingested_at=T0, resolution="unresolved",
                   candidate_masters=0)
        row.update(event)
        rows.append(row)
    return pl.DataFrame(rows, schema=HISTORY_COLUMNS, orient="row")


def lineage(*merges: tuple[str, str], splits: tuple[tuple[str, str], ...] = ()) -> pl.DataFrame:
    """master_id_lineage: merged (retired, survivor) and split (new, from) rows."""
    rows = [("r1", "merged", retired, survivor, 1, T0) for retired, survivor in merges]
    rows += [("r1", "split", new, old, 1, T0) for new, old in splits]
    return pl.DataFrame(rows, schema=LINEAGE_SCHEMA, orient="row")


def xref(**records: str) -> pl.DataFrame:
    """customer_xref from crm record id = master id."""
    return pl.DataFrame({"source_system": ["crm"] * len(records), "source_record_id": list(records),
                         "master_id": list(records.values())})
