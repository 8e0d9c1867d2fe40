"""What the workbench pages show, computed from the snapshot and the decision store: pure functions, no HTTP.

Every personal value leaves here through :func:`through_lens` (the role's lens: reveal, mask, tokenise, or
not shown), which also says which columns were revealed so the page view can be logged by name.
Record keys are ``<source_system>:<source_record_id>``: they, and master ids, are all a URL carries.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from cmdm_pipeline.config import Lens, ProjectConfig
from cmdm_pipeline.decision_store import RecordKey
from cmdm_pipeline.protect.lenses.build import granted_masters, mask, row_filter, tokenise
from cmdm_pipeline.schema import Kind
from cmdm_pipeline.web.snapshot import Snapshot

#: Evidence bands of the queue filter, on the pair's match probability: name -> [low, high).
BANDS: dict[str, tuple[float, float]] = {
    "strong": (0.9, 1.01), "likely": (0.5, 0.9), "weak": (0.1, 0.5), "against": (0.0, 0.1),
}
#: Queue filter "reason": what the model did with the item.
REASONS = {"linked": True, "kept_apart": False}
PAGE_SIZE = 25


class ViewError(ValueError):
    """Input that names nothing in the snapshot; the message names the field, never a value of a record."""

    def __init__(self, field_name: str, message: str, status: int = 404) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.status = status


# --- record keys ---------------------------------------------------------------------------------------


def parse_key(text: str, field_name: str) -> RecordKey:
    system, sep, record = (text or "").partition(":")
    if not sep or not system or not record or len(text) > 200:
        raise ViewError(field_name, "expected a record key <source_system>:<source_record_id>", 422)
    return RecordKey(system, record)


def key_text(key: RecordKey) -> str:
    return f"{key.source_system}:{key.source_record_id}"


def _ordered(a: RecordKey, b: RecordKey) -> tuple[RecordKey, RecordKey]:
    low, high = sorted((a, b), key=lambda k: (k.source_system, k.source_record_id))
    return low, high


def _key_expr(system: str, record: str) -> pl.Expr:
    return pl.concat_str(pl.col(system), pl.lit(":"), pl.col(record))


# --- lenses --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LensView:
    """A role's lens as the pages apply it: a treatment per personal attribute, the rest shown as is."""

    lens: Lens | None
    pii: frozenset[str]
    token_key: bytes | None = field(default=None, repr=False)
    kinds: dict[str, Kind] = field(default_factory=dict)  # attribute -> kind, for masking

    @property
    def name(self) -> str | None:
        return self.lens.name if self.lens else None

    def treatment(self, column: str) -> str | None:
        """reveal | mask | tokenise | None (not shown) for a personal attribute; reveal for any other column."""
        if column not in self.pii:
            return "reveal"
        if self.lens is None:
            return None
        treatment = self.lens.columns.get(column)
        if treatment == "tokenise" and self.token_key is None:
            return None  # no key published for this lens: fail closed
        return treatment


def lens_view(config: ProjectConfig, snapshot: Snapshot, role: str) -> LensView:
    name = config.web.role_lenses.get(role)  # type: ignore[call-overload]
    lens = next((lens for lens in config.lenses if lens.name == name), None) if name else None
    key = snapshot.token_keys.get(lens.name) if lens else None
    kinds = {name: attr.kind for name, attr in config.customer_schema.attributes.items()}
    return LensView(lens, frozenset(config.customer_schema.pii_attributes), key, kinds)


def lens_masters(view: LensView, snapshot: Snapshot, master_ids: Iterable[str]) -> set[str]:
    """The masters among ``master_ids`` whose personal values the lens may show (its consent purpose and
    row filters, as the published lens); a master outside them shows no personal value at all."""
    ids = sorted({m for m in master_ids if m})
    if view.lens is None or not ids:
        return set()
    lens = view.lens
    golden = _rows(snapshot, "golden_customers", "master_id", ids)
    if lens.purpose is not None:
        consent = _rows(snapshot, "consent_current", "master_id", ids)
        golden = golden.join(granted_masters(consent, lens.purpose, lens.channel), on="master_id", how="inner")
    return set(golden.filter(row_filter(lens, golden.schema))["master_id"].to_list())


def through_lens(frame: pl.DataFrame, view: LensView, attributes: Sequence[str], allowed: pl.Series | None = None,
                 ) -> tuple[pl.DataFrame, list[str]]:
    """``frame`` with each of ``attributes`` treated as the lens says (dropped when not shown), and the
    attributes that were revealed with at least one value (for the reveal log).

    ``allowed`` (one bool per row): rows whose personal values the lens may show at all; others get nulls.
    """
    out = frame
    revealed: list[str] = []
    for column in attributes:
        if column not in out.columns:
            continue
        treatment = view.treatment(column)
        if treatment is None:
            out = out.drop(column)
            continue
        if column in view.pii and allowed is not None:
            out = out.with_columns(pl.when(pl.Series(allowed)).then(pl.col(column)).otherwise(None).alias(column))
        if treatment == "mask":
            out = out.with_columns(mask(column, view.kinds.get(column), out.schema[column]))
        elif treatment == "tokenise":
            assert view.token_key is not None
            out = out.with_columns(tokenise(out[column], view.token_key))
        elif column in view.pii and out[column].null_count() < out.height:
            revealed.append(column)
    return out, revealed


# --- snapshot reads ------------------------------------------------------------------------------------


def _rows(snapshot: Snapshot, table: str, column: str, values: Sequence[str]) -> pl.DataFrame:
    rel = snapshot.con.table(table)
    if not values:
        return rel.limit(0).pl()
    return snapshot.con.sql(f'SELECT * FROM "{table}" WHERE "{column}" IN (SELECT unnest($v))',  # noqa: S608 - constants
                            params={"v": list(values)}).pl()


def records(snapshot: Snapshot, keys: Sequence[RecordKey]) -> pl.DataFrame:
    """validated_customers rows of ``keys`` with their ``record_key`` and ``master_id``, in the order given."""
    wanted = pl.DataFrame({"source_system": [k.source_system for k in keys],
                           "source_record_id": [k.source_record_id for k in keys],
                           "_order": list(range(len(keys)))}, schema={"source_system": pl.String,
                                                                      "source_record_id": pl.String, "_order": pl.Int64})
    snapshot.con.register("__wanted", wanted.to_arrow())
    try:
        frame = snapshot.con.sql(
            "SELECT v.*, x.master_id, w._order FROM __wanted w JOIN validated_customers v USING (source_system, "
            "source_record_id) LEFT JOIN customer_xref x USING (source_system, source_record_id) ORDER BY w._order").pl()
    finally:
        snapshot.con.unregister("__wanted")
    return frame.drop("_order").with_columns(_key_expr("source_system", "source_record_id").alias("record_key"))


def master_exists(snapshot: Snapshot, master_id: str) -> bool:
    return bool(snapshot.con.sql("SELECT count(*) FROM golden_customers WHERE master_id = $m",
                                 params={"m": master_id}).fetchall()[0][0])


# --- review queue --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFilter:
    reason: str | None = None  # linked | kept_apart
    source: str | None = None
    band: str | None = None

    def check(self, sources: Sequence[str]) -> QueueFilter:
        if self.reason and self.reason not in REASONS:
            raise ViewError("reason", f"expected one of {', '.join(REASONS)}", 422)
        if self.band and self.band not in BANDS:
            raise ViewError("band", f"expected one of {', '.join(BANDS)}", 422)
        if self.source and self.source not in sources:
            raise ViewError("source", "no such source system in this snapshot", 422)
        return self

    def query(self) -> dict[str, str]:
        return {k: v for k, v in (("reason", self.reason), ("source", self.source), ("band", self.band)) if v}


def in_force(decisions: pl.DataFrame) -> pl.DataFrame:
    if decisions.is_empty():
        return decisions
    return decisions.filter(pl.col("undone_at").is_null())


def decided_since(decisions: pl.DataFrame, since: str) -> pl.DataFrame:
    """Pair keys (ordered) decided and not undone since ``since`` (the snapshot's publication time)."""
    live = in_force(decisions)
    if live.is_empty():
        return pl.DataFrame(schema={"pair": pl.String})
    return live.filter(pl.col("decided_at") >= since).select(
        pl.concat_str(_key_expr("source_system_l", "source_record_id_l"), pl.lit("|"),
                      _key_expr("source_system_r", "source_record_id_r")).alias("pair")).unique()


def _ordered_pair_expr() -> pl.Expr:
    left_first = (pl.col("source_system_l") < pl.col("source_system_r")) | (
        (pl.col("source_system_l") == pl.col("source_system_r")) & (pl.col("source_record_id_l") <= pl.col("source_record_id_r")))
    lkey, rkey = _key_expr("source_system_l", "source_record_id_l"), _key_expr("source_system_r", "source_record_id_r")
    return pl.when(left_first).then(pl.concat_str(lkey, pl.lit("|"), rkey)).otherwise(pl.concat_str(rkey, pl.lit("|"), lkey))


def queue_frame(snapshot: Snapshot) -> pl.DataFrame:
    """Every queue item with its pair key, record keys, sources and evidence band, in priority order."""
    queue = snapshot.frame("match_review_queue")
    band = pl.lit(None, dtype=pl.String)
    for name, (low, high) in BANDS.items():
        band = pl.when((pl.col("match_probability") >= low) & (pl.col("match_probability") < high)).then(pl.lit(name)).otherwise(band)
    return queue.with_columns(
        _ordered_pair_expr().alias("pair"),
        _key_expr("source_system_l", "source_record_id_l").alias("key_l"),
        _key_expr("source_system_r", "source_record_id_r").alias("key_r"),
        pl.col("records").list.eval(pl.element().str.split(":").list.first()).list.unique().list.sort().alias("sources"),
        band.alias("band"),
    ).sort(["priority", "key_l", "key_r"], descending=[True, False, False])


@dataclass
class QueuePage:
    items: list[dict[str, Any]]
    total_open: int
    matching: int
    page: int
    pages: int
    decided_today: int
    decided_by_me: int
    sources: list[str]


def queue_page(snapshot: Snapshot, decisions: pl.DataFrame, user_actor: str, filters: QueueFilter, page: int,
               now: dt.datetime, page_size: int = PAGE_SIZE) -> QueuePage:
    """The open items (no decision in force on their pair since this snapshot), filtered and paged."""
    queue = queue_frame(snapshot)
    sources = sorted(set(queue["sources"].explode().drop_nulls().to_list()))
    filters.check(sources)
    decided = decided_since(decisions, snapshot.published_at)
    open_items = queue.join(decided, on="pair", how="anti", maintain_order="left")
    shown = open_items
    if filters.reason:
        shown = shown.filter(pl.col("merged") == REASONS[filters.reason])
    if filters.source:
        shown = shown.filter(pl.col("sources").list.contains(filters.source))
    if filters.band:
        shown = shown.filter(pl.col("band") == filters.band)
    pages = max(1, math.ceil(shown.height / page_size))
    page = min(max(page, 1), pages)
    items = shown.slice((page - 1) * page_size, page_size).to_dicts()
    live = in_force(decisions)
    today = now.astimezone(dt.UTC).date().isoformat()
    decided_today = live.filter(pl.col("decided_at").str.slice(0, 10) == today).height if not live.is_empty() else 0
    by_me = live.filter((pl.col("decided_by") == user_actor) & (pl.col("decided_at") >= snapshot.published_at)).height \
        if not live.is_empty() else 0
    return QueuePage(items, open_items.height, shown.height, page, pages, decided_today, by_me, sources)


def queue_item(snapshot: Snapshot, left: RecordKey, right: RecordKey) -> dict[str, Any] | None:
    low, high = _ordered(left, right)
    pair = f"{key_text(low)}|{key_text(high)}"
    found = queue_frame(snapshot).filter(pl.col("pair") == pair)
    return found.row(0, named=True) if found.height else None


def pair_known(snapshot: Snapshot, left: RecordKey, right: RecordKey) -> bool:
    """A pair a steward may decide: a queue item, a scored pair, or two records of the snapshot."""
    if left == right:
        raise ViewError("r", "a record cannot be judged against itself", 422)
    found = records(snapshot, [left, right])
    return found.height == 2


# --- pair and cluster ----------------------------------------------------------------------------------


@dataclass
class Comparison:
    name: str
    level: int | None
    label: str
    bayes_factor: float | None
    log2_bf: float | None


def comparisons(model: dict[str, Any] | None, levels: dict[str, int | None] | None) -> list[Comparison]:
    """Each comparison's level label and Bayes factor m/u (before term-frequency adjustment).

    Splink numbers the levels of a comparison from the top: the null level is -1, the last level
    ("all other comparisons") 0, the first non-null level the highest.
    """
    if not model or not levels:
        return []
    out = []
    for comparison in model.get("comparisons", []):
        name = comparison.get("output_column_name")
        if name not in levels:
            continue
        gamma = levels[name]
        entries = comparison.get("comparison_levels", [])
        ranked = [lvl for lvl in entries if not lvl.get("is_null_level")]
        if gamma is None or gamma < 0 or gamma >= len(ranked):
            null: dict[str, Any] = next((lvl for lvl in entries if lvl.get("is_null_level")), {})
            out.append(Comparison(name, gamma, null.get("label_for_charts", "missing"), 1.0, 0.0))
            continue
        level = ranked[len(ranked) - 1 - gamma]
        m, u = level.get("m_probability"), level.get("u_probability")
        bf = (m / u) if m and u else None
        out.append(Comparison(name, gamma, level.get("label_for_charts", ""), bf, math.log2(bf) if bf else None))
    return out


def prior_weight(model: dict[str, Any] | None) -> float | None:
    p = (model or {}).get("probability_two_random_records_match")
    return math.log2(p / (1 - p)) if p and 0 < p < 1 else None


def pair_scores(snapshot: Snapshot, left: RecordKey, right: RecordKey) -> dict[str, Any] | None:
    rows = snapshot.con.sql(
        "SELECT match_weight, match_probability, comparison_levels FROM match_pairs WHERE "
        "(source_system_l = $a AND source_record_id_l = $b AND source_system_r = $c AND source_record_id_r = $d) OR "
        "(source_system_l = $c AND source_record_id_l = $d AND source_system_r = $a AND source_record_id_r = $b) LIMIT 1",
        params={"a": left.source_system, "b": left.source_record_id, "c": right.source_system, "d": right.source_record_id},
    ).pl()
    return rows.row(0, named=True) if rows.height else None


def other_candidates(snapshot: Snapshot, keys: Sequence[RecordKey], exclude: Sequence[RecordKey], limit: int = 10,
                     ) -> list[dict[str, Any]]:
    """The best-scored other pairs of any of ``keys`` (from match_pairs), with the other record's master."""
    text = [key_text(k) for k in keys]
    skip = [key_text(k) for k in exclude]
    frame = snapshot.con.sql(
        """
        WITH p AS (
            SELECT source_system_l || ':' || source_record_id_l AS a, source_system_r || ':' || source_record_id_r AS b,
                   source_system_r AS os, source_record_id_r AS oid, match_weight, match_probability FROM match_pairs
            UNION ALL
            SELECT source_system_r || ':' || source_record_id_r, source_system_l || ':' || source_record_id_l,
                   source_system_l, source_record_id_l, match_weight, match_probability FROM match_pairs
        )
        SELECT p.a AS record_key, p.b AS other_key, x.master_id AS other_master, p.match_weight, p.match_probability
        FROM p LEFT JOIN customer_xref x ON x.source_system = p.os AND x.source_record_id = p.oid
        WHERE p.a IN (SELECT unnest($keys)) AND p.b NOT IN (SELECT unnest($skip))
        ORDER BY p.match_weight DESC, p.b LIMIT $n
        """, params={"keys": text, "skip": skip or [""], "n": limit}).pl()
    return frame.to_dicts()


@dataclass
class RecordsView:
    attributes: list[str]  # shown, in schema order
    rows: list[dict[str, Any]]  # record_key, master_id, source_system, values{attr: text|None}
    differs: set[str]  # attributes whose values differ between the records shown
    revealed: list[str]
    treatments: dict[str, str]


def records_view(config: ProjectConfig, snapshot: Snapshot, view: LensView, keys: Sequence[RecordKey]) -> RecordsView:
    frame = records(snapshot, keys)
    found = set(frame["record_key"].to_list())
    missing = [key_text(k) for k in keys if key_text(k) not in found]
    if missing:
        raise ViewError("record", f"{len(missing)} record key(s) are not in this snapshot (decided on an older run?)")
    attributes = [a for a in config.customer_schema.attributes if a in frame.columns]
    differs = {a for a in attributes if frame[a].drop_nulls().cast(pl.String).n_unique() > 1}
    allowed = lens_masters(view, snapshot, frame["master_id"].drop_nulls().to_list())
    treated, revealed = through_lens(frame, view, attributes, frame["master_id"].is_in(list(allowed)))
    # An attribute no record has is left out: the steward compares what is there.
    shown = [a for a in attributes if a in treated.columns and treated[a].null_count() < treated.height]
    rows = [{"record_key": r["record_key"], "master_id": r["master_id"], "source_system": r["source_system"],
             "record_type": r.get("record_type"), "values": {a: _text(r[a]) for a in shown}} for r in treated.to_dicts()]
    return RecordsView(shown, rows, differs & set(shown), revealed, {a: view.treatment(a) or "" for a in shown})


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- master --------------------------------------------------------------------------------------------


@dataclass
class MasterView:
    master_id: str
    golden: dict[str, str | None]  # attribute -> shown value
    meta: dict[str, Any]
    lineage: dict[str, dict[str, Any]]  # attribute -> source record, rule
    history: list[dict[str, Any]]
    sources: RecordsView
    consent: list[dict[str, Any]]
    master_lineage: list[dict[str, Any]]
    revealed: list[str]
    treatments: dict[str, str]


def master_view(config: ProjectConfig, snapshot: Snapshot, view: LensView, master_id: str) -> MasterView:
    golden = _rows(snapshot, "golden_customers", "master_id", [master_id])
    if golden.is_empty():
        raise ViewError("master_id", "no such master in this snapshot")
    attributes = [a for a in config.customer_schema.attributes if a in golden.columns]
    allowed = lens_masters(view, snapshot, [master_id])
    treated, revealed = through_lens(golden, view, attributes, pl.Series([master_id in allowed]))
    row = treated.row(0, named=True)
    shown = [a for a in attributes if a in treated.columns]
    meta: dict[str, Any] = {k: _text(row[k]) for k in ("party_type", "record_type", "record_count", "source_count", "source_systems",
                                       "organisation_master_id", "valid_from") if k in row}
    lineage = {r["attribute"]: r for r in _rows(snapshot, "golden_attribute_lineage", "master_id", [master_id]).to_dicts()}
    history_frame = _rows(snapshot, "golden_customers_history", "master_id", [master_id]).sort("valid_from")
    history = []
    previous: dict[str, Any] | None = None
    for version in history_frame.to_dicts():  # a handful of versions per master
        changed = [a for a in attributes if previous is not None and version.get(a) != previous.get(a)]
        history.append({"valid_from": _text(version.get("valid_from")), "valid_to": _text(version.get("valid_to")),
                        "run_id": version.get("run_id"), "changed": changed})
        previous = version
    xref = _rows(snapshot, "customer_xref", "master_id", [master_id]).sort(["source_system", "source_record_id"])
    keys = [RecordKey(s, r) for s, r in xref.select("source_system", "source_record_id").iter_rows()]
    sources = records_view(config, snapshot, view, keys) if keys else RecordsView([], [], set(), [], {})
    consent = _rows(snapshot, "consent_current", "master_id", [master_id]).sort(["purpose", "channel"]).select(
        "purpose", "channel", "granted", "decided_at", "lawful_basis", "policy_version").to_dicts()
    lineage_events = snapshot.con.sql(
        "SELECT * FROM master_id_lineage WHERE master_id = $m OR related_master_id = $m ORDER BY recorded_at",
        params={"m": master_id}).pl().to_dicts()
    return MasterView(master_id, {a: _text(row[a]) for a in shown}, meta, lineage, history, sources,
                      [{**c, "decided_at": _text(c["decided_at"])} for c in consent], lineage_events,
                      sorted(set(revealed) | set(sources.revealed)), {a: view.treatment(a) or "" for a in shown})


def master_records(snapshot: Snapshot, master_id: str) -> list[RecordKey]:
    xref = _rows(snapshot, "customer_xref", "master_id", [master_id]).sort(["source_system", "source_record_id"])
    return [RecordKey(s, r) for s, r in xref.select("source_system", "source_record_id").iter_rows()]


def merge_pair(snapshot: Snapshot, master_a: str, master_b: str) -> tuple[RecordKey, RecordKey]:
    """The pair a merge of two masters is recorded as: the first record (by key) of each."""
    if master_a == master_b:
        raise ViewError("other", "a master cannot be merged with itself", 422)
    a, b = master_records(snapshot, master_a), master_records(snapshot, master_b)
    if not a:
        raise ViewError("master_id", "no such master in this snapshot")
    if not b:
        raise ViewError("other", "no such master in this snapshot")
    return a[0], b[0]


def split_pairs(snapshot: Snapshot, master_id: str, chosen: Sequence[str]) -> list[tuple[RecordKey, RecordKey]]:
    """``different`` pairs that split ``chosen`` record keys off ``master_id``: each chosen × each remaining."""
    members = master_records(snapshot, master_id)
    if not members:
        raise ViewError("master_id", "no such master in this snapshot")
    member_text = {key_text(k): k for k in members}
    picked = [member_text[c] for c in dict.fromkeys(chosen) if c in member_text]
    if len(picked) != len(set(chosen)):
        raise ViewError("records", "every record to split off must be a source record of this master", 422)
    rest = [k for k in members if k not in picked]
    if not picked or not rest:
        raise ViewError("records", "choose at least one record to split off, and leave at least one", 422)
    return [(p, r) for p in picked for r in rest]
