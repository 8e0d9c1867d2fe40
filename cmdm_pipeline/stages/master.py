"""Master: give each cluster of source records a master id that stays stable across runs.

Rules, in order: a previous master goes with the new cluster holding most of its records
(a split keeps the id with the larger part); when several previous masters land in one
cluster, the oldest survives and the others are retired as merged into it; clusters with no
surviving previous master get a fresh id. Fresh ids are numbered in the order of each
cluster's smallest record key, so the same input gives the same ids on a new warehouse too.
An id is never issued twice: fresh ids continue after the highest ever issued (kept in
``master_id_sequence``), not after the highest still in use, since a merged or erased id is gone
from ``customer_xref`` but may still name that customer in history, lineage, audit or downstream.

A record missing from a run (its source empty that night, or the record left out) keeps its master id
in ``customer_xref_absent`` and counts as a record of that master again when it returns, so it gets its
id back; while it is away its remembered id follows merges (a merged id never comes back).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

KEY = ["source_system", "source_record_id"]
ID_PREFIX = "M"
ID_DIGITS = 9

XREF_COLUMNS: dict[str, pl.DataType] = {
    "source_system": pl.String(),
    "source_record_id": pl.String(),
    "master_id": pl.String(),
    "link_confidence": pl.Float64(),
    "first_seen": pl.Datetime("us", "UTC"),
    "last_seen": pl.Datetime("us", "UTC"),
}

LINEAGE_COLUMNS: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "event": pl.String(),  # merged | split
    "master_id": pl.String(),  # merged: the retired id; split: the new id
    "related_master_id": pl.String(),  # merged: the surviving id; split: the id it split from
    "records": pl.Int64(),
    "recorded_at": pl.Datetime("us", "UTC"),
}


@dataclass(frozen=True)
class MasterAssignment:
    xref: pl.DataFrame  # one row per source record of this run (XREF_COLUMNS)
    absent: pl.DataFrame  # one row per known source record missing from this run (XREF_COLUMNS, last_seen kept)
    lineage: pl.DataFrame  # one row per merge or split this run (LINEAGE_COLUMNS)
    highest_issued: int  # the number of the highest master id issued so far, this run's included


def format_master_id(number: int) -> str:
    return f"{ID_PREFIX}{number:0{ID_DIGITS}d}"


def _record_key() -> pl.Expr:
    # A unit separator sorts below printable characters: keys order by system, then id.
    return pl.concat_str(pl.col("source_system"), pl.lit("\x1f"), pl.col("source_record_id"))


def _id_number(column: str) -> pl.Expr:
    return pl.col(column).str.strip_prefix(ID_PREFIX).cast(pl.Int64)


def assign_master_ids(
    clusters: pl.DataFrame, previous: pl.DataFrame | None, run_id: str, now: dt.datetime, issued: int = 0,
    absent: pl.DataFrame | None = None,
) -> MasterAssignment:
    """``clusters``: source_system, source_record_id, cluster (any id), link_confidence.
    ``previous``: the last run's ``customer_xref`` (or None on a new warehouse); ``issued``: the number of
    the highest master id ever issued (see :func:`highest_issued`); ``absent``: the last run's
    ``customer_xref_absent``, records missing from earlier runs with the master ids they had."""
    previous = pl.DataFrame(schema=XREF_COLUMNS) if previous is None else previous.select(list(XREF_COLUMNS))
    if absent is not None:
        previous = pl.concat([previous, absent.select(list(XREF_COLUMNS)).join(previous, on=KEY, how="anti")])
    seen = clusters.join(
        previous.select(*KEY, pl.col("master_id").alias("old_master"), "first_seen"), on=KEY, how="left"
    )
    master_age = previous.group_by("master_id").agg(pl.col("first_seen").min().alias("born")).rename(
        {"master_id": "old_master"}
    )
    overlap = (
        seen.filter(pl.col("old_master").is_not_null())
        .group_by("cluster", "old_master")
        .agg(pl.len().alias("shared"), _record_key().min().alias("first_key"))
        .join(master_age, on="old_master", how="left")
    )
    # Each previous master picks the cluster holding most of its records (ties: the cluster
    # whose smallest shared record key sorts first), so a split keeps the id with the larger part.
    home = overlap.sort(["old_master", "shared", "first_key"], descending=[False, True, False]).unique(
        "old_master", keep="first", maintain_order=True
    )
    # Of the previous masters that picked a cluster, the oldest keeps its id there.
    survivors = home.sort(["cluster", "born", "old_master"]).unique("cluster", keep="first", maintain_order=True)
    merged = home.join(survivors.select("cluster", pl.col("old_master").alias("survivor")), on="cluster").filter(
        pl.col("old_master") != pl.col("survivor")
    )

    cluster_order = clusters.group_by("cluster").agg(_record_key().min().alias("first_key"))
    fresh = cluster_order.join(survivors.select("cluster"), on="cluster", how="anti").sort("first_key")
    start = max(previous.select(_id_number("master_id").max()).item() or 0, issued)
    fresh = fresh.with_row_index("n", offset=start + 1).with_columns(
        pl.format("{}{}", pl.lit(ID_PREFIX), pl.col("n").cast(pl.String).str.zfill(ID_DIGITS)).alias("master_id")
    )
    ids = pl.concat(
        [survivors.select("cluster", pl.col("old_master").alias("master_id")), fresh.select("cluster", "master_id")]
    )

    at = pl.lit(now, dtype=pl.Datetime("us", "UTC"))
    xref = (
        seen.join(ids, on="cluster", how="left")
        .with_columns(pl.col("first_seen").fill_null(at), at.alias("last_seen"))
        .select(list(XREF_COLUMNS))
        .sort(KEY)
    )

    # A split: records of a previous master now in a cluster that did not keep that master's id.
    split = (
        overlap.join(home.select("old_master", pl.col("cluster").alias("home")), on="old_master")
        .filter(pl.col("cluster") != pl.col("home"))
        .join(ids, on="cluster")
        .filter(pl.col("master_id") != pl.col("old_master"))
    )
    lineage = pl.concat(
        [
            merged.select(
                pl.lit("merged").alias("event"), pl.col("old_master").alias("master_id"),
                pl.col("survivor").alias("related_master_id"), pl.col("shared").alias("records"),
            ),
            split.select(
                pl.lit("split").alias("event"), "master_id",
                pl.col("old_master").alias("related_master_id"), pl.col("shared").alias("records"),
            ),
        ]
    ).with_columns(pl.lit(run_id).alias("run_id"), at.alias("recorded_at"), pl.col("records").cast(pl.Int64))
    # Records missing tonight keep their master id, or the id it merged into.
    still_absent = (
        previous.join(clusters.select(KEY), on=KEY, how="anti")
        .join(merged.select(pl.col("old_master").alias("master_id"), "survivor"), on="master_id", how="left")
        .with_columns(pl.coalesce("survivor", "master_id").alias("master_id"))
        .select(list(XREF_COLUMNS))
        .sort(KEY)
    )
    return MasterAssignment(xref, still_absent,
                            lineage.select(list(LINEAGE_COLUMNS)).sort("event", "master_id", "related_master_id"),
                            start + fresh.height)


def highest_issued(sequence: pl.DataFrame | None, lineage: pl.DataFrame) -> int:
    """The highest master id number issued: from ``master_id_sequence``, or, on a warehouse written before
    it existed, from every id ``master_id_lineage`` names (retired ids included)."""
    known = [0]
    if sequence is not None and not sequence.is_empty():
        known.append(int(sequence["highest_issued"].max()))  # type: ignore[arg-type]
    for column in ("master_id", "related_master_id"):
        known.append(lineage.select(_id_number(column).max()).item() or 0)
    return max(known)


def sequence_row(highest: int, run_id: str, now: dt.datetime) -> pl.DataFrame:
    """The one row of ``master_id_sequence``."""
    return pl.DataFrame({"highest_issued": [highest], "run_id": [run_id], "updated_at": [now]},
                        schema={"highest_issued": pl.Int64, "run_id": pl.String, "updated_at": pl.Datetime("us", "UTC")})
