"""Verdicts of the quality checks, as plain data: passed or not, why, and counts to show.

The Dagster asset checks in ``cmdm_pipeline.assets.quality`` read the tables and turn these
into ``AssetCheckResult``s. Metadata holds source names, counts and rates, never record values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from cmdm_pipeline.quality.report import CLUSTER_SIZE_BUCKETS


@dataclass(frozen=True)
class Verdict:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    warn_only: bool = False  # a failure is shown as a warning and does not block


def personal_data_encrypted_verdict(plaintext: list[str], tables: int, encrypt: bool) -> Verdict:
    """``plaintext``: ``table.column`` of personal columns not stored as ciphertext, in ``tables`` tables checked."""
    metadata = {"tables_checked": tables, "plaintext_personal_columns": len(plaintext)}
    if not encrypt:
        return Verdict(False, "protection.encrypt is off: personal columns are stored in plaintext", metadata, warn_only=True)
    if plaintext:
        shown = ", ".join(plaintext[:10]) + (f" and {len(plaintext) - 10} more" if len(plaintext) > 10 else "")
        return Verdict(False, f"personal columns stored in plaintext: {shown}", metadata)
    return Verdict(True, f"every personal column of {tables} table(s) is stored encrypted", metadata)


def reconciliation_verdict(table: pl.DataFrame) -> Verdict:
    """``table``: rows of :func:`cmdm_pipeline.stages.reconcile.reconcile` for this run."""
    unbalanced = table.filter(~pl.col("balanced"))
    counts = {r["source_system"]: {k: r[k] for k in ("rows_read", "rows_validated", "rows_quarantined")}
              for r in table.iter_rows(named=True)}
    if table.height == 0:
        return Verdict(False, "no source was reconciled in this run", {})
    if unbalanced.height:
        names = ", ".join(unbalanced["source_system"])
        return Verdict(False, f"rows read do not add up to validated + quarantined for: {names}", {"by_source": counts})
    return Verdict(True, f"every row of {table.height} source(s) is validated or quarantined", {"by_source": counts})


def unique_master_id_verdict(rows: int, distinct: int, missing: int) -> Verdict:
    """``rows`` golden records, ``distinct`` master ids among them, ``missing`` without one."""
    metadata = {"golden_records": rows, "distinct_master_ids": distinct, "records_without_master_id": missing}
    if missing:
        return Verdict(False, f"{missing} golden record(s) have no master_id", metadata)
    if distinct != rows:
        return Verdict(False, f"{rows - distinct} master_id(s) repeated in golden_customers", metadata)
    return Verdict(True, f"{rows} golden records, each with its own master_id", metadata)


def quarantine_rate_verdict(counts: pl.DataFrame, default_limit: float, limits: dict[str, float]) -> Verdict:
    """``counts``: source_system, validated, quarantined (this run). Passes if no source exceeds its limit."""
    rates = counts.with_columns(
        (pl.col("quarantined") / (pl.col("validated") + pl.col("quarantined"))).fill_nan(0.0).alias("rate"),
        pl.col("source_system").replace_strict(limits, default=default_limit, return_dtype=pl.Float64).alias("limit"),
    ).sort("source_system")
    by_source = {r["source_system"]: {"rows": r["validated"] + r["quarantined"], "quarantined": r["quarantined"],
                                      "rate": round(r["rate"], 4), "limit": r["limit"]}
                 for r in rates.iter_rows(named=True)}
    over = rates.filter(pl.col("rate") > pl.col("limit"))
    if over.height:
        worst = ", ".join(f"{r['source_system']} {r['rate']:.1%} > {r['limit']:.1%}" for r in over.iter_rows(named=True))
        return Verdict(False, f"quarantine rate above its limit: {worst}", {"by_source": by_source})
    return Verdict(True, f"every source's quarantine rate is within its limit ({len(by_source)} sources)",
                   {"by_source": by_source})


def match_rate_drift_verdict(
    current: float | None, previous: float | None, previous_run: str | None, max_drift: float, accepted: bool = False
) -> Verdict:
    """Passes when the share of records linked to another moved at most ``max_drift`` since the previous run."""
    metadata: dict[str, Any] = {"match_rate": None if current is None else round(current, 4), "max_drift": max_drift}
    if previous_run is None or previous is None or current is None:
        return Verdict(True, "no previous run to compare with: first run of the quality report",
                       {**metadata, "previous_run": None})
    drift = abs(current - previous)
    metadata |= {"previous_run": previous_run, "previous_match_rate": round(previous, 4), "drift": round(drift, 4)}
    return _judge(drift, max_drift, accepted, metadata,
                  f"match rate {current:.1%} vs {previous:.1%} in the previous run (drift {drift:.3f}, limit {max_drift})")


def cluster_size_drift_verdict(
    current: dict[str, float], previous: dict[str, float] | None, previous_run: str | None, max_drift: float,
    accepted: bool = False,
) -> Verdict:
    """Passes when the cluster-size distribution moved at most ``max_drift`` (total variation distance)."""
    metadata: dict[str, Any] = {"cluster_size_shares": {k: round(v, 4) for k, v in current.items()},
                                "max_drift": max_drift}
    if previous_run is None or not previous:
        return Verdict(True, "no previous run to compare with: first run of the quality report",
                       {**metadata, "previous_run": None})
    # Total variation distance: the share of clusters that would have to change bucket. 0 = same, 1 = disjoint.
    buckets = [m for _, _, m in CLUSTER_SIZE_BUCKETS]
    drift = sum(abs(current.get(b, 0.0) - previous.get(b, 0.0)) for b in buckets) / 2
    shown = {k: round(v, 4) for k, v in previous.items()}
    metadata |= {"previous_run": previous_run, "previous_cluster_size_shares": shown, "drift": round(drift, 4)}
    return _judge(drift, max_drift, accepted, metadata,
                  f"cluster-size distribution moved {drift:.3f} (total variation) since the previous run, limit {max_drift}")


def _judge(drift: float, max_drift: float, accepted: bool, metadata: dict[str, Any], what: str) -> Verdict:
    if drift <= max_drift:
        return Verdict(True, what, metadata)
    if accepted:
        return Verdict(True, f"{what}: accepted by the run tag", {**metadata, "accepted_by_tag": True})
    return Verdict(False, f"{what}: check the matching settings and the review queue, or accept it with the run tag",
                   metadata)
