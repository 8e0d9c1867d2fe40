"""The rows of ``quality_report``: one long table of every run's quality metrics, and golden-record scores.

One row per run × stage × source (null: all sources) × attribute (null: row or table level) ×
metric × rule. ``value`` is the metric itself; ``pass_rate`` is set where "passing" means
something (rules, completeness, quarantine, duplicates). Counts only: no values of records.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import polars as pl

from cmdm_pipeline.stages.validate import CompiledRule

if TYPE_CHECKING:
    from polars.expr.whenthen import ChainedThen, Then

REPORT_COLUMNS: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "run_at": pl.Datetime("us"),  # UTC, stored without a zone
    "stage": pl.String(),  # standardised | validated | golden | quarantine | matching
    "source_system": pl.String(),  # null: all sources
    "attribute": pl.String(),  # null: row- or table-level metric
    "metric": pl.String(),
    "rule": pl.String(),  # rule id for metric = 'rule', else null
    "rows_evaluated": pl.Int64(),
    "rows_failed": pl.Int64(),
    "pass_rate": pl.Float64(),  # 0..1
    "value": pl.Float64(),
}
_ROW_COLUMNS = [c for c in REPORT_COLUMNS if c not in ("run_id", "run_at")]

SCORE_COLUMNS: dict[str, pl.DataType] = {
    "master_id": pl.String(),
    "quality_score": pl.Float64(),
    "completeness": pl.Float64(),
    "rule_pass_rate": pl.Float64(),
    "rules_failed": pl.List(pl.String()),
    "run_id": pl.String(),
}

#: Cluster-size buckets (records per cluster) and the metric each one's share is reported as.
CLUSTER_SIZE_BUCKETS: tuple[tuple[int, int | None, str], ...] = (
    (1, 1, "cluster_size_1"), (2, 2, "cluster_size_2"), (3, 3, "cluster_size_3"), (4, 4, "cluster_size_4"),
    (5, 9, "cluster_size_5_9"), (10, None, "cluster_size_10_plus"),
)
MATCH_RATE = "match_rate"


def _rows(frame: pl.DataFrame, **constants: str | None) -> pl.DataFrame:
    """``frame`` completed with constant columns and put into report row shape."""
    completed = frame.with_columns(**{k: pl.lit(v, pl.String) for k, v in constants.items()})
    missing = {c: pl.lit(None, REPORT_COLUMNS[c]) for c in _ROW_COLUMNS if c not in completed.columns}
    return completed.with_columns(**missing).select(pl.col(c).cast(REPORT_COLUMNS[c]) for c in _ROW_COLUMNS)


def _with_all_sources(frame: pl.DataFrame, keys: list[str], sums: list[str]) -> pl.DataFrame:
    """Per-source rows plus one all-sources row (source_system null) per key, counts summed."""
    overall = frame.group_by(keys, maintain_order=True).agg(pl.col(sums).sum()) if keys else frame.select(pl.col(sums).sum())
    columns = [*keys, "source_system", *sums]
    return pl.concat([frame.select(columns), overall.with_columns(pl.lit(None, pl.String).alias("source_system")).select(columns)])


def _share(part: str, whole: str) -> pl.Expr:
    return pl.when(pl.col(whole) > 0).then(pl.col(part) / pl.col(whole)).otherwise(None)


def rule_rows(counts: pl.DataFrame) -> pl.DataFrame:
    """GX counts per stage, source and rule, plus all-sources sums for stages validated per source."""
    per_source = counts.filter(pl.col("source_system").is_not_null())
    whole = counts.filter(pl.col("source_system").is_null())
    summed = _with_all_sources(per_source, ["stage", "rule", "attribute"], ["rows_evaluated", "rows_failed"])
    rows = pl.concat([summed, whole.select(summed.columns)]).with_columns(
        (1 - _share("rows_failed", "rows_evaluated")).alias("pass_rate"))
    return _rows(rows.with_columns(pl.col("pass_rate").alias("value")), metric="rule")


def filled_counts(frame: pl.DataFrame, attributes_by_source: dict[str, list[str]], per_source: bool) -> pl.DataFrame:
    """Rows and rows holding a value of each mapped attribute (per source, or over the whole frame): what
    :func:`completeness_rows` reports, counted a part at a time if need be."""
    attributes = list(dict.fromkeys(a for mapped in attributes_by_source.values() for a in mapped))
    counts = [pl.len().alias("rows_evaluated"), *[pl.col(a).is_not_null().sum().alias(a) for a in attributes]]
    return frame.group_by("source_system", maintain_order=True).agg(counts) if per_source else frame.select(counts)


def completeness_rows(
    counts: pl.DataFrame, stage: str, attributes_by_source: dict[str, list[str]], per_source: bool
) -> pl.DataFrame:
    """Share of rows with a value, per attribute (``counts``: :func:`filled_counts`, one row per source or
    one in all); per source only for the attributes that source maps."""
    mapped = pl.DataFrame(
        [(s, a) for s, attributes in attributes_by_source.items() for a in attributes],
        schema={"source_system": pl.String, "attribute": pl.String}, orient="row",
    )
    attributes = list(dict.fromkeys(mapped["attribute"]))
    keys = ["source_system"] if per_source else []
    filled = counts.unpivot(index=[*keys, "rows_evaluated"], on=attributes, variable_name="attribute", value_name="filled")
    if per_source:
        filled = filled.join(mapped, on=["source_system", "attribute"], how="semi")
        filled = _with_all_sources(filled, ["attribute"], ["rows_evaluated", "filled"])
    rows = filled.with_columns(
        (pl.col("rows_evaluated") - pl.col("filled")).alias("rows_failed"),
        _share("filled", "rows_evaluated").alias("pass_rate"),
        _share("filled", "rows_evaluated").alias("value"),
    )
    return _rows(rows, stage=stage, metric="completeness")


def quarantine_rows(rows_read: pl.DataFrame, quarantined: pl.DataFrame, attributes: list[str]) -> pl.DataFrame:
    """Share of each source's rows quarantined, and rows quarantined per rule broken.

    ``rows_read``: source_system, rows. ``quarantined``: source_system, rules_broken.
    """
    read = _with_all_sources(rows_read.rename({"rows": "rows_evaluated"}), [], ["rows_evaluated"])
    held = quarantined.group_by("source_system").agg(pl.len().alias("rows_failed"))
    rate = read.join(_with_all_sources(held, [], ["rows_failed"]), on="source_system", how="left", nulls_equal=True)
    rate = rate.with_columns(pl.col("rows_failed").fill_null(0)).with_columns(
        _share("rows_failed", "rows_evaluated").alias("value")).with_columns((1 - pl.col("value")).alias("pass_rate"))
    broken = (
        quarantined.select("source_system", pl.col("rules_broken").alias("rule")).explode("rule").drop_nulls("rule")
        .group_by("source_system", "rule").agg(pl.len().alias("rows_failed"))
    )
    # Rule ids are `<attribute>.<type>` for attribute rules and standardisation issues.
    prefix = pl.col("rule").str.split(".").list.first()
    by_rule = (
        _with_all_sources(broken, ["rule"], ["rows_failed"])
        .join(read, on="source_system", how="left", nulls_equal=True)
        .with_columns(pl.when(prefix.is_in(attributes)).then(prefix).otherwise(None).alias("attribute"),
                      (1 - _share("rows_failed", "rows_evaluated")).alias("pass_rate"))
        .with_columns(pl.col("pass_rate").alias("value"))
        .sort("rule", "source_system", nulls_last=True)
    )
    return pl.concat([
        _rows(rate, stage="quarantine", metric="quarantine_rate"),
        _rows(by_rule, stage="quarantine", metric="rule"),
    ])


def duplicate_rows(xref: pl.DataFrame) -> pl.DataFrame:
    """Records per master, per source (duplicates inside that source) and over all sources."""
    per_source = xref.group_by("source_system").agg(
        pl.len().alias("rows_evaluated"), pl.col("master_id").n_unique().alias("masters"))
    overall = xref.select(pl.len().alias("rows_evaluated"), pl.col("master_id").n_unique().alias("masters"))
    rows = pl.concat([per_source.sort("source_system"), overall.with_columns(pl.lit(None, pl.String).alias("source_system"))],
                     how="diagonal").with_columns(
        (pl.col("rows_evaluated") - pl.col("masters")).alias("rows_failed"),
        _share("masters", "rows_evaluated").alias("pass_rate"),
        _share("rows_evaluated", "masters").alias("value"),
    )
    return _rows(rows, stage="validated", metric="duplicate_rate")


def match_rows(clusters: pl.DataFrame) -> pl.DataFrame:
    """Match rate (share of records linked to at least one other) and the cluster-size distribution.

    ``clusters``: source_system, cluster (one row per validated record).
    """
    sized = clusters.with_columns(pl.len().over("cluster").alias("size"))
    linked = sized.group_by("source_system").agg(
        pl.len().alias("rows_evaluated"), (pl.col("size") > 1).sum().alias("linked"))
    linked = _with_all_sources(linked.sort("source_system"), [], ["rows_evaluated", "linked"]).with_columns(
        _share("linked", "rows_evaluated").alias("value"))
    sizes = clusters.group_by("cluster").agg(pl.len().alias("size"))
    bucket: Then | ChainedThen = pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    for low, high, metric in CLUSTER_SIZE_BUCKETS:
        bucket = bucket.when(pl.col("size") >= low if high is None else pl.col("size").is_between(low, high)).then(
            pl.lit(metric))
    counts = sizes.group_by(bucket.alias("metric")).agg(pl.len().alias("clusters"))
    # Every bucket gets a row, empty ones too: a bucket emptied since the last run is drift.
    shares = pl.DataFrame({"metric": [m for _, _, m in CLUSTER_SIZE_BUCKETS]}).join(
        counts, on="metric", how="left", maintain_order="left"
    ).with_columns(
        pl.lit(sizes.height, pl.Int64).alias("rows_evaluated"),
        (pl.col("clusters").fill_null(0) / sizes.height if sizes.height else pl.lit(None, pl.Float64)).alias("value"),
    )
    return pl.concat([_rows(linked, stage="validated", metric=MATCH_RATE), _rows(shares, stage="golden")])


#: match_summary columns reported, each as a metric of stage `matching`.
MATCHING_METRICS = ("match_prior", "link_threshold", "estimated_precision", "estimated_recall", "queued", "doubtful",
                    "decided_automatically")


def matching_rows(summary: pl.DataFrame) -> pl.DataFrame:
    """The run's matching calibration: the prior and link threshold the data gave, the model's own estimate
    of the clusters' pair precision and recall, and the review queue (items queued, doubtful decisions,
    doubtful decisions left to the model because the budget was spent)."""
    present = [m for m in MATCHING_METRICS if m in summary.columns]
    rows = summary.select(pl.col(m).cast(pl.Float64) for m in present).unpivot(variable_name="metric", value_name="value")
    return _rows(rows.with_columns(pl.lit(int(summary["records"][0]) if "records" in summary.columns else None,
                                          pl.Int64).alias("rows_evaluated")), stage="matching")


def golden_rows(golden: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    """Golden-record count and mean quality score."""
    count = pl.DataFrame({"value": [float(golden.height)]})
    score = pl.DataFrame({"rows_evaluated": [scores.height], "value": [scores["quality_score"].mean()]},
                         schema={"rows_evaluated": pl.Int64, "value": pl.Float64})
    return pl.concat([_rows(count, stage="golden", metric="golden_count"),
                      _rows(score, stage="golden", metric="quality_score")])


def golden_quality_scores(
    golden: pl.DataFrame, rules: list[CompiledRule], attributes_by_source: dict[str, list[str]], run_id: str
) -> pl.DataFrame:
    """One row per golden record: ``quality_score`` = mean of completeness and rule pass rate (0..1).

    Completeness counts the attributes the record's own sources can provide (a survey never
    gives a phone number); the rule pass rate uses the gate's tests, `warn` rules included.
    """
    applicable = [r for r in rules if set(r.passes.meta.root_names()) <= set(golden.columns)]
    failed = pl.concat_list(
        [pl.when(r.passes).then(None).otherwise(pl.lit(r.rule_id)) for r in applicable]
    ).list.drop_nulls() if applicable else pl.lit([], pl.List(pl.String))
    attributes = list(dict.fromkeys(a for mapped in attributes_by_source.values() for a in mapped))
    from_source = {s: f"__from_{s}" for s in attributes_by_source}
    # Per attribute: could one of the record's sources provide it, and does the record have it?
    expected = [pl.any_horizontal(from_source[s] for s, mapped in attributes_by_source.items() if a in mapped)
                for a in attributes]
    filled = [e & pl.col(a).is_not_null() for e, a in zip(expected, attributes, strict=True)]
    scored = golden.with_columns(
        pl.col("source_systems").list.contains(s).alias(column) for s, column in from_source.items()
    ).select(
        "master_id",
        failed.alias("rules_failed"),
        (pl.sum_horizontal(filled) / pl.sum_horizontal(expected)).fill_nan(0.0).alias("completeness"),
    ).with_columns(
        (1 - pl.col("rules_failed").list.len() / len(applicable) if applicable else pl.lit(1.0)).alias("rule_pass_rate"),
    )
    return scored.with_columns(
        ((pl.col("completeness") + pl.col("rule_pass_rate")) / 2).round(4).alias("quality_score"),
        pl.lit(run_id).alias("run_id"),
    ).select([pl.col(c).cast(t) for c, t in SCORE_COLUMNS.items()])


def assemble(run_id: str, run_at: dt.datetime, parts: list[pl.DataFrame]) -> pl.DataFrame:
    """The run's ``quality_report`` rows, in the agreed column order and types."""
    rows = pl.concat([p.select(_ROW_COLUMNS) for p in parts])
    at = run_at.astimezone(dt.UTC).replace(tzinfo=None)
    return rows.with_columns(pl.lit(run_id).alias("run_id"), pl.lit(at, pl.Datetime("us")).alias("run_at")).select(
        [pl.col(c).cast(t) for c, t in REPORT_COLUMNS.items()])
