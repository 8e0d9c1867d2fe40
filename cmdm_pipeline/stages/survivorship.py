"""Survivorship: one golden record per master, each attribute from the record its rule prefers.

Rules (declared per attribute in ``cmdm.yaml``, default for the rest):
``trust_rank`` (most trusted source), ``most_recent`` (latest by the recency attribute; a date
later than the day its record was read ranks last),
``most_frequent`` (value most records agree on), ``most_complete`` (record with most filled
attributes), ``customer_provided`` (sources the customer fills in themselves first). Ties
fall back to trust rank, then recency, then the smallest record key, so results are stable.
"""

from __future__ import annotations

import polars as pl

from cmdm_pipeline.config import SurvivorshipConfig
from cmdm_pipeline.progress import step
from cmdm_pipeline.schema import CustomerSchema

KEY = ["source_system", "source_record_id"]
RECORD_TYPE_ORDER = {"lead": 0, "contact": 1, "customer": 2}

LINEAGE_COLUMNS: dict[str, pl.DataType] = {
    "master_id": pl.String(),
    "attribute": pl.String(),
    "source_system": pl.String(),
    "source_record_id": pl.String(),
    "rule": pl.String(),
}


def is_future_recency(recency: pl.Expr) -> pl.Expr:
    """True where a recency date is later than the day its row was read (``ingested_at``): a typo or a
    placeholder (2090-01-01), not a date to rank by. A day's grace: a source east of UTC is a day ahead."""
    return recency.cast(pl.Datetime("us")) > pl.col("ingested_at").dt.replace_time_zone(None) + pl.duration(days=1)


def _rule_order(rule: str, attribute: str) -> tuple[list[pl.Expr], list[bool]]:
    tiebreak = [pl.col("trust_rank"), pl.col("__recency"), pl.col("source_system"), pl.col("source_record_id")]
    tie_desc = [False, True, False, False]
    if rule == "trust_rank":
        return tiebreak, tie_desc
    if rule == "most_recent":
        return [pl.col("__recency"), *tiebreak], [True, *tie_desc]
    if rule == "most_frequent":
        frequency = pl.len().over("master_id", attribute)
        return [frequency, *tiebreak], [True, *tie_desc]
    if rule == "most_complete":
        return [pl.col("__completeness"), *tiebreak], [True, *tie_desc]
    if rule == "customer_provided":
        return [pl.col("__customer_provided"), *tiebreak], [True, *tie_desc]
    raise ValueError(f"unknown survivorship rule {rule!r}")


def build_golden_records(
    records: pl.DataFrame, schema: CustomerSchema, rules: SurvivorshipConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``records``: validated rows with ``master_id``. Returns (golden, attribute lineage)."""
    return linked_golden_records([golden_of_masters(records, schema, rules)], schema)


def linked_golden_records(
    parts: list[tuple[pl.DataFrame, pl.DataFrame]], schema: CustomerSchema
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The golden records and lineage of every part of the masters (:func:`golden_of_masters`), each person linked
    to their employer's organisation master, which may be in another part."""
    golden = _link_organisations(pl.concat([golden for golden, _ in parts]), schema)
    golden = golden.select(
        "master_id", "party_type", "record_type", *schema.attributes, "organisation_master_id",
        "nps_latest_score", "nps_latest_date", "nps_responses", "record_count", "source_count", "source_systems",
    ).sort("master_id")
    lineage = pl.concat([lineage for _, lineage in parts]).select(list(LINEAGE_COLUMNS)).sort("master_id", "attribute")
    return golden, lineage


def golden_of_masters(
    records: pl.DataFrame, schema: CustomerSchema, rules: SurvivorshipConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(golden, lineage) of the masters ``records`` holds, every record of each (validated rows with ``master_id``),
    not yet linked to organisations: a part of the masters is built on its own."""
    attributes = list(schema.attributes)
    recency = rules.recency_attribute
    # No date: the record is as recent as its reading. A future date: no rank at all (nulls sort last).
    known = pl.col(recency).cast(pl.Datetime("us")) if recency else pl.lit(None, dtype=pl.Datetime("us"))
    future = is_future_recency(pl.col(recency)).fill_null(False) if recency else pl.lit(False)
    prepared = records.with_columns(
        pl.when(~future).then(known.fill_null(pl.col("ingested_at").dt.replace_time_zone(None))).alias("__recency"),
        pl.sum_horizontal(pl.col(a).is_not_null().cast(pl.Int32) for a in attributes).alias("__completeness"),
        pl.col("source_system").is_in(rules.customer_provided_sources).alias("__customer_provided"),
    )
    base = prepared.group_by("master_id").agg(
        pl.col("party_type").mode().sort().first().alias("party_type"),
        pl.col("record_type").replace_strict(RECORD_TYPE_ORDER, default=0).max().alias("__stage"),
        pl.len().alias("record_count"),
        pl.col("source_system").n_unique().alias("source_count"),
        pl.col("source_system").unique().sort().alias("source_systems"),
    ).with_columns(
        pl.col("__stage").replace_strict({v: k for k, v in RECORD_TYPE_ORDER.items()}, return_dtype=pl.String).alias("record_type")
    ).drop("__stage")

    golden = base
    lineage_parts = []
    with step(f"golden records: attributes of {base.height:,} masters", total=len(attributes)) as advance:
        for attribute in attributes:
            rule = rules.attributes.get(attribute, rules.default)
            order, descending = _rule_order(rule, attribute)
            # Only the columns the rule reads are sorted: sorting every column of every record once per
            # attribute made a copy of the whole table each time. (The order ends in the record key: no ties.)
            used = {"master_id", attribute, *KEY, *(c for e in order for c in e.meta.root_names())}
            winners = (
                prepared.select(c for c in prepared.columns if c in used)
                .filter(pl.col(attribute).is_not_null())
                .sort(order, descending=descending, nulls_last=True)
                .unique("master_id", keep="first", maintain_order=True)
                .select("master_id", attribute, *KEY)
            )
            golden = golden.join(winners.select("master_id", attribute), on="master_id", how="left")
            lineage_parts.append(
                winners.select("master_id", pl.lit(attribute).alias("attribute"), *KEY, pl.lit(rule).alias("rule"))
            )
            advance(1)
    lineage = pl.concat(lineage_parts) if lineage_parts else pl.DataFrame(schema=LINEAGE_COLUMNS)
    return golden.join(_survey(prepared, rules), on="master_id", how="left"), lineage


def _survey(records: pl.DataFrame, rules: SurvivorshipConfig) -> pl.DataFrame:
    """Latest survey score and its date, and how many responses, per master."""
    score, when = rules.survey_score_attribute, rules.survey_date_attribute
    if score is None:
        return records.select("master_id").unique().with_columns(
            pl.lit(None, pl.Float64).alias("nps_latest_score"), pl.lit(None, pl.Date).alias("nps_latest_date"),
            pl.lit(0, pl.UInt32).alias("nps_responses"))
    order = pl.col(when) if when else pl.col("__recency")
    answered = records.filter(pl.col(score).is_not_null())
    return answered.group_by("master_id").agg(
        # Undated (or future-dated, see is_future_recency) responses first: they are never the latest.
        pl.col(score).sort_by(order, nulls_last=False).last().alias("nps_latest_score"),
        (pl.col(when).max() if when else pl.lit(None, pl.Date)).alias("nps_latest_date"),
        pl.len().alias("nps_responses"),
    )


def _link_organisations(golden: pl.DataFrame, schema: CustomerSchema) -> pl.DataFrame:
    """People point to the organisation master whose name is their employer's (same folded name)."""
    from cmdm_pipeline.schema import Kind
    from cmdm_pipeline.stages.match_features import fold

    names = schema.of_kind(Kind.organisation_name)
    if not names:
        return golden.with_columns(pl.lit(None, pl.String).alias("organisation_master_id"))
    name = names[0]
    folded = golden.with_columns(fold(pl.col(name)).alias("__org"))
    organisations = (
        folded.filter((pl.col("party_type") == "organisation") & pl.col("__org").is_not_null())
        .group_by("__org").agg(pl.col("master_id").min().alias("organisation_master_id"))
    )
    linked = folded.join(organisations, on="__org", how="left").with_columns(
        pl.when(pl.col("party_type") == "person").then("organisation_master_id").alias("organisation_master_id")
    )
    return linked.drop("__org")
