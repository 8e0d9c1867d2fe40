"""Resolve: one customer record in, the master customers it may be, with the model's evidence.

The matching core of the resolve API (the HTTP layer is built on it). :meth:`ResolveIndex.build` takes the
validated records with their ``master_id`` and the saved Splink model once; :meth:`ResolveIndex.resolve`
then answers per record, without a batch run: the record standardised as the pipeline would
(:mod:`resolve_input`), the issues its rules find, and the masters whose records the model's blocking
rules pair it with, scored as the batch scores each pair (:mod:`resolve_scoring`): the same comparison
levels, Bayes factors and evidence as ``match_pairs`` for the same two records.

A candidate's probability and ``linked`` use the prior and link threshold of the batch run (its
``match_summary`` row: ``match_prior``, ``link_threshold``), passed to :meth:`ResolveIndex.build`;
without them, the model's own prior and a threshold of 0.5. ``linked`` says the pair is above the
threshold the batch links pairs at; whether the batch would also *merge* the record into that master
depends on its other records (clustering), which resolve does not redo. Candidates are pairs the batch
would keep (probability at least ``MIN_KEPT_PROBABILITY`` under the model's prior).

Cost per request is proportional to the candidates, not the records. Measured at 1M records on 2 cores
shared with other jobs (``python -m cmdm_pipeline.web.resolve_bench --records 1000000``): p50 ~32 ms,
p95 ~48 ms, of which the pipeline's own standardisation of the one record is about 40 %, its matching
features a tenth, the scoring (look-ups, two small DuckDB statements, weights) a quarter. On one-row
frames each Polars query costs ~0.1 ms whatever its work, which is why the stages keep their queries few.
Building the index for 1M records takes ~8-19 s and ~0.7 GB.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.schema import CustomerSchema, Kind
from cmdm_pipeline.stages.match_features import KEY, PHONES, feature_inputs, matching_frame
from cmdm_pipeline.stages.match_model import MIN_KEPT_PROBABILITY, prior_weight
from cmdm_pipeline.web.resolve_input import ReadRecord, ResolveInputError, read_record
from cmdm_pipeline.web.resolve_scoring import Scorer, model_columns

__all__ = ["Candidate", "Resolution", "ResolveIndex", "ResolveInputError"]

#: No threshold given: the Bayes decision for one pair (the batch's own when it has no pairs to learn from).
DEFAULT_LINK_THRESHOLD = 0.5
#: Pairs the batch would not keep (below this probability under the model's prior) are no candidates.
_KEPT_LOG2_ODDS = math.log2(MIN_KEPT_PROBABILITY / (1 - MIN_KEPT_PROBABILITY))


@dataclass(frozen=True)
class Candidate:
    master_id: str
    match_probability: float
    match_weight: float
    linked: bool  # above the link threshold the batch links pairs at
    record: str  # "source_system:source_record_id" of the master's best-matching record
    comparisons: list[dict[str, Any]]  # per comparison, in the model's order: name, level, gamma, bayes_factor, log2


@dataclass(frozen=True)
class Resolution:
    standardised: dict[str, Any]  # party_type, record_type and every schema attribute, as the pipeline has them
    issues: list[dict[str, str]]  # rule, attribute, severity, reason
    candidates: list[Candidate]  # best first, at most `limit`, one per master


def _probability(log2_odds: float) -> float:
    """As the batch computes it, without overflow at any weight (2 ** 2000 overflows, 2 ** -2000 does not)."""
    if log2_odds >= 0:
        return 1 / (1 + 2.0 ** -log2_odds)
    return 2.0 ** log2_odds / (1 + 2.0 ** log2_odds)


def _log2_odds(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log2(p / (1 - p))


class ResolveIndex:
    """Everything a resolve needs, built once from all records: their matching features and term
    frequencies, a look-up per blocking rule, the model's compiled comparisons, each record's master.
    Thread-safe: a server may resolve from several threads at once."""

    def __init__(self, config: ProjectConfig, matched: CustomerSchema, masters: pl.DataFrame, scorer: Scorer,
                 prior: float, link_threshold: float, model_prior_weight: float) -> None:
        self._config = config
        self._matched = matched
        self._masters = masters  # master_id and record, one row per record in unique_id order
        self._scorer = scorer
        self._prior = _log2_odds(prior)
        self._threshold = _log2_odds(link_threshold)
        self._model_prior_weight = model_prior_weight
        self.matching_attributes = list(matched.attributes)

    @classmethod
    def build(cls, records: pl.DataFrame, config: ProjectConfig, model: dict[str, Any], *,
              prior: float | None = None, link_threshold: float | None = None) -> ResolveIndex:
        """``records``: one row per validated record (``validated_customers``' columns, plaintext) with its
        ``master_id`` (null: compared, never a candidate). ``model``: the saved match model. ``prior``,
        ``link_threshold``: the batch run's ``match_summary.match_prior`` and ``link_threshold`` (defaults:
        the model's prior, 0.5)."""
        matched = matched_schema(config.customer_schema, model)
        missing = [c for c in [*feature_inputs(matched), "master_id"] if c not in records.columns]
        if missing:
            raise ValueError(f"records lack column(s) {missing}")
        if records.height == 0:
            raise ValueError("no records to resolve against")
        features = matching_frame(records.select(feature_inputs(matched)), matched)
        masters = records.select("master_id", pl.concat_str(KEY, separator=":").alias("record"))  # row = unique_id
        return cls(config, matched, masters, Scorer(features, model),
                   model["probability_two_random_records_match"] if prior is None else prior,
                   DEFAULT_LINK_THRESHOLD if link_threshold is None else link_threshold, prior_weight(model))

    @property
    def nbytes(self) -> int:
        """Memory the index holds: the records' features and term frequencies, look-ups, masters."""
        return self._scorer.nbytes + int(self._masters.estimated_size())

    def resolve(self, record: Mapping[str, Any], limit: int = 5) -> Resolution:
        """``record`` standardised, its issues, and up to ``limit`` candidate masters, best first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ResolveInputError("limit", "limit: must be a whole number of at least 1")
        read, scored = self._read_and_score(record)
        # The batch keeps a pair from this probability under the model's prior; below it, nothing can link.
        kept = (pl.col("evidence") + self._model_prior_weight >= _KEPT_LOG2_ODDS) & pl.col("master_id").is_not_null()
        best = (scored.filter(kept).sort(["evidence", "record"], descending=[True, False])
                .unique("master_id", keep="first", maintain_order=True).head(limit))
        return Resolution(read.standardised, read.issues, [self._candidate(row) for row in best.iter_rows(named=True)])

    def scores(self, record: Mapping[str, Any]) -> pl.DataFrame:
        """Every record the model's blocking rules pair with ``record``, however unlikely a match, scored as
        the batch scores the pair: record ("source_system:source_record_id"), master_id, evidence (log2 Bayes
        factors summed, as ``match_pairs.evidence``), and per comparison gamma_<name> and mw_<name>."""
        return self._read_and_score(record)[1].drop("unique_id")

    def _read_and_score(self, record: Mapping[str, Any]) -> tuple[ReadRecord, pl.DataFrame]:
        read = read_record(record, self._config, self.matching_attributes)
        scored = self._scorer.score(matching_frame(read.frame, self._matched))
        # unique_id is the row of `records`: a gather, not a join over all of them.
        masters = self._masters[scored["unique_id"].to_numpy()]
        return read, pl.concat([masters, scored], how="horizontal")

    def _candidate(self, row: dict[str, Any]) -> Candidate:
        weight = row["evidence"] + self._prior
        comparisons = []
        for comparison in self._scorer.comparisons:  # a handful per candidate, at most `limit` candidates
            gamma = int(row[f"gamma_{comparison.name}"])
            log2 = float(row[f"mw_{comparison.name}"])
            comparisons.append({"name": comparison.name, "level": comparison.levels[gamma].label, "gamma": gamma,
                                "bayes_factor": 2.0 ** log2, "log2_bayes_factor": log2})
        return Candidate(master_id=row["master_id"], match_probability=_probability(weight),
                         match_weight=float(weight), linked=weight - self._threshold > 0, record=row["record"],
                         comparisons=comparisons)


def matched_schema(schema: CustomerSchema, model: dict[str, Any]) -> CustomerSchema:
    """The schema with only the attributes whose features the model reads (phones pooled from every phone
    attribute): matching features of the others would be computed for nothing, per request and per record."""
    columns = model_columns(model)
    used = {name: attribute for name, attribute in schema.attributes.items()
            if columns & {name, f"{name}_variants", f"{name}_numbers"} or (attribute.kind is Kind.phone and PHONES in columns)}
    return schema.model_copy(update={"attributes": used})
