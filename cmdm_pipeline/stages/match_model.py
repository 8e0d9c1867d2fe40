"""Training and scoring the Splink model, at any size, on the engine cmdm.yaml chose (DuckDB or Spark).

Training is Splink's own: a first prior from deterministic rules, u by random sampling, m by EM on
a few blocking rules. Then the model is *calibrated* on the data: the share of record pairs that
match (the prior) is estimated from the scored pairs themselves (:func:`match_calibration.match_rate`),
and u is freed of the matches that random pairs contain (:func:`match_calibration.decontaminated`). A
source of 200 records gets a real model the same way; a level EM cannot train keeps Splink's default.

Splink runs in the engine's own scratch workspace (:mod:`cmdm_pipeline.engines`), never in the warehouse.
The settings and the saved model are in DuckDB's SQL dialect whatever the engine: the engine translates
them when it runs them, and a model trained on one engine scores on the other.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from cmdm_pipeline.config import MatchingConfig
from cmdm_pipeline.engines import MODEL_DIALECT, Engine, engine_for, list_columns
from cmdm_pipeline.engines.duckdb import scratch_db as _scratch_db
from cmdm_pipeline.progress import step
from cmdm_pipeline.schema import CustomerSchema, Kind
from cmdm_pipeline.stages.match_blocking import bounded_blocking, pair_budget
from cmdm_pipeline.stages.match_calibration import candidate_pairs, decontaminated, match_rate
from cmdm_pipeline.stages.match_features import PHONES
from cmdm_pipeline.stages.match_settings import build_settings, training_rules

if TYPE_CHECKING:
    from splink.internals.charts import SplinkChart

MODEL_VERSION_KEY = "cmdm_model_version"  # our keys in the saved model start with cmdm_
log = logging.getLogger(__name__)

MIN_FILLED = 50  # records; below this an attribute has too little data to learn m and u
#: Pairs scored to estimate the prior while training: a random share of the records (by a hash of the
#: id, so repeatable) large enough that the prior's estimate is stable, small enough to take seconds.
CALIBRATION_RECORDS = 200_000
#: Pairs scored in one go at most (as counted before scoring): more are scored in chunks of records, each
#: chunk's blocked pairs and scores dropped before the next, so Splink's scratch database holds one chunk.
#: At 10M records 500M pairs in one go passed 36 GB on disk in 12 minutes.
CHUNK_PAIRS = 50_000_000
#: Scored pairs below this probability (under the model's prior) are not kept: they cannot link, and
#: the prior's estimate and the review queue do not need them.
MIN_KEPT_PROBABILITY = 0.001


def matchable_schema(schema: CustomerSchema, features: pl.DataFrame) -> CustomerSchema:
    """The schema with matching switched off for attributes (nearly) empty in this data:
    Splink cannot estimate parameters for levels it never observes."""
    filled = features.select(pl.all().is_not_null().sum()).row(0, named=True)
    needed = min(MIN_FILLED, max(1, features.height // 100))
    attributes = {}
    for name, attribute in schema.attributes.items():
        column = PHONES if attribute.kind is Kind.phone else name
        if attribute.use_in_matching and filled.get(column, 0) < needed:
            attribute = attribute.model_copy(update={"match": False})
        attributes[name] = attribute
    return schema.model_copy(update={"attributes": attributes})


@dataclass(frozen=True)
class TrainedModel:
    settings: dict[str, Any]  # the saved Splink model, calibrated
    seconds: dict[str, float]  # time per training step


@contextmanager
def _linker(features: pl.DataFrame, settings: dict[str, Any], engine: Engine) -> Iterator[Any]:
    from splink import Linker

    with engine.workspace() as db_api:
        records = db_api.register(features.to_arrow(), table_name="cmdm_records")
        yield Linker(records, engine.settings(settings, list_columns(features)), log_level=logging.WARNING)


def _quiet_splink() -> None:
    # Splink warns per level it cannot train ("not observed in dataset") and per untrained level at
    # predict time: on small or sparse sources that is dozens of lines saying what the model metadata
    # already records. Errors still show.
    for name in ("splink", "splink.internals"):
        logging.getLogger(name).setLevel(logging.ERROR)


def train_model(
    features: pl.DataFrame, schema: CustomerSchema, matching: MatchingConfig, version: int, charts_dir: Path | None = None
) -> TrainedModel:
    """Splink's training (prior from deterministic rules, u by sampling, m by EM), then calibrated on the data."""
    _quiet_splink()
    schema = matchable_schema(schema, features)
    engine = engine_for(matching)
    seconds: dict[str, float] = {}
    skipped: list[str] = []
    deterministic, em_rules = training_rules(schema)
    lists = list_columns(features)
    settings = build_settings(schema, matching)
    # Phases: the prior, u by sampling, EM per rule, calibration (Splink reports none of them itself).
    with step(f"matching: training on {features.height:,} records", total=3 + len(em_rules)) as advance:
        with _linker(features, settings, engine) as linker:
            started = time.perf_counter()
            if deterministic:
                try:
                    linker.training.estimate_probability_two_random_records_match(
                        [engine.rule(rule, lists) for rule in deterministic], recall=0.7)
                except Exception as exc:  # noqa: BLE001 - no pair meets any rule (a tiny source): keep Splink's default
                    log.info("first prior left at Splink's default: %s", type(exc).__name__)
            seconds["prior"] = time.perf_counter() - started
            advance(1)
            started = time.perf_counter()
            pairs = candidate_pairs(features)
            if pairs:
                # A small source has fewer pairs than the sample: take them all.
                linker.training.estimate_u_using_random_sampling(
                    max_pairs=min(matching.u_max_pairs, pairs), seed=matching.seed, num_chunks=engine.u_chunks)
            seconds["u"] = time.perf_counter() - started
            advance(1)
            started = time.perf_counter()
            for rule in em_rules:
                try:
                    linker.training.estimate_parameters_using_expectation_maximisation(
                        engine.rule(rule, lists), max_pairs=matching.em_max_pairs)
                except Exception as exc:  # noqa: BLE001 - too few pairs, or an m of exactly 0 (Splink refuses it)
                    # The other rules still train those comparisons; untrained levels keep Splink's defaults.
                    log.info("EM on %r skipped: %s", rule, type(exc).__name__)
                    skipped.append(rule)
                advance(1)
            seconds["em"] = time.perf_counter() - started
            model = engine.trained(linker.misc.save_model_to_json(), settings)
        started = time.perf_counter()
        model = calibrate(features, model, matching)
        seconds["calibrate"] = time.perf_counter() - started
        advance(1)
    model[MODEL_VERSION_KEY] = version
    model["cmdm_em_rules_skipped"] = skipped
    if charts_dir is not None:
        save_charts(model, charts_dir, matching)
    return TrainedModel(model, seconds)


def save_charts(model: dict[str, Any], charts_dir: Path, matching: MatchingConfig) -> None:
    """Splink's match-weight and m/u charts of the calibrated model, as self-contained HTML."""
    charts_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in model.items() if not k.startswith("cmdm_")}
    # Whatever the engine: the charts read only the model (in DuckDB's dialect), no records.
    with _scratch_db(matching.memory_limit) as db_api:
        from splink import Linker

        # The charts read only the model; Splink wants a table to build a linker on.
        empty = db_api.register(pl.DataFrame({"unique_id": [0]}).to_arrow(), table_name="cmdm_no_records")
        linker = Linker(empty, settings, log_level=logging.WARNING, validate_settings=False)
        charts: dict[str, SplinkChart[Any]] = {"match_weights": linker.visualisations.match_weights_chart(),
                  "m_u_parameters": linker.visualisations.m_u_parameters_chart()}
    # Saved outside the scratch: the charts hold only the model, and are reports with the usual file modes.
    for name, chart in charts.items():
        # inline=True bundles the chart scripts: the pages open without network access.
        chart.save(str(charts_dir / f"{name}.html"), inline=True)


def calibrate(features: pl.DataFrame, model: dict[str, Any], matching: MatchingConfig, rounds: int = 2) -> dict[str, Any]:
    """The model with the data's own prior and u freed of matches, estimated on a sample of the records."""
    sample = features
    if features.height > CALIBRATION_RECORDS:
        share = CALIBRATION_RECORDS / features.height
        sample = features.filter((pl.col("unique_id").hash(seed=matching.seed) % 1_000_000) < share * 1_000_000)
    rate = match_rate(np.array([]), candidate_pairs(features), model["probability_two_random_records_match"])
    trained = model = {**model, "probability_two_random_records_match": rate}
    # Blocks are counted once: the rounds change the prior and u, not the blocking rules.
    sample, bounded, _ = bounded_scoring(sample, model, matching)
    rules = {"blocking_rules_to_generate_predictions": bounded["blocking_rules_to_generate_predictions"]}
    for _ in range(rounds):
        # Sorted: the sum must not depend on the order DuckDB's threads returned the pairs in.
        scored = score_pairs(sample, {**model, **rules}, matching).sort("unique_id_l", "unique_id_r")
        rate = match_rate(scored["evidence"].to_numpy(), candidate_pairs(sample), rate)
        model = decontaminated(trained, rate, min(matching.u_max_pairs, candidate_pairs(features)))
    return model


def prior_weight(model: dict[str, Any]) -> float:
    p = model["probability_two_random_records_match"]
    return math.log2(p / (1 - p))


def scoring_settings(model: dict[str, Any]) -> dict[str, Any]:
    settings = {k: v for k, v in model.items() if not k.startswith("cmdm_")}
    # Matching and intermediate columns carry the comparison levels (gamma_*) that explain a pair.
    settings["retain_intermediate_calculation_columns"] = True
    settings["retain_matching_columns"] = True
    return settings


def _predictions_frame(predictions: Any, prior: float, engine: Engine) -> pl.DataFrame:
    """Only ids, evidence and comparison levels leave the engine (not the retained value columns).

    ``evidence`` is the match weight without the prior: the sum of the comparisons' log2 Bayes factors.
    """
    gammas = [name for name in (c.unquote().name for c in predictions.columns) if name.startswith("gamma_")]
    # Plain SQL that DuckDB and Spark read alike; the prior is a float formatted by repr, the names Splink's.
    return engine.select(predictions, [
        "CAST(unique_id_l AS BIGINT) AS unique_id_l", "CAST(unique_id_r AS BIGINT) AS unique_id_r",
        # Levels are small integers: one byte each, not four, over hundreds of millions of pairs.
        f"match_weight - CAST({float(prior)!r} AS DOUBLE) AS evidence", *(f"CAST({g} AS TINYINT) AS {g}" for g in gammas)])


def bounded_scoring(features: pl.DataFrame, model: dict[str, Any], matching: MatchingConfig,
                    ) -> tuple[pl.DataFrame, dict[str, Any], dict[str, int]]:
    """The records and model to score with, the largest blocks left out when the blocking rules would give
    more than ``matching.max_pairs_per_record`` pairs per record (:mod:`match_blocking`), and what was left out."""
    rules = model["blocking_rules_to_generate_predictions"]
    budget = pair_budget(features.height, matching.max_pairs_per_record)
    if budget is None:
        return features, model, {}
    # Counted on DuckDB whatever the engine: the records are a frame in this process already.
    with _scratch_db(matching.memory_limit) as db_api:
        bounded = bounded_blocking(features, [r["blocking_rule"] for r in rules], budget, db_api.duckdb_con)
    bounded_rules = [{**rule, "blocking_rule": sql} for rule, sql in zip(rules, bounded.rules, strict=True)]
    return bounded.features, {**model, "blocking_rules_to_generate_predictions": bounded_rules}, bounded.report


def _kept_weight() -> float:
    return math.log2(MIN_KEPT_PROBABILITY / (1 - MIN_KEPT_PROBABILITY))


def score_pairs(features: pl.DataFrame, model: dict[str, Any], matching: MatchingConfig, pairs: int = 0) -> pl.DataFrame:
    """Every blocked pair that could link: ids, evidence, comparison levels. ``pairs``: how many the blocking
    gives, when counted (:func:`bounded_scoring`); over :data:`CHUNK_PAIRS` they are scored in chunks."""
    _quiet_splink()
    engine = engine_for(matching)
    side = math.ceil(math.sqrt(pairs / CHUNK_PAIRS)) if pairs > CHUNK_PAIRS else 1
    prior, kept = prior_weight(model), _kept_weight()
    with _linker(features, scoring_settings(model), engine) as linker:
        if side == 1:
            return _predictions_frame(linker.inference.predict(threshold_match_weight=kept), prior, engine)
        parts = []
        # A chunk takes minutes at 10M records: the run shows how many of them are done.
        with step(f"scoring {pairs:,} pairs in chunks of records", total=side * side) as advance:
            # A pair's records fall in one chunk of ids each: the side x side chunks score every pair once.
            for left, right in itertools.product(range(1, side + 1), repeat=2):
                chunk = linker.inference.predict_chunk((left, side), (right, side), threshold_match_weight=kept,
                                                       warning_mode="never")
                parts.append(_predictions_frame(chunk, prior, engine))
                chunk.drop_table_from_database_and_remove_from_cache()
                advance(1)
        return pl.concat(parts)


def score_new_pairs(
    features: pl.DataFrame, new_ids: pl.Series, model: dict[str, Any], matching: MatchingConfig
) -> pl.DataFrame:
    """Pairs involving new or changed records only: new x existing and new x new.

    Term frequencies come from all records, as in a full scoring run.
    """
    from splink import Linker

    _quiet_splink()
    engine = engine_for(matching)
    with engine.workspace() as db_api:
        everyone = db_api.register(features.to_arrow(), table_name="cmdm_records")
        fresh = features.filter(pl.col("unique_id").is_in(new_ids.implode()))
        known = features.filter(~pl.col("unique_id").is_in(new_ids.implode()))
        linker = Linker(everyone, engine.settings(scoring_settings(model), list_columns(features)), log_level=logging.WARNING)
        for column in linker._settings_obj._term_frequency_columns:
            linker.table_management.compute_tf_table(column.unquote().name)
        prior, kept = prior_weight(model), _kept_weight()
        new_sdf = db_api.register(fresh.to_arrow(), table_name="cmdm_new_records")
        parts = [_predictions_frame(linker.inference.predict_within(new_sdf, threshold_match_weight=kept), prior, engine)]
        if known.height:
            known_sdf = db_api.register(known.to_arrow(), table_name="cmdm_known_records")
            parts.append(_predictions_frame(
                linker.inference.predict_between(known_sdf, new_sdf, threshold_match_weight=kept), prior, engine))
        return pl.concat(parts, how="diagonal_relaxed")


def score_groups(
    features: pl.DataFrame, groups: pl.DataFrame, model: dict[str, Any], matching: MatchingConfig
) -> pl.DataFrame:
    """Every pair of records within each group (``groups``: unique_id, group), whatever its weight.

    Clustering judges a candidate cluster by all its record pairs, including those no blocking rule
    brought together (a record sharing nothing with most of the others). Term frequencies come from
    all records.
    """
    from splink import Linker

    _quiet_splink()
    engine = engine_for(matching)
    settings = scoring_settings(model)
    # In the model's dialect like the rest of the settings: the engine translates them all.
    settings["blocking_rules_to_generate_predictions"] = [{"blocking_rule": "l.__group = r.__group", "sql_dialect": MODEL_DIALECT}]
    settings = engine.settings(settings, list_columns(features))
    with engine.workspace() as db_api:
        everyone = db_api.register(features.to_arrow(), table_name="cmdm_all_records")
        grouped = db_api.register(features.join(groups.rename({"group": "__group"}), on="unique_id").to_arrow(),
                                  table_name="cmdm_records")
        linker = Linker(grouped, settings, log_level=logging.WARNING)
        # Frequencies of every record, not of the grouped ones only.
        tf_linker = Linker(everyone, settings, log_level=logging.WARNING)
        for column in tf_linker._settings_obj._term_frequency_columns:
            table = tf_linker.table_management.compute_tf_table(column.unquote().name)
            linker.table_management.register_term_frequency_lookup(table, column.unquote().name)
        return _predictions_frame(linker.inference.predict(), prior_weight(model), engine)


def model_dir(warehouse_path: Path) -> Path:
    """Where the versioned model files live: ``<warehouse folder>/models/match_model_v<N>.json``."""
    return warehouse_path.parent / "models"


def latest_model(warehouse_path: Path) -> Path | None:
    models = sorted(model_dir(warehouse_path).glob("match_model_v*.json"), key=lambda p: int(p.stem.rsplit("v", 1)[1]))
    return models[-1] if models else None
