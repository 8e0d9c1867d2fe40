"""How good the master is as judged by people: steward decisions taken as labels, the master and the model
scored against them (the workbench's ``/accuracy`` page).

Pure functions on Polars frames (:func:`labels`, :func:`master_agreement`, :func:`truth_table`,
:func:`accuracy_report`), and two small readers that fetch only what the labels name from the snapshot and
the CSV import (:func:`report_for`). Nothing here reads an attribute value: pairs are record keys, and the
page shows counts only.

Two views of the same labels:

- **The master as the stewards found it**: were the two records of a labelled pair under one master in the
  snapshot the steward judged? (The workbench stores the masters it showed with each decision; a decision of
  the CSV import is judged against this snapshot if it was made after it was published, else left out: the
  run that built this snapshot applied it, so agreeing with it would prove nothing.)
- **The model's scores** (the idea of Splink's ``linker.evaluation.accuracy_analysis_from_labels_table``):
  at each threshold, a pair is linked when its ``match_probability`` reaches it; a pair the blocking never
  compared scores 0, so the recall blocking loses is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.stages.decisions import DecisionsError, latest_decisions, read_decisions, record_key
from cmdm_pipeline.web.snapshot import Snapshot, batch_calibration

#: Below this many labels (in the set a figure is computed on) only counts are shown.
MIN_LABELS = 20
#: ... and below this many of either kind (`same`, `different`): precision and recall need both.
MIN_EACH = 5
#: Thresholds of the model's precision / recall table (match probability); the run's link threshold is added.
THRESHOLDS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
#: Two-sided 95% normal quantile, for the Wilson score intervals.
Z95 = 1.959963984540054

PAIR = ["source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r"]
_STRING_PAIR = {c: pl.String for c in PAIR}
LABEL_SCHEMA: dict[str, Any] = {**_STRING_PAIR, "decision": pl.String, "decided_at": pl.String, "same": pl.Boolean,
                                 "seen_l": pl.String, "seen_r": pl.String}
COUNTS = ("tp", "fp", "fn", "tn")


# --- labels --------------------------------------------------------------------------------------------


def labels(store_decisions: pl.DataFrame, imported: pl.DataFrame) -> pl.DataFrame:
    """One label per unordered pair: the latest decision of the CSV import and the store not undone; pairs
    whose latest word is ``unsure`` have no label (the steward withdrew a judgement, or never gave one).

    ``store_decisions``: :meth:`DecisionStore.decisions` (undone ones too, any order); ``imported``:
    :func:`read_decisions`. Of two decisions made at the same time, the store's wins (as in the run).
    Columns: :data:`LABEL_SCHEMA` (``same``: the label; ``seen_l`` / ``seen_r``: the masters the workbench showed
    with the pair when it was decided, null for the CSV import's).
    """
    columns = [*PAIR, "decision", "decided_by", "decided_at", "reason"]
    seen = pl.DataFrame(schema={**_STRING_PAIR, "decided_by": pl.String, "decided_at": pl.String,
                                "seen_l": pl.String, "seen_r": pl.String})
    parts = [imported.select(columns).cast(dict.fromkeys(columns, pl.String))] if imported.height else []
    if store_decisions.height:
        store = store_decisions
        if "undone_at" in store.columns:
            store = store.filter(pl.col("undone_at").is_null())
        if "decision_id" in store.columns:
            store = store.sort("decision_id")  # oldest first: the later of two equal times wins below
        parts.append(store.select(columns).cast(dict.fromkeys(columns, pl.String)))
        if {"master_l", "master_r"} <= set(store.columns):
            # Stored in the decision's order (the smaller key left), as latest_decisions orders pairs.
            seen = store.select(*PAIR, "decided_by", "decided_at", pl.col("master_l").alias("seen_l"),
                                pl.col("master_r").alias("seen_r")).cast(pl.String).unique(
                [*PAIR, "decided_by", "decided_at"], keep="last", maintain_order=True)
    if not parts:
        return pl.DataFrame(schema=LABEL_SCHEMA)
    latest = latest_decisions(pl.concat(parts)).join(seen, on=[*PAIR, "decided_by", "decided_at"], how="left",
                                                      nulls_equal=True)
    return latest.filter(pl.col("decision").is_in(["same", "different"])).select(
        *PAIR, "decision", "decided_at", (pl.col("decision") == "same").alias("same"), "seen_l", "seen_r")


def mark_pending(frame: pl.DataFrame, published_at: str) -> pl.DataFrame:
    """``pending``: decided at or after the snapshot's publication, so the run that built it did not have it
    (the next run applies it). ISO-8601 UTC texts compare as times, as the queue compares them."""
    return frame.with_columns((pl.col("decided_at").fill_null("") >= published_at).alias("pending"))


def _ordered(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with each pair's smaller key (the decisions' order) on the left."""
    in_order = record_key("source_system_l", "source_record_id_l") <= record_key("source_system_r", "source_record_id_r")

    def side(first: str, second: str) -> pl.Expr:
        return pl.when(in_order).then(pl.col(first)).otherwise(pl.col(second))

    return frame.with_columns(
        side("source_system_l", "source_system_r").alias("source_system_l"),
        side("source_record_id_l", "source_record_id_r").alias("source_record_id_l"),
        side("source_system_r", "source_system_l").alias("source_system_r"),
        side("source_record_id_r", "source_record_id_l").alias("source_record_id_r"),
    )


def with_masters(frame: pl.DataFrame, xref: pl.DataFrame) -> pl.DataFrame:
    """Labels whose two records are both in the snapshot, with each one's ``master_l`` / ``master_r``.
    A label naming a record the snapshot no longer has (deleted at source, erased) is dropped."""
    side = xref.select("source_system", "source_record_id", "master_id")
    return frame.join(side.rename({"source_system": "source_system_l", "source_record_id": "source_record_id_l",
                                   "master_id": "master_l"}), on=["source_system_l", "source_record_id_l"]).join(
        side.rename({"source_system": "source_system_r", "source_record_id": "source_record_id_r",
                     "master_id": "master_r"}), on=["source_system_r", "source_record_id_r"])


def with_scores(frame: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """Labels with the model's ``match_probability`` for their pair: 0 for a pair not in ``pairs`` or not
    compared by the blocking (``blocked`` false: scored only to complete a cluster), as Splink counts it."""
    scored = _ordered(pairs)
    compared = pl.col("blocked").fill_null(True) if "blocked" in scored.columns else pl.lit(True)
    scores = scored.filter(compared).group_by(PAIR).agg(pl.col("match_probability").max())
    return frame.join(scores, on=PAIR, how="left").with_columns(pl.col("match_probability").fill_null(0.0))


# --- figures -------------------------------------------------------------------------------------------


def wilson(k: pl.Expr, n: pl.Expr, z: float = Z95) -> tuple[pl.Expr, pl.Expr]:
    """The Wilson score interval (low, high) of the proportion ``k / n``; null when ``n`` is 0."""
    n_safe = pl.when(n > 0).then(n.cast(pl.Float64))
    p = k.cast(pl.Float64) / n_safe
    z2 = z * z
    denominator = 1 + z2 / n_safe
    centre = (p + z2 / (2 * n_safe)) / denominator
    half = z * (p * (1 - p) / n_safe + z2 / (4 * n_safe * n_safe)).sqrt() / denominator
    return (centre - half).clip(0.0, 1.0), (centre + half).clip(0.0, 1.0)


def with_metrics(counts: pl.DataFrame) -> pl.DataFrame:
    """``counts`` (tp, fp, fn, tn per row) with precision, recall (each with its 95% Wilson interval) and F1;
    a figure whose denominator is 0 is null. F1 is no proportion of anything, so it has no Wilson interval."""
    tp, fp, fn = (pl.col(c) for c in ("tp", "fp", "fn"))
    p_low, p_high = wilson(tp, tp + fp)
    r_low, r_high = wilson(tp, tp + fn)

    def ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
        return pl.when(denominator > 0).then(numerator.cast(pl.Float64) / denominator)

    return counts.with_columns(
        ratio(tp, tp + fp).alias("precision"), p_low.alias("precision_low"), p_high.alias("precision_high"),
        ratio(tp, tp + fn).alias("recall"), r_low.alias("recall_low"), r_high.alias("recall_high"),
        ratio(2 * tp, 2 * tp + fp + fn).alias("f1"),
    )


def _counts(same: pl.Expr, predicted: pl.Expr) -> list[pl.Expr]:
    return [(same & predicted).sum().cast(pl.Int64).alias("tp"), (~same & predicted).sum().cast(pl.Int64).alias("fp"),
            (same & ~predicted).sum().cast(pl.Int64).alias("fn"), (~same & ~predicted).sum().cast(pl.Int64).alias("tn")]


def found_together() -> pl.Expr:
    """Whether the steward found the pair's records under one master: the masters the workbench showed with
    the decision; for a decision without them (the CSV import) this snapshot's, if it was decided after this
    snapshot was published (``pending``); else null (not judged against a known master)."""
    seen = pl.col("seen_l").is_not_null() & pl.col("seen_r").is_not_null()
    return (pl.when(seen).then(pl.col("seen_l") == pl.col("seen_r"))
            .when(pl.col("pending")).then(pl.col("master_l") == pl.col("master_r")))


def master_agreement(frame: pl.DataFrame) -> pl.DataFrame:
    """How the masters the stewards judged agree with their labels (rows with :func:`found_together` known):
    one master and `same` = tp, two masters and `same` = fn, one master and `different` = fp, two masters and
    `different` = tn; with :func:`with_metrics`. One row (zeros without labels)."""
    judged = frame.with_columns(found_together().alias("together")).filter(pl.col("together").is_not_null())
    counts = judged.select(_counts(pl.col("same"), pl.col("together"))) if judged.height else \
        pl.DataFrame({c: [0] for c in COUNTS}, schema=dict.fromkeys(COUNTS, pl.Int64))
    return with_metrics(counts)


def truth_table(frame: pl.DataFrame, thresholds: Sequence[float]) -> pl.DataFrame:
    """One row per threshold: the pairs the model links at it (``match_probability >= threshold``) against
    the labels, with :func:`with_metrics`. ``frame``: :func:`with_scores` output."""
    grid = pl.DataFrame({"threshold": sorted(set(thresholds))}, schema={"threshold": pl.Float64})
    crossed = grid.join(frame.select("same", "match_probability"), how="cross")
    counts = crossed.group_by("threshold").agg(_counts(pl.col("same"), pl.col("match_probability") >= pl.col("threshold")))
    table = grid.join(counts, on="threshold", how="left", maintain_order="left")
    return with_metrics(table.with_columns(pl.col(c).fill_null(0) for c in COUNTS))


# --- the report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readiness:
    """Whether a set of labels is enough to show figures, and how many more decisions would make it so."""

    labels: int
    same: int
    different: int

    @property
    def more_same(self) -> int:
        return max(0, MIN_EACH - self.same)

    @property
    def more_different(self) -> int:
        return max(0, MIN_EACH - self.different)

    @property
    def more(self) -> int:
        return max(MIN_LABELS - self.labels, self.more_same + self.more_different, 0)

    @property
    def enough(self) -> bool:
        return self.more == 0


def readiness(frame: pl.DataFrame) -> Readiness:
    same = int(frame["same"].sum()) if frame.height else 0
    return Readiness(frame.height, same, frame.height - same)


@dataclass
class Curve:
    """An inline SVG plot of precision and recall against the threshold (points in the SVG's own units)."""

    width: int
    height: int
    precision: str  # polyline points
    recall: str
    link_x: float | None
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]


@dataclass
class AccuracyReport:
    labels: int  # labels in force (store + CSV import)
    not_in_snapshot: int  # of them, naming a record this snapshot does not hold
    applied: Readiness  # in the snapshot, decided before it was published
    pending: Readiness  # in the snapshot, decided after (the next run applies them)
    judged: Readiness  # labels judged against a known master (see found_together)
    master: dict[str, Any]  # counts and metrics of the judged labels
    pending_disagree: int  # pending labels this snapshot's masters disagree with (the next run changes those)
    scored: Readiness  # every label in the snapshot (the model's scores do not depend on decisions)
    table: list[dict[str, Any]]  # truth_table rows, ``link`` true on the run's link threshold
    link_threshold: float | None
    curve: Curve | None
    notices: list[str] = field(default_factory=list)


def accuracy_report(label_frame: pl.DataFrame, xref: pl.DataFrame, pairs: pl.DataFrame, published_at: str,
                    link_threshold: float | None, thresholds: Sequence[float] = THRESHOLDS) -> AccuracyReport:
    """Everything the page shows, from :func:`labels` and the snapshot's ``customer_xref`` and ``match_pairs``
    (the rows naming the labels' records suffice)."""
    known = mark_pending(with_masters(label_frame, xref), published_at)
    agreement = master_agreement(known).to_dicts()
    applied, pending = (readiness(known.filter(pl.col("pending") == flag)) for flag in (False, True))
    judged = readiness(known.filter(found_together().is_not_null()))
    now_together = pl.col("master_l") == pl.col("master_r")
    pending_disagree = known.filter(pl.col("pending") & (now_together != pl.col("same"))).height
    link = round(link_threshold, 4) if link_threshold is not None and 0 < link_threshold < 1 else None
    grid = [*thresholds, *([link] if link is not None else [])]
    is_link = pl.col("threshold") == link if link is not None else pl.lit(False)
    table = truth_table(with_scores(known, pairs), grid).with_columns(is_link.alias("link")).to_dicts()
    scored = readiness(known)
    return AccuracyReport(
        labels=label_frame.height, not_in_snapshot=label_frame.height - known.height, applied=applied,
        pending=pending, judged=judged, master=agreement[0], pending_disagree=pending_disagree, scored=scored, table=table,
        link_threshold=link, curve=curve(table, link) if scored.enough else None)


def curve(table: Sequence[dict[str, Any]], link: float | None, width: int = 480, height: int = 240) -> Curve:
    """The precision and recall of ``table`` (truth_table rows) as polylines; x: threshold 0..1, y: 0..1."""
    left, right, top, bottom = 40, 10, 10, 30
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return round(left + t * plot_w, 1)

    def y(v: float) -> float:
        return round(top + (1 - v) * plot_h, 1)

    def points(metric: str) -> str:
        # A dozen or so thresholds: a comprehension over rows is clearer than a frame here.
        return " ".join(f"{x(row['threshold'])},{y(row[metric])}" for row in table if row[metric] is not None)

    ticks = [0.0, 0.25, 0.5, 0.75, 1.0]
    return Curve(width, height, points("precision"), points("recall"), x(link) if link is not None else None,
                 [(x(t), f"{t:g}") for t in ticks], [(y(t), f"{t:g}") for t in ticks])


# --- reads ---------------------------------------------------------------------------------------------


def imported_decisions(config: ProjectConfig) -> tuple[pl.DataFrame, str | None]:
    """The CSV import's decisions (``matching.decisions``), or none and a notice when it cannot be read
    (the notice names the setting, not the file's content: a parse error may quote a value)."""
    path = config.matching.decisions
    try:
        return read_decisions(config.resolve(path) if path else None), None
    except DecisionsError:
        return read_decisions(None), ("matching.decisions: the CSV import cannot be read, so its decisions are left out "
                                      "here; the next run names the row and column")


def snapshot_rows(snapshot: Snapshot, label_frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ``customer_xref`` rows of the labels' records and the ``match_pairs`` rows of their pairs: a few rows
    per label, however large the snapshot (0.4 s with both orientations, 0.25 s with one, at 1M records, 2M pairs
    and 5,000 decisions). ``match_pairs`` keeps each pair in the decisions' order (the smaller key left), so
    one orientation is looked up."""
    keys = pl.concat([
        label_frame.select(pl.col("source_system_l").alias("source_system"), pl.col("source_record_id_l").alias("source_record_id")),
        label_frame.select(pl.col("source_system_r").alias("source_system"), pl.col("source_record_id_r").alias("source_record_id")),
    ]).unique()
    blocked = ", p.blocked" if "blocked" in snapshot.con.table("match_pairs").columns else ""
    pair_columns = ", ".join(f"p.{c}" for c in PAIR)
    con = snapshot.con
    con.register("__cmdm_accuracy_keys", keys.to_arrow())
    con.register("__cmdm_accuracy_pairs", label_frame.select(PAIR).to_arrow())
    try:
        xref = con.sql("SELECT x.source_system, x.source_record_id, x.master_id FROM customer_xref x "
                       "SEMI JOIN __cmdm_accuracy_keys k USING (source_system, source_record_id)").pl()
        pairs = con.sql(f"SELECT {pair_columns}, p.match_probability{blocked} FROM match_pairs p "  # noqa: S608 - constant names
                        f"SEMI JOIN __cmdm_accuracy_pairs l USING ({', '.join(PAIR)})").pl()
    finally:
        con.unregister("__cmdm_accuracy_keys")
        con.unregister("__cmdm_accuracy_pairs")
    return xref, pairs


def report_for(config: ProjectConfig, snapshot: Snapshot, store_decisions: pl.DataFrame) -> AccuracyReport:
    """The page's report: the store's decisions and the CSV import's against this snapshot."""
    imported, notice = imported_decisions(config)
    label_frame = labels(store_decisions, imported)
    xref, pairs = snapshot_rows(snapshot, label_frame)
    report = accuracy_report(label_frame, xref, pairs, snapshot.published_at,
                             batch_calibration(snapshot).get("link_threshold"))
    if notice:
        report.notices.append(notice)
    return report
