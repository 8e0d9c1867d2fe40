"""Plain Splink: what a Splink user following Splink's own tutorials would do with the same records.

Independent of cmdm_pipeline's matching model: the validated records (decrypted), text lower-cased,
one comparison per matched attribute from Splink's comparison library by the attribute's kind,
blocking on pairs of attributes, the prior from deterministic rules, u by random sampling, m by EM
on two or three blocking rules; then pairs above probability 0.5, clustered by connected components
at a sweep of thresholds. The benchmark scores each clustering against the truth and reports the best:
the best a Splink user could get by hand, with the truth to tune the threshold against.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from cmdm_pipeline.schema import CustomerSchema, Kind

if TYPE_CHECKING:
    from splink import Linker
    from splink.internals.comparison_creator import ComparisonCreator

KEY = ["source_system", "source_record_id"]
THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999)
Rule = tuple[str, ...]


@dataclass(frozen=True)
class PlainSettings:
    """Comparisons by column, and blocking rules as the columns that must be equal."""

    comparisons: dict[str, ComparisonCreator]
    blocking_rules: list[Rule]
    deterministic_rules: list[Rule]
    training_rules: list[Rule]


@dataclass
class PlainRun:
    """Each threshold's clusters (``source_system``, ``source_record_id``, ``cluster_id``) and what was skipped."""

    clusters: list[tuple[float, pl.DataFrame]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def compared_attributes(schema: CustomerSchema) -> list[str]:
    return [name for name, attribute in schema.attributes.items() if attribute.use_in_matching]


def comparison(name: str, kind: Kind) -> ComparisonCreator:
    """The comparison library's comparison a tutorial would pick for an attribute of ``kind``."""
    import splink.comparison_library as cl

    if kind is Kind.person_name:
        return cl.NameComparison(name).configure(term_frequency_adjustments=True)
    if kind is Kind.date:
        return cl.DateOfBirthComparison(name, input_is_string=False)
    if kind is Kind.email:
        return cl.EmailComparison(name)
    if kind in (Kind.postcode, Kind.city, Kind.category, Kind.region, Kind.country):
        # PostcodeComparison's sector/district/area levels read UK codes only; elsewhere it is an exact match
        # without term frequencies.
        return cl.ExactMatch(name).configure(term_frequency_adjustments=True)
    if kind is Kind.address_line:
        return cl.LevenshteinAtThresholds(name, 2)
    if kind in (Kind.organisation_name, Kind.text):
        return cl.JaroWinklerAtThresholds(name)
    return cl.ExactMatch(name)  # phones, identifiers, numbers, flags


def plain_settings(schema: CustomerSchema, columns: Sequence[str]) -> PlainSettings:
    """Settings for the matched attributes among ``columns`` (those holding any value)."""
    present = [n for n in compared_attributes(schema) if n in columns]
    attributes = schema.attributes

    def first(kind: Kind, name_part: str | None = None) -> str | None:
        return next((n for n in present if attributes[n].kind is kind
                     and (name_part is None or attributes[n].name_part == name_part)), None)

    def every(kind: Kind) -> list[Rule]:
        return [(n,) for n in present if attributes[n].kind is kind]

    given, family = first(Kind.person_name, "given"), first(Kind.person_name, "family")
    date, postcode, city = first(Kind.date), first(Kind.postcode), first(Kind.city)
    organisation, emails = first(Kind.organisation_name), every(Kind.email)

    def only_present(rules: Sequence[tuple[str | None, ...]]) -> list[Rule]:
        return [tuple(n for n in rule if n) for rule in rules if all(rule)]

    blocking = only_present([
        (given, family), (family, date), (given, date), (postcode, given), *emails, *every(Kind.phone),
        *every(Kind.identifier), (city, family), (organisation, postcode),
    ])
    deterministic = only_present([(given, family, date), *emails]) or only_present([(given, family)])
    training = only_present([(given, family), (date,), emails[0] if emails else (postcode,)])
    return PlainSettings({n: comparison(n, attributes[n].kind) for n in present}, blocking, deterministic, training)


def splink_records(records: pl.DataFrame, schema: CustomerSchema) -> pl.DataFrame:
    """Records as a Splink user would load them: ``unique_id``, the key, compared columns, text lower-cased."""
    compared = [n for n in compared_attributes(schema) if n in records.columns]
    return records.sort(KEY).select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("unique_id"), *KEY,
        *[pl.col(n).str.to_lowercase() if records.schema[n] == pl.String else pl.col(n) for n in compared],
    )


def holding_values(frame: pl.DataFrame, columns: Sequence[str]) -> list[str]:
    counts = frame.select(pl.col(columns).count()).row(0) if columns else ()
    return [c for c, n in zip(columns, counts, strict=True) if n > 0]


def u_pairs(records: int) -> float:
    """Pairs sampled for u: the tutorials' 1e6 on small data, up to 5e6 at a million records."""
    return min(5e6, max(1e6, 5.0 * records))


def run_plain_splink(records: pl.DataFrame, schema: CustomerSchema, seed: int, scratch: Path,
                     thresholds: Sequence[float] = THRESHOLDS) -> PlainRun:
    """Train, predict above the lowest threshold and cluster at each of ``thresholds``."""
    import duckdb
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    started = time.perf_counter()
    frame = splink_records(records, schema)
    settings = plain_settings(schema, holding_values(frame, [c for c in frame.columns if c not in ("unique_id", *KEY)]))
    run = PlainRun()
    if not settings.blocking_rules:
        run.skipped.append("no attribute to block on")
        return run
    scratch.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET temp_directory = $dir", {"dir": str(scratch)})
    try:
        db_api = DuckDBAPI(connection=con)
        table = frame.select("unique_id", *settings.comparisons)
        linker = Linker(
            db_api.register(table.to_arrow(), table_name="plain_records"),
            SettingsCreator(
                link_type="dedupe_only",
                comparisons=list(settings.comparisons.values()),
                blocking_rules_to_generate_predictions=[block_on(*rule) for rule in settings.blocking_rules],
                retain_intermediate_calculation_columns=False,
                retain_matching_columns=False,
            ),
            log_level=logging.WARNING,
        )
        train(linker, settings, frame.height, seed, run.skipped)
        predictions = linker.inference.predict(threshold_match_probability=min(thresholds))
        keys = frame.select("unique_id", *KEY)
        for threshold in thresholds:
            clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
                predictions, threshold_match_probability=threshold)
            assigned = con.sql(f'SELECT unique_id, cluster_id FROM "{clusters.physical_name}"').pl()  # noqa: S608 - identifiers are constants or quoted, values bound
            clusters.drop_table_from_database_and_remove_from_cache()
            run.clusters.append((threshold, assigned.join(keys, on="unique_id").select(*KEY, "cluster_id")))
    finally:
        con.close()
    run.seconds = time.perf_counter() - started
    return run


def train(linker: Linker, settings: PlainSettings, records: int, seed: int, skipped: list[str]) -> None:
    """The tutorials' training; a step that fails (e.g. a rule no pair meets) is skipped and noted."""
    from splink import block_on

    try:
        linker.training.estimate_probability_two_random_records_match(
            [block_on(*rule) for rule in settings.deterministic_rules], recall=0.7)
    except Exception as exc:  # noqa: BLE001 - Splink raises several kinds; the default prior stays
        skipped.append(f"prior from {settings.deterministic_rules}: {exc}")
    linker.training.estimate_u_using_random_sampling(max_pairs=u_pairs(records), seed=seed)
    for rule in settings.training_rules:
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(block_on(*rule), max_pairs=5e6)
        except Exception as exc:  # noqa: BLE001 - as the tutorials do, go on with the other rules
            skipped.append(f"EM on {' + '.join(rule)}: {exc}")
