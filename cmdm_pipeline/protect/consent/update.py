"""Consent: resolve each event's subject to master customers, and replay the history into current consent.

Resolution, tried in this order, the first identifier that finds any master deciding:
the subject's source record (``customer_xref``), then its e-mail, then its phone (any
attribute of that kind on a validated record). One master: the event applies to it. Several
(a shared family e-mail): a *withdrawal* applies to every one of them, since a withdrawal must
reach whoever it may concern; a *grant* applies only to the master it was resolved to when it
was ingested, if that is among them, since consent must be unambiguous. No master today: the
master resolved at ingest, followed through merges, if it still exists.

Every run resolves the whole history again against today's masters, so consent follows merges
(the records moved to the surviving master) and splits (each record's events go where the record
went), and an event that arrived before its customer applies once the customer exists.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from cmdm_pipeline.config import ConsentConfig
from cmdm_pipeline.protect.consent.events import EVENT_COLUMNS, UTC, ParsedEvents, ingest
from cmdm_pipeline.schema import CustomerSchema, Kind

HISTORY_COLUMNS: dict[str, pl.DataType] = {
    **EVENT_COLUMNS,
    "master_id": pl.String(),  # resolved at ingest; null when unresolved or ambiguous then
    "resolution": pl.String(),  # at ingest: source_record | email | phone | ambiguous | unresolved
    "candidate_masters": pl.Int64(),  # masters the deciding identifier found at ingest
    "run_id": pl.String(),
    "ingested_at": UTC,
}

CURRENT_COLUMNS: dict[str, pl.DataType] = {
    "master_id": pl.String(),
    "purpose": pl.String(),
    "channel": pl.String(),
    "granted": pl.Boolean(),
    "decided_at": UTC,  # occurred_at of the deciding event
    "event_id": pl.String(),
    "event_channel": pl.String(),  # the channel the event named (the all-channels value, or this channel)
    "resolution": pl.String(),  # how that event reached this master today
    "lawful_basis": pl.String(),
    "policy_version": pl.String(),
    "evidence_ref": pl.String(),
}

CURRENT_KEY = ["master_id", "purpose", "channel"]
_INDEX = {"kind": pl.String(), "identifier": pl.String(), "master_id": pl.String()}
_SEP = "\x1f"


def subject_index(records: pl.DataFrame, xref: pl.DataFrame, schema: CustomerSchema) -> pl.DataFrame:
    """kind (source_record | email | phone), identifier, master_id: every way a subject can name a master today.

    ``records``: validated records (key plus the e-mail and phone attributes); ``xref``: key → master_id.
    """
    keyed = records.join(xref.select("source_system", "source_record_id", "master_id"),
                         on=["source_system", "source_record_id"])
    parts = [xref.select(pl.lit("source_record").alias("kind"), _record_key("source_system", "source_record_id"),
                         "master_id")]
    for kind in (Kind.email, Kind.phone):
        parts += [keyed.select(pl.lit(kind.value).alias("kind"), pl.col(name).alias("identifier"), "master_id")
                  for name in schema.of_kind(kind) if name in keyed.columns]
    return pl.concat([p.cast(_INDEX) for p in parts]).drop_nulls().unique().sort("kind", "identifier", "master_id")  # type: ignore[arg-type]


def _record_key(system: str, record: str) -> pl.Expr:
    return pl.concat_str(pl.col(system), pl.lit(_SEP), pl.col(record)).alias("identifier")


def follow_merges(ids: pl.DataFrame, lineage: pl.DataFrame) -> pl.DataFrame:
    """``ids`` with ``master_id`` replaced by the master that survives it today (merged A → B → C gives C)."""
    merges = lineage.filter(pl.col("event") == "merged").select(
        pl.col("master_id").alias("retired"), pl.col("related_master_id").alias("survivor")
    ).unique("retired", keep="last", maintain_order=True)
    mapping = merges
    # One join per link of the longest chain; a retired id never comes back, so chains end.
    for _ in range(merges.height):
        step = mapping.join(merges, left_on="survivor", right_on="retired", how="left", suffix="_next")
        if step["survivor_next"].is_null().all():
            break
        mapping = step.select("retired", pl.coalesce("survivor_next", "survivor").alias("survivor"))
    return ids.join(mapping, left_on="master_id", right_on="retired", how="left").with_columns(
        pl.coalesce("survivor", "master_id").alias("master_id")
    ).drop("survivor")


def _best_candidates(events: pl.DataFrame, index: pl.DataFrame) -> pl.DataFrame:
    """event_id, kind, master_id, candidates: the masters the event's first identifier that finds any finds."""
    ids = pl.concat([
        events.select("event_id", pl.lit(1).alias("rank"), pl.lit("source_record").alias("kind"),
                      _record_key("subject_source_system", "subject_source_record_id")),
        events.select("event_id", pl.lit(2).alias("rank"), pl.lit("email").alias("kind"),
                      pl.col("subject_email").alias("identifier")),
        events.select("event_id", pl.lit(3).alias("rank"), pl.lit("phone").alias("kind"),
                      pl.col("subject_phone").alias("identifier")),
    ]).drop_nulls("identifier")
    found = ids.join(index, on=["kind", "identifier"]).select("event_id", "rank", "kind", "master_id").unique()
    return found.filter(pl.col("rank") == pl.col("rank").min().over("event_id")).select(
        "event_id", "kind", "master_id", pl.col("master_id").n_unique().over("event_id").alias("candidates"))


def resolve(events: pl.DataFrame, index: pl.DataFrame, lineage: pl.DataFrame, live: pl.Series) -> pl.DataFrame:
    """One row per event × master it applies to today: the event's columns, ``master_id``, ``resolution``.

    ``events`` needs the subject columns, ``event_id``, ``action`` and ``master_id`` (at ingest, may be null);
    ``live``: today's master ids.
    """
    best = _best_candidates(events, index)
    earlier = follow_merges(events.select("event_id", "master_id").drop_nulls(), lineage).filter(
        pl.col("master_id").is_in(live.implode())
    ).rename({"master_id": "ingest_master"})
    candidates = best.join(events.select("event_id", "action"), on="event_id").join(earlier, on="event_id", how="left")
    several = pl.col("candidates") > 1
    applied = pl.concat([
        candidates.filter(~several).select("event_id", "master_id", pl.col("kind").alias("resolution")),
        candidates.filter(several & (pl.col("action") == "withdrawn")).select(
            "event_id", "master_id", pl.lit("all_candidates").alias("resolution")),
        candidates.filter(several & (pl.col("action") == "granted") & (pl.col("master_id") == pl.col("ingest_master")))
        .select("event_id", "master_id", pl.lit("ingest_master").alias("resolution")),
        earlier.join(best, on="event_id", how="anti").select(
            "event_id", pl.col("ingest_master").alias("master_id"), pl.lit("ingest_master").alias("resolution")),
    ])
    return events.drop("master_id", "resolution", strict=False).join(applied, on="event_id")


def at_ingest(events: pl.DataFrame, index: pl.DataFrame, run_id: str, now: dt.datetime) -> pl.DataFrame:
    """New events as ``consent_history`` rows, with the one master they resolve to now, or why none."""
    found = _best_candidates(events, index).group_by("event_id").agg(
        pl.col("kind").first(), pl.col("master_id").first(), pl.col("candidates").first())
    single = pl.col("candidates") == 1
    return events.join(found, on="event_id", how="left").select(
        *EVENT_COLUMNS,
        pl.when(single).then(pl.col("master_id")).alias("master_id"),
        pl.when(single).then(pl.col("kind")).when(pl.col("candidates") > 1).then(pl.lit("ambiguous"))
        .otherwise(pl.lit("unresolved")).alias("resolution"),
        pl.col("candidates").fill_null(0).alias("candidate_masters"),
        pl.lit(run_id).alias("run_id"),
        pl.lit(now, dtype=UTC).alias("ingested_at"),
    ).cast(HISTORY_COLUMNS)  # type: ignore[arg-type]


def replay(applied: pl.DataFrame, channels: list[str], all_channels: str | None) -> pl.DataFrame:
    """Current consent, one row per master × purpose × channel that has an event (CURRENT_COLUMNS).

    The latest event wins; at equal times a withdrawal wins (then the larger event id, so the
    result never depends on row order). An event on the all-channels value counts on every
    channel. No row means no event: not granted.
    """
    expansion = pl.DataFrame(
        {"event_channel": [*channels, *([all_channels] * len(channels) if all_channels else [])],
         "channel": [*channels, *(channels if all_channels else [])]},
        schema={"event_channel": pl.String(), "channel": pl.String()},
    )
    expanded = applied.rename({"channel": "event_channel"}).join(expansion, on="event_channel")
    latest = expanded.sort(
        [*CURRENT_KEY, "occurred_at", pl.col("action") == "withdrawn", "event_id"], nulls_last=False
    ).unique(CURRENT_KEY, keep="last", maintain_order=True)
    return latest.select(
        *CURRENT_KEY,
        (pl.col("action") == "granted").alias("granted"),
        pl.col("occurred_at").alias("decided_at"),
        "event_id", "event_channel", "resolution", "lawful_basis", "policy_version", "evidence_ref",
    ).cast(CURRENT_COLUMNS).sort(CURRENT_KEY)  # type: ignore[arg-type]


def consent_changes(previous: pl.DataFrame | None, current: pl.DataFrame) -> pl.DataFrame:
    """master_id, purpose, channel, before, after (granted | withdrawn | none): rows whose deciding event changed."""
    if previous is None:
        previous = pl.DataFrame(schema=CURRENT_COLUMNS)

    def state(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        return frame.select(*CURRENT_KEY, pl.when(pl.col("granted")).then(pl.lit("granted"))
                            .otherwise(pl.lit("withdrawn")).alias(name), pl.col("event_id").alias(f"{name}_event"))

    both = state(previous, "before").join(state(current, "after"), on=CURRENT_KEY, how="full", coalesce=True)
    changed = both.filter(~pl.col("before_event").eq_missing(pl.col("after_event")))
    return changed.select(*CURRENT_KEY, pl.col("before").fill_null("none"), pl.col("after").fill_null("none")).sort(CURRENT_KEY)


@dataclass(frozen=True)
class ConsentUpdate:
    history: pl.DataFrame  # HISTORY_COLUMNS: the previous history plus this run's new events
    appended: pl.DataFrame  # this run's new history rows
    already_ingested: int  # valid rows read that the history held already
    quarantined: pl.DataFrame  # this run's rejected rows, with reasons
    current: pl.DataFrame  # CURRENT_COLUMNS
    changes: pl.DataFrame  # rows of current consent whose deciding event changed this run
    events_applied: int  # history events that apply to at least one master today


def update_consent(
    parsed: ParsedEvents,
    history: pl.DataFrame | None,
    index: pl.DataFrame,
    lineage: pl.DataFrame,
    live: pl.Series,
    previous: pl.DataFrame | None,
    consent: ConsentConfig,
    run_id: str,
    now: dt.datetime,
) -> ConsentUpdate:
    """Append new events to the history, then replay the whole history against today's masters."""
    history = history if history is not None else pl.DataFrame(schema=HISTORY_COLUMNS)
    intake = ingest(parsed, history, run_id)
    appended = at_ingest(intake.new, index, run_id, now)
    full = pl.concat([history.select(list(HISTORY_COLUMNS)).cast(HISTORY_COLUMNS), appended])  # type: ignore[arg-type]
    applied = resolve(full, index, lineage, live)
    current = replay(applied, consent.channels, consent.all_channels)
    return ConsentUpdate(full, appended, intake.already, intake.quarantined, current,
                         consent_changes(previous, current), applied["event_id"].n_unique())
