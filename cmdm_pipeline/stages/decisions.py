"""Steward decisions: source record pairs judged ``same`` or ``different``, which win over the model.

They come from the workbench's decision store (`cmdm serve`) and from a CSV file (``matching.decisions``,
an import); the latest decision on a pair wins, whichever its origin. ``same`` becomes a must-link and
``different`` a cannot-link when records are clustered.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from cmdm_pipeline.decision_store import read_store_decisions

KEY = ["source_system", "source_record_id"]

DECISION_COLUMNS: dict[str, pl.DataType] = {
    "source_system_l": pl.String(),
    "source_record_id_l": pl.String(),
    "source_system_r": pl.String(),
    "source_record_id_r": pl.String(),
    "decision": pl.String(),  # same | different
    "decided_by": pl.String(),
    "decided_at": pl.String(),
    "reason": pl.String(),
}


def record_key(system: str, record_id: str) -> pl.Expr:
    # A unit separator sorts below every printable character, so keys order by system first.
    return pl.concat_str(system, pl.lit("\x1f"), record_id)


class DecisionsError(ValueError):
    """The steward decisions file cannot be used; the message names file, row and column."""


def read_decisions(path: Path | None) -> pl.DataFrame:
    """Steward decisions from CSV; no file means no decisions yet."""
    if path is None or not path.exists():
        return pl.DataFrame(schema=DECISION_COLUMNS)
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise DecisionsError(f"{path}: cannot read decisions CSV: {exc}") from None
    missing = [c for c in DECISION_COLUMNS if c not in frame.columns and c != "reason"]
    if missing:
        raise DecisionsError(f"{path}: missing column(s) {missing}; expected {list(DECISION_COLUMNS)}")
    if "reason" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("reason"))
    frame = frame.select(list(DECISION_COLUMNS)).with_columns(pl.col("decision").str.strip_chars().str.to_lowercase())
    bad = frame.with_row_index("row", offset=2).filter(~pl.col("decision").is_in(["same", "different"]))
    if bad.height:
        raise DecisionsError(f"{path}: row {bad['row'][0]}, column decision: expected `same` or `different`")
    return latest_decisions(frame)


def steward_decisions(csv_path: Path | None, store_path: Path) -> pl.DataFrame:
    """The decisions in force: the CSV import's and the workbench store's, the latest per pair."""
    csv = read_decisions(csv_path)
    store = read_store_decisions(store_path)
    if not store.height:
        return csv
    return latest_decisions(pl.concat([csv, store.select(list(DECISION_COLUMNS))]))


def latest_decisions(frame: pl.DataFrame) -> pl.DataFrame:
    """One decision per unordered pair, the latest (``decided_at``; of equal times, the later row)."""
    ordered = frame.with_columns(
        (record_key("source_system_l", "source_record_id_l") <= record_key("source_system_r", "source_record_id_r"))
        .alias("__in_order")
    )
    left = pl.when("__in_order")
    normalised = ordered.select(
        left.then(pl.col("source_system_l")).otherwise(pl.col("source_system_r")).alias("source_system_l"),
        left.then(pl.col("source_record_id_l")).otherwise(pl.col("source_record_id_r")).alias("source_record_id_l"),
        left.then(pl.col("source_system_r")).otherwise(pl.col("source_system_l")).alias("source_system_r"),
        left.then(pl.col("source_record_id_r")).otherwise(pl.col("source_record_id_l")).alias("source_record_id_r"),
        "decision", "decided_by", "decided_at", "reason",
    )
    pair = ["source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r"]
    # Stable: of two decisions made at the same time, the one further down the file wins.
    return normalised.sort("decided_at", maintain_order=True, nulls_last=False).unique(pair, keep="last", maintain_order=True)


def decided_edges(decisions: pl.DataFrame, ids: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(must-links, cannot-links) as node_l, node_r pairs of record positions; ``ids``: unique_id + key."""

    def nodes(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(
            ids.rename({"unique_id": "node_l", "source_system": "source_system_l", "source_record_id": "source_record_id_l"}),
            on=["source_system_l", "source_record_id_l"],
        ).join(
            ids.rename({"unique_id": "node_r", "source_system": "source_system_r", "source_record_id": "source_record_id_r"}),
            on=["source_system_r", "source_record_id_r"],
        )

    same = nodes(decisions.filter(pl.col("decision") == "same")).select("node_l", "node_r")
    different = nodes(decisions.filter(pl.col("decision") == "different")).select("node_l", "node_r")
    return same, different
