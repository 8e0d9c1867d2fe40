"""Scoring one record against all records with the saved model, as the batch would score each pair.

The batch scores pairs with Splink on DuckDB (:func:`stages.match_model.score_pairs`). Here, per request:
the model's blocking rules give the candidates (:mod:`resolve_blocking`); Splink's own comparison SQL
(each comparison's CASE statement, compiled once) gives each pair's comparison levels on a small
DuckDB table of the record x its candidates; and each level's weight, the term-frequency adjustment
and their sum are taken as Splink's prediction SQL takes them, term by term in the same order. Running
Splink's whole prediction SQL instead costs 30-45 ms a request in DuckDB's binder alone (measured on
2 cores), whatever the number of candidates; the CASE statements cost a few.

Term frequencies are those of all records, computed by Splink's own SQL, as in the batch.
"""

from __future__ import annotations

import math
import queue
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from cmdm_pipeline.stages.match_model import prior_weight, scoring_settings
from cmdm_pipeline.web.resolve_blocking import BlockingRuleError, KeyIndex, columns_of, lookups

PAIRS = "resolve_pairs"
QUERY = "resolve_query"
#: DuckDB cursors ready for requests (each serves one request at a time).
SESSIONS = 4
#: The new record's unique_id: record ids are row positions (0..n-1), so it never meets one.
QUERY_ID = -1


@dataclass(frozen=True)
class Level:
    label: str
    log2_bayes_factor: float  # Splink's level match weight (log2 m/u, m and u clamped as Splink clamps them)


@dataclass(frozen=True)
class TermFrequency:
    """A level's adjustment by how common the value is (Splink's ``_tf_adjustment_sql``, in Python)."""

    column: str
    weight: float
    log2_u_exact: float
    minimum_u: float

    def log2_adjustment(self, tf_l: np.ndarray, tf_r: np.ndarray) -> np.ndarray:
        either = np.where(np.isnan(tf_l), tf_r, tf_l)
        value = np.fmax(np.fmax(either, np.where(np.isnan(tf_r), tf_l, tf_r)), self.minimum_u)
        with np.errstate(invalid="ignore", divide="ignore"):
            adjusted = self.weight * (self.log2_u_exact - np.log2(value))
        return np.where(np.isnan(either), 0.0, adjusted)


@dataclass(frozen=True)
class Comparison:
    name: str  # output column name
    case_sql: str  # Splink's CASE statement giving gamma_<name>
    levels: dict[int, Level]  # by comparison vector value (gamma: -1 for the null level, then 0, 1, ...)
    term_frequencies: dict[int, TermFrequency]  # by gamma, for levels adjusted by term frequency

    @cached_property
    def weights(self) -> np.ndarray:
        """Level weights by gamma + 1."""
        return np.array([self.levels[g].log2_bayes_factor if g in self.levels else math.nan
                         for g in range(-1, max(self.levels) + 1)], dtype=np.float64)


def _comparisons(settings: Any) -> list[Comparison]:
    compiled = []
    for comparison in settings.comparisons:
        levels, adjusted = {}, {}
        for level in comparison.comparison_levels:
            gamma = level.comparison_vector_value
            # A level without m or u (Splink cannot score such a model either): no weight, so never a candidate.
            weight = level._match_weight
            levels[gamma] = Level(level.label_for_charts, math.nan if weight is None else float(weight))
            if gamma != -1 and level._has_tf_adjustments and level._tf_adjustment_weight != 0 and not level._is_else_level:
                u_exact = level._u_probability_corresponding_to_exact_match(comparison.comparison_levels)
                adjusted[gamma] = TermFrequency(level._tf_adjustment_input_column.unquote().name,
                                                float(level._tf_adjustment_weight), math.log2(u_exact),
                                                float(level._tf_minimum_u_value))
        compiled.append(Comparison(comparison.output_column_name, comparison._case_statement, levels, adjusted))
    return compiled


def _input_columns(settings: Any) -> list[str]:
    return sorted({c.unquote().name for comparison in settings.comparisons for level in comparison.comparison_levels
                   for c in level._input_columns_used_by_sql_condition})


def _settings(model: dict[str, Any]) -> Any:
    from splink.internals.settings_creator import SettingsCreator

    return SettingsCreator.from_path_or_dict(scoring_settings(model)).get_settings("duckdb")


def model_columns(model: dict[str, Any]) -> set[str]:
    """The feature columns the model's comparisons and blocking rules read."""
    return {*_input_columns(_settings(model)), *columns_of(_blocking_rules(model))}


def _blocking_rules(model: dict[str, Any]) -> list[str]:
    """The model's blocking rules as SQL; a model resolve cannot read as the batch does is refused."""
    if model.get("link_type") != "dedupe_only":
        raise BlockingRuleError(f"resolve reads dedupe_only models (as the pipeline trains them), not {model.get('link_type')!r}")
    rules = []
    for rule in model["blocking_rules_to_generate_predictions"]:
        if isinstance(rule, dict) and rule.get("arrays_to_explode"):
            raise BlockingRuleError(f"blocking rule {rule['blocking_rule']!r} explodes arrays: resolve cannot look it up")
        rules.append(rule["blocking_rule"] if isinstance(rule, dict) else rule)
    return rules


def _connect() -> Any:
    import duckdb

    con = duckdb.connect(":memory:")
    # SQL from cmdm.yaml (blocking rules, comparisons) runs here, as in the batch's scratch database: it may
    # read, write or attach no file. Records come in as Arrow; nothing spills to disk (personal data).
    con.execute("SET temp_directory = ''")
    con.execute("SET enable_external_access = false")
    return con


class _Session:
    """A DuckDB cursor with its two statements prepared once, for one request at a time.

    Measured on 2 cores: DuckDB binds and optimises a statement anew on every run, and for the comparisons'
    CASE statements (~2,000 expression nodes) that costs 8 ms where running them on a few pairs costs 0.2 ms.
    A prepared statement with the optimizer off (these are projections of a small table: nothing to
    optimise, the same results) runs in about 1 ms. Per request the two small tables are refilled."""

    def __init__(self, con: Any, query: pl.DataFrame, pairs: pl.DataFrame, key_sql: str, gamma_sql: str) -> None:
        self.cursor = con.cursor()
        self.cursor.execute("PRAGMA disable_optimizer")  # this cursor's own setting, before the configuration is locked
        for table, empty in ((QUERY, query), (PAIRS, pairs)):
            self.cursor.register("resolve_empty", empty.head(0).to_arrow())
            # A TEMP table is this cursor's own: the sessions' tables never meet.
            self.cursor.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM resolve_empty")  # noqa: S608 - constants
            self.cursor.unregister("resolve_empty")
        self.cursor.execute(f"PREPARE resolve_keys AS {key_sql}")
        self.cursor.execute(f"PREPARE resolve_gammas AS {gamma_sql}")

    def _fill(self, table: str, frame: pl.DataFrame) -> None:
        self.cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - a constant
        self.cursor.from_arrow(frame.to_arrow()).insert_into(table)

    def keys(self, query: pl.DataFrame) -> tuple[Any, ...]:
        self.cursor.execute(f"DELETE FROM {QUERY}")  # noqa: S608 - a constant
        # One row: bound values are quicker than an Arrow table (0.4 ms against 0.7).
        self.cursor.execute(f"INSERT INTO {QUERY} VALUES ({', '.join('?' * query.width)})", list(query.row(0)))  # noqa: S608
        return self.cursor.execute("EXECUTE resolve_keys").fetchall()[0]

    def gammas(self, pairs: pl.DataFrame) -> dict[str, np.ndarray]:
        """The comparison levels of ``pairs``, row for row (one thread reads the table in its order)."""
        self._fill(PAIRS, pairs)
        return self.cursor.execute("EXECUTE resolve_gammas").fetchnumpy()


class Scorer:
    """Blocking look-ups and comparisons of the saved ``model`` over ``features`` (one row per record,
    ``unique_id`` its row position). Thread-safe: each call takes one of ``sessions`` DuckDB cursors (and
    waits for one when all are busy: on 2 cores more would only queue inside DuckDB)."""

    def __init__(self, features: pl.DataFrame, model: dict[str, Any], sessions: int = SESSIONS) -> None:
        from splink.internals.misc import prob_to_match_weight

        settings = _settings(model)
        self.comparisons = _comparisons(settings)
        # The batch's evidence: Splink's match weight (its prior plus each term, in order) less the model's prior.
        self._splink_prior = prob_to_match_weight(settings.core_model_settings.probability_two_random_records_match)
        self._prior_weight = prior_weight(model)
        rules = _blocking_rules(model)
        self._tf_columns = sorted({tf.column for c in self.comparisons for tf in c.term_frequencies.values()})
        self._con = _connect()
        con = self._con
        con.register("resolve_features", features.to_arrow())
        try:
            records = self._with_term_frequencies(features)

            def type_of(sql: str) -> str:
                return str(con.execute(f"SELECT {sql} FROM resolve_features LIMIT 0").description[0][1])  # noqa: S608

            self._lookups = lookups(rules, type_of)
            self._indexes = [KeyIndex.build(con, "resolve_features", lookup) for lookup in self._lookups]
        finally:
            con.unregister("resolve_features")
        checked = [lk.pair_check for lk in self._lookups if lk.pair_check is not None]
        self._key_columns = sorted(columns_of(rules))
        self._compared = sorted({*_input_columns(settings), *(columns_of(rules) if checked else ())})
        self._pair_columns = [*self._compared, *(f"tf_{n}" for n in self._tf_columns)]
        # What a pair needs of a record, apart: a request gathers a few rows of these columns, not of all.
        self._schema = records.schema  # of a record's features and term frequencies, as a query is held too
        self._compared_records = records.select(
            pl.col("unique_id").alias("unique_id_r"), *[pl.col(c).alias(f"{c}_r") for c in self._pair_columns])
        self._key_sql = f"SELECT {', '.join(lk.query_key for lk in self._lookups)} FROM {QUERY}"  # noqa: S608
        gammas = ", ".join(c.case_sql for c in self.comparisons)
        # Pairs only one check-needing look-up found are kept where the rule holds (resolve_sure_r: found without).
        blocked = f"resolve_sure_r OR {' OR '.join(f'({c})' for c in checked)}" if checked else "TRUE"
        self._gamma_sql = f"SELECT {gammas}, {blocked} AS resolve_blocked FROM {PAIRS}"  # noqa: S608
        # Requests run tiny statements, several at once from a server's threads: none gains from DuckDB's threads.
        con.execute("SET threads = 1")
        empty = self._query(features.head(1))
        self._sessions: queue.SimpleQueue[_Session] = queue.SimpleQueue()
        for _ in range(sessions):
            self._sessions.put(_Session(con, empty.select(self._key_columns), self._pairs(empty, []).select(self._sql_columns),
                                        self._key_sql, self._gamma_sql))
        con.execute("SET lock_configuration = true")

    @property
    def nbytes(self) -> int:
        """Memory of what a pair needs of each record, and of the look-ups (DuckDB holds no copy)."""
        return int(self._compared_records.estimated_size() + sum(index.nbytes for index in self._indexes))

    def _with_term_frequencies(self, features: pl.DataFrame) -> pl.DataFrame:
        """``features`` with ``tf_<column>`` per adjusted column, by Splink's own SQL over all records (as the
        batch's ``predict`` computes them), and a look-up of each value's frequency for new records."""
        from splink.internals.input_column import InputColumn
        from splink.internals.term_frequencies import term_frequencies_for_single_column_sql

        frame = features
        self._tf_lookup: dict[str, tuple[np.ndarray, pl.Series, np.ndarray]] = {}
        for name in self._tf_columns:
            sql = term_frequencies_for_single_column_sql(InputColumn(name, sqlglot_dialect_str="duckdb"), "resolve_features")
            table = self._con.sql(sql).pl()
            frame = frame.join(table, on=name, how="left", maintain_order="left")
            hashes = table[name].hash(seed=0).to_numpy()
            order = np.argsort(hashes, kind="stable")
            self._tf_lookup[name] = (hashes[order], table[name].gather(order), table[f"tf_{name}"].to_numpy()[order])
        return frame

    def term_frequency(self, name: str, value: Any) -> float | None:
        """How often ``value`` occurs among all records' ``name`` (share of non-null values); None if never."""
        if value is None:
            return None
        hashes, values, tfs = self._tf_lookup[name]
        key = np.uint64(pl.Series([value], dtype=values.dtype).hash(seed=0)[0])  # a Python int: see KeyIndex.find
        for i in range(int(np.searchsorted(hashes, key, "left")), int(np.searchsorted(hashes, key, "right"))):
            if values[i] == value:  # the hash narrows it down, the value decides
                return float(tfs[i])
        return None

    def _query(self, features: pl.DataFrame) -> pl.DataFrame:
        """One record's features as the index's records are held: unique_id -1, term frequencies looked up."""
        return features.with_columns(
            pl.lit(QUERY_ID, dtype=pl.Int64).alias("unique_id"),
            *[pl.lit(self.term_frequency(n, features[n][0]), dtype=pl.Float64).alias(f"tf_{n}") for n in self._tf_columns],
        ).select(list(self._schema)).cast(self._schema)

    def score(self, features: pl.DataFrame) -> pl.DataFrame:
        """Every record a blocking rule pairs with the one-row ``features``: unique_id, evidence, and per
        comparison gamma_<name> and mw_<name> (its log2 Bayes factor, term-frequency adjustment included)."""
        query = self._query(features)
        session = self._sessions.get()
        try:
            keys = session.keys(query.select(self._key_columns))
            found = [(self._indexes[i].find(key), self._lookups[i].pair_check is None)
                     for i, key in enumerate(keys) if key is not None]
            pairs = self._pairs(query, found)
            gammas = session.gammas(pairs.select(self._sql_columns)) if pairs.height else {}
        finally:
            self._sessions.put(session)
        return self._scored(pairs, gammas)

    def _pairs(self, query: pl.DataFrame, found: list[tuple[np.ndarray, bool]]) -> pl.DataFrame:
        """The query's values (``_l``) beside each candidate's (``_r``), one row per candidate."""
        ids = np.unique(np.concatenate([f for f, _ in found])) if found else np.empty(0, np.int32)
        sure = np.unique(np.concatenate([f for f, s in found if s])) if any(s for _, s in found) else np.empty(0, np.int32)
        right = self._compared_records[ids].with_columns(pl.Series("resolve_sure_r", np.isin(ids, sure)))
        return right.join(query.select(pl.col(c).alias(f"{c}_l") for c in self._pair_columns), how="cross")

    @property
    def _sql_columns(self) -> list[str]:
        """The pair columns the comparison SQL reads (term frequencies are applied in Python)."""
        return [f"{c}_{side}" for c in self._compared for side in ("l", "r")] + ["resolve_sure_r"]

    def _scored(self, pairs: pl.DataFrame, gammas: dict[str, np.ndarray]) -> pl.DataFrame:
        kept = np.asarray(gammas["resolve_blocked"], dtype=bool) if pairs.height else np.zeros(0, dtype=bool)
        total = np.full(pairs.height, self._splink_prior, dtype=np.float64)
        columns: dict[str, Any] = {"unique_id": pairs["unique_id_r"].to_numpy() if pairs.height else np.zeros(0, np.int64)}
        for comparison in self.comparisons:
            gamma = np.asarray(gammas.get(f"gamma_{comparison.name}", np.zeros(0)), dtype=np.int64)
            level_weight = comparison.weights[gamma + 1]
            adjustment = np.zeros(pairs.height, dtype=np.float64)
            for g, tf in comparison.term_frequencies.items():
                at = gamma == g
                if at.any():
                    tf_l = pairs[f"tf_{tf.column}_l"].to_numpy().astype(np.float64)[at]
                    tf_r = pairs[f"tf_{tf.column}_r"].to_numpy().astype(np.float64)[at]
                    adjustment[at] = tf.log2_adjustment(tf_l, tf_r)
            # Summed term by term in Splink's order (level weight, then its adjustment): the same doubles.
            total = total + level_weight
            if comparison.term_frequencies:
                total = total + adjustment
            columns[f"gamma_{comparison.name}"] = gamma
            columns[f"mw_{comparison.name}"] = level_weight + adjustment
        columns["evidence"] = total - self._prior_weight
        return pl.DataFrame(columns).filter(pl.Series(kept))
