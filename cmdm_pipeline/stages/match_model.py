"""The Splink model, compiled from the customer schema; training and scoring on DuckDB.

Settings are plain data built from attribute kinds (names: exact with term frequencies,
swapped given/family names, nicknames, Jaro-Winkler; dates of birth with typo levels;
e-mail and its local part; any shared phone; postcodes and their prefix; addresses;
identifiers). Splink runs in its own in-memory DuckDB connection, never in the warehouse.

Thresholds use *evidence*: the match weight without the prior. Splink's prior falls as
1/N, so a fixed probability threshold admits more false links as data grows; evidence
(the sum of the comparisons' log2 Bayes factors) means the same at any size.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from cmdm_pipeline.config import MatchingConfig
from cmdm_pipeline.schema import CustomerSchema, Kind
from cmdm_pipeline.stages.match_features import PHONES, family_name_attributes, given_name_attributes

MODEL_VERSION_KEY = "cmdm_model_version"  # our keys in the saved model start with cmdm_
log = logging.getLogger(__name__)


def _matched(schema: CustomerSchema, *kinds: Kind) -> list[str]:
    return [n for n, a in schema.attributes.items() if a.kind in kinds and a.use_in_matching]


#: Fewer validated records than this cannot train a model: matching falls back to the
#: deterministic rules alone.
MIN_TRAINING_RECORDS = 1000
MIN_FILLED = 50  # records; below this an attribute has too little data to learn m and u


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


def build_comparisons(schema: CustomerSchema) -> list[Any]:
    """One Splink comparison per matchable attribute (phones pooled into one)."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    comparisons: list[Any] = []
    families = [f for f in family_name_attributes(schema) if schema.attributes[f].use_in_matching]
    for name in _matched(schema, Kind.person_name):
        part = schema.attributes[name].name_part
        levels = [cll.NullLevel(name), cll.ExactMatchLevel(name).configure(tf_adjustment_column=name)]
        if part == "given" and families:
            levels.append(cll.ColumnsReversedLevel(name, families[0], symmetrical=True))
        if part == "given":
            levels.append(
                cll.ArrayIntersectLevel(f"{name}_variants", min_intersection=1).configure(
                    label_for_charts="nickname of the same name"
                )
            )
        levels += [cll.JaroWinklerLevel(name, 0.92), cll.JaroWinklerLevel(name, 0.8), cll.ElseLevel()]
        comparisons.append(cl.CustomComparison(output_column_name=name, comparison_levels=levels))
    for name in _matched(schema, Kind.organisation_name):
        # An organisation's name identifies it; a person's employer does not identify the person.
        organisations = "party_type_l = 'organisation' AND party_type_r = 'organisation'"
        comparisons.append(
            cl.CustomComparison(
                output_column_name=name,
                comparison_levels=[
                    cll.CustomLevel(f"NOT ({organisations}) OR {name}_l IS NULL OR {name}_r IS NULL").configure(
                        is_null_level=True, label_for_charts="not two organisations, or missing"),
                    cll.ExactMatchLevel(name).configure(tf_adjustment_column=name),
                    cll.JaroWinklerLevel(name, 0.92),
                    cll.JaroWinklerLevel(name, 0.8),
                    cll.ElseLevel(),
                ],
            )
        )
    address = _address_comparison(schema)
    if address is not None:
        comparisons.append(address)
    for name in _matched(schema, Kind.date):
        comparisons.append(cl.DateOfBirthComparison(name, input_is_string=False))
    for name in _matched(schema, Kind.email):
        local = f"{name}_local"
        comparisons.append(
            cl.CustomComparison(
                output_column_name=name,
                comparison_levels=[
                    cll.NullLevel(name),
                    cll.ExactMatchLevel(name).configure(tf_adjustment_column=name),
                    cll.ExactMatchLevel(local).configure(label_for_charts="same local part"),
                    cll.JaroWinklerLevel(local, 0.88),
                    cll.ElseLevel(),
                ],
            )
        )
    if _matched(schema, Kind.phone):
        comparisons.append(
            cl.CustomComparison(
                output_column_name=PHONES,
                comparison_levels=[
                    cll.NullLevel(PHONES),
                    cll.ArrayIntersectLevel(PHONES, min_intersection=1).configure(label_for_charts="a phone in common"),
                    cll.ElseLevel(),
                ],
            )
        )
    for name in _matched(schema, Kind.identifier, Kind.country, Kind.category):
        comparisons.append(cl.ExactMatch(name))
    return comparisons


ADDRESS = "address"  # the address comparison's output column
SAME_HOUSE = "same street, house number and postcode"
SAME_HOUSE_OTHER_POSTCODE = "same street and house number, not the same postcode"
SAME_POSTCODE = "same postcode"


def _address_comparison(schema: CustomerSchema) -> Any | None:
    """One comparison for where a record lives: street, postcode and city agree together.

    They are one fact, not three: scoring them separately counts a shared address (a
    household, an office) three times and outweighs different names.
    """
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    street = next(iter(_matched(schema, Kind.address_line)), None)
    postcode = next(iter(_matched(schema, Kind.postcode)), None)
    city = next(iter(_matched(schema, Kind.city)), None)
    parts = [c for c in (street, postcode, city) if c]
    if not parts:
        return None
    missing = " AND ".join(f"({c}_l IS NULL OR {c}_r IS NULL)" for c in parts)
    levels = [cll.CustomLevel(missing).configure(is_null_level=True, label_for_charts="no address to compare")]
    if street:
        numbers_l, numbers_r = f"{street}_numbers_l", f"{street}_numbers_r"
        same_street = f"jaro_winkler_similarity({street}_l, {street}_r) >= 0.9"
        same_number = f"(len({numbers_l}) = 0 OR len({numbers_r}) = 0 OR list_has_any({numbers_l}, {numbers_r}))"
        if postcode:
            levels.append(cll.CustomLevel(f"{same_street} AND {postcode}_l = {postcode}_r AND {same_number}",
                                          label_for_charts=SAME_HOUSE))
        # A mistyped postcode: the same house in the same town still says where the record lives.
        town = [f"{city}_l = {city}_r"] if city else []
        town += [f"substr({postcode}_l, 1, 3) = substr({postcode}_r, 1, 3)"] if postcode else []
        if town:
            levels.append(cll.CustomLevel(
                f"{same_street} AND list_has_any({numbers_l}, {numbers_r}) AND ({' OR '.join(town)})",
                label_for_charts=SAME_HOUSE_OTHER_POSTCODE))
    if postcode:
        levels.append(cll.CustomLevel(f"{postcode}_l = {postcode}_r", label_for_charts=SAME_POSTCODE))
        levels.append(cll.CustomLevel(f"substr({postcode}_l, 1, 3) = substr({postcode}_r, 1, 3)",
                                      label_for_charts="same postcode area"))
    if city:
        levels.append(cll.CustomLevel(f"{city}_l = {city}_r", label_for_charts="same city"))
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(output_column_name=ADDRESS, comparison_levels=levels)


def default_blocking_rules(schema: CustomerSchema) -> list[str]:
    """Equi-join blocking rules from the attributes that exist; each catches a different typo."""
    given = [g for g in given_name_attributes(schema) if schema.attributes[g].use_in_matching]
    family = [f for f in family_name_attributes(schema) if schema.attributes[f].use_in_matching]
    dates = _matched(schema, Kind.date)
    rules: list[str] = []
    rules += [f"l.{e} = r.{e}" for e in _matched(schema, Kind.email)]
    if _matched(schema, Kind.phone):
        rules += [f"l.{PHONES}[1] = r.{PHONES}[1]", f"l.{PHONES}[-1] = r.{PHONES}[-1]"]
    if given and family:
        rules.append(f"l.{given[0]} = r.{given[0]} AND l.{family[0]} = r.{family[0]}")
        # Forms and tills swap first and family name; the comparison has a level for it.
        rules.append(f"l.{given[0]} = r.{family[0]} AND l.{family[0]} = r.{given[0]}")
    for date in dates[:1]:
        if family:
            rules.append(f"l.{date} = r.{date} AND l.{family[0]} = r.{family[0]}")
        if given:
            rules.append(f"l.{date} = r.{date} AND substr(l.{given[0]}, 1, 1) = substr(r.{given[0]}, 1, 1)")
    for postcode in _matched(schema, Kind.postcode)[:1]:
        for date in dates[:1]:
            # Catches swapped names with a typo, and a family name changed by marriage.
            rules.append(f"l.{date} = r.{date} AND l.{postcode} = r.{postcode}")
        if given:
            rules.append(f"l.{postcode} = r.{postcode} AND substr(l.{given[0]}, 1, 1) = substr(r.{given[0]}, 1, 1)")
        if family:
            rules.append(f"l.{postcode} = r.{postcode} AND substr(l.{family[0]}, 1, 2) = substr(r.{family[0]}, 1, 2)")
    cities = _matched(schema, Kind.city)
    if family and cities:
        # Catches nicknames and changed e-mails: same family name in the same town.
        rules.append(f"l.{family[0]} = r.{family[0]} AND l.{cities[0]} = r.{cities[0]}")
    rules += [f"l.{e}_local = r.{e}_local" for e in _matched(schema, Kind.email)[:1]]
    rules += [f"l.{i} = r.{i}" for i in _matched(schema, Kind.identifier)]
    for org in _matched(schema, Kind.organisation_name)[:1]:
        rules.append(f"l.{org} = r.{org} AND l.party_type = 'organisation' AND r.party_type = 'organisation'")
    return rules


def build_settings(schema: CustomerSchema, matching: MatchingConfig) -> dict[str, Any]:
    """Splink settings as a plain dict (DuckDB dialect)."""
    from splink import SettingsCreator

    overrides = {name: {**comparison, "output_column_name": name} for name, comparison in matching.comparisons.items()}
    generated = [c for c in build_comparisons(schema) if c.get_comparison("duckdb").output_column_name not in overrides]
    creator = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=[*generated, *overrides.values()],
        blocking_rules_to_generate_predictions=[
            f"({rule}) AND l.party_type = r.party_type"
            for rule in (matching.blocking_rules or default_blocking_rules(schema))
        ],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
        additional_columns_to_retain=[],
    )
    return creator.get_settings("duckdb").as_dict()


def deterministic_pairs(
    features: pl.DataFrame, schema: CustomerSchema, rules: list[list[str]], max_group: int = 25
) -> pl.DataFrame:
    """Pairs (unique_id_l < unique_id_r) equal on every attribute of a rule, within one party
    type, whose names do not both disagree (a shared family e-mail is not one person).

    A value shared by more than ``max_group`` records (a shop's placeholder e-mail, a test
    account) is not evidence of one customer and links nothing.
    """
    import duckdb

    rules = [rule for rule in rules if rule]
    flags = [
        (pl.len().over(rule) <= max_group).alias(f"__rule_{i}")
        for i, rule in enumerate(rules)
    ]
    features = features.with_columns(flags) if flags else features

    given = given_name_attributes(schema)[:1]
    family = family_name_attributes(schema)[:1]
    guard = ""
    if given and family:
        g, f = given[0], family[0]
        guard = (f" AND NOT (coalesce(jaro_winkler_similarity(l.{g}, r.{g}) < 0.8, false)"
                 f" AND coalesce(jaro_winkler_similarity(l.{f}, r.{f}) < 0.8, false))")
    conditions = [
        " AND ".join([*(f"l.{a} = r.{a}" for a in rule), f"l.__rule_{i}"]) for i, rule in enumerate(rules)
    ]
    if not conditions:
        return pl.DataFrame(schema={"unique_id_l": pl.Int64, "unique_id_r": pl.Int64})
    where = " OR ".join(f"({c})" for c in conditions)
    with duckdb.connect() as con:
        con.register("records", features.to_arrow())
        return con.sql(
            "SELECT DISTINCT l.unique_id AS unique_id_l, r.unique_id AS unique_id_r FROM records l "
            f"JOIN records r ON l.unique_id < r.unique_id AND l.party_type = r.party_type AND ({where}){guard}"
        ).pl()


def _training_rules(schema: CustomerSchema) -> tuple[list[str], list[str]]:
    """(deterministic rules for the prior, blocking rules for EM), from what exists."""
    given = [g for g in given_name_attributes(schema) if schema.attributes[g].use_in_matching]
    family = [f for f in family_name_attributes(schema) if schema.attributes[f].use_in_matching]
    dates = _matched(schema, Kind.date)
    emails = _matched(schema, Kind.email)
    deterministic = [f"l.{e} = r.{e}" for e in emails]
    if given and family and dates:
        deterministic.append(f"l.{given[0]} = r.{given[0]} AND l.{family[0]} = r.{family[0]} AND l.{dates[0]} = r.{dates[0]}")
    em: list[str] = []
    if given and family:
        em.append(f"l.{given[0]} = r.{given[0]} AND l.{family[0]} = r.{family[0]}")
    em += [f"l.{e} = r.{e}" for e in emails[:1]]
    em += [f"l.{d} = r.{d}" for d in dates[:1]]
    if _matched(schema, Kind.phone):
        em.append(f"l.{PHONES}[1] = r.{PHONES}[1]")
    return deterministic, em


@dataclass(frozen=True)
class TrainedModel:
    settings: dict[str, Any]  # the saved Splink model
    seconds: dict[str, float]  # time per training step


@contextmanager
def _scratch_db(memory_limit: str) -> Iterator[Any]:
    """Splink's DuckDB: a scratch file in the temp folder, removed afterwards, so large jobs
    spill to disk instead of holding every blocked pair in memory. Never the warehouse."""
    import duckdb
    from splink import DuckDBAPI

    scratch = tempfile.mkdtemp(prefix="cmdm-splink-")
    con = duckdb.connect(f"{scratch}/splink.duckdb")
    try:
        con.execute(f"SET temp_directory = '{scratch}/spill'")
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET memory_limit = $limit", {"limit": memory_limit})
        yield DuckDBAPI(connection=con)
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def _linker(features: pl.DataFrame, settings: dict[str, Any] | str, memory_limit: str) -> Iterator[Any]:
    from splink import Linker

    with _scratch_db(memory_limit) as db_api:
        records = db_api.register(features.to_arrow(), table_name="cmdm_records")
        yield Linker(records, settings, log_level=logging.WARNING)


def train_model(
    features: pl.DataFrame, schema: CustomerSchema, matching: MatchingConfig, version: int, charts_dir: Path | None = None
) -> TrainedModel:
    """Estimate the prior from deterministic rules, u by random sampling, m by EM; return the model."""
    schema = matchable_schema(schema, features)
    with _linker(features, build_settings(schema, matching), matching.memory_limit) as linker:
        deterministic, em_rules = _training_rules(schema)
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        if deterministic:
            linker.training.estimate_probability_two_random_records_match(deterministic, recall=matching.prior_recall)
        seconds["prior"] = time.perf_counter() - started
        started = time.perf_counter()
        linker.training.estimate_u_using_random_sampling(max_pairs=matching.u_max_pairs, seed=matching.seed)
        seconds["u"] = time.perf_counter() - started
        started = time.perf_counter()
        skipped = []
        for rule in em_rules:
            try:
                linker.training.estimate_parameters_using_expectation_maximisation(rule, max_pairs=matching.em_max_pairs)
            except ValueError as exc:
                # Splink 5 refuses an m of exactly 0 (a level never seen among the pairs this
                # rule blocks, e.g. different phones when e-mails are equal); the other rules
                # still train those comparisons.
                log.warning("EM on %r skipped: %s", rule, str(exc).splitlines()[0])
                skipped.append(rule)
        seconds["em"] = time.perf_counter() - started
        if charts_dir is not None:
            charts_dir.mkdir(parents=True, exist_ok=True)
            # inline=True bundles the chart scripts: the pages open without network access.
            linker.visualisations.match_weights_chart().save(str(charts_dir / "match_weights.html"), inline=True)
            linker.visualisations.m_u_parameters_chart().save(str(charts_dir / "m_u_parameters.html"), inline=True)
        model = linker.misc.save_model_to_json()
        model[MODEL_VERSION_KEY] = version
        model["cmdm_em_rules_skipped"] = skipped
    return TrainedModel(model, seconds)


def prior_weight(model: dict[str, Any]) -> float:
    p = model["probability_two_random_records_match"]
    return math.log2(p / (1 - p))


def _predictions_frame(predictions: Any, prior: float) -> pl.DataFrame:
    """Only ids, scores and comparison levels leave DuckDB (not the retained value columns)."""
    relation = predictions.as_duckdbpyrelation()
    gammas = [c for c in relation.columns if c.startswith("gamma_")]
    columns = ", ".join(
        ["CAST(unique_id_l AS BIGINT) AS unique_id_l", "CAST(unique_id_r AS BIGINT) AS unique_id_r",
         "match_weight", f"match_weight - CAST({float(prior)!r} AS DOUBLE) AS evidence", "match_probability",
         *gammas]
    )
    pairs = relation.query("predictions", f"SELECT {columns} FROM predictions").pl()
    return pairs


def _scoring_settings(model: dict[str, Any]) -> dict[str, Any]:
    settings = {k: v for k, v in model.items() if not k.startswith("cmdm_")}
    # Matching and intermediate columns carry the comparison levels (gamma_*) that explain a pair.
    settings["retain_intermediate_calculation_columns"] = True
    settings["retain_matching_columns"] = True
    return settings


def score_pairs(features: pl.DataFrame, model: dict[str, Any], matching: MatchingConfig) -> pl.DataFrame:
    """Every blocked pair with evidence >= the review band: ids, weights, probability, levels."""
    prior = prior_weight(model)
    with _linker(features, _scoring_settings(model), matching.memory_limit) as linker:
        threshold = matching.review_evidence + prior
        return _predictions_frame(linker.inference.predict(threshold_match_weight=threshold), prior)


def score_new_pairs(
    features: pl.DataFrame, new_ids: pl.Series, model: dict[str, Any], matching: MatchingConfig
) -> pl.DataFrame:
    """Pairs involving new or changed records only: new x existing and new x new.

    Term frequencies come from all records, as in a full scoring run.
    """
    from splink import Linker

    with _scratch_db(matching.memory_limit) as db_api:
        everyone = db_api.register(features.to_arrow(), table_name="cmdm_records")
        fresh = features.filter(pl.col("unique_id").is_in(new_ids.implode()))
        known = features.filter(~pl.col("unique_id").is_in(new_ids.implode()))
        linker = Linker(everyone, _scoring_settings(model), log_level=logging.WARNING)
        for column in linker._settings_obj._term_frequency_columns:
            linker.table_management.compute_tf_table(column.unquote().name)
        prior = prior_weight(model)
        threshold = matching.review_evidence + prior
        new_sdf = db_api.register(fresh.to_arrow(), table_name="cmdm_new_records")
        parts = [_predictions_frame(linker.inference.predict_within(new_sdf, threshold_match_weight=threshold), prior)]
        if known.height:
            known_sdf = db_api.register(known.to_arrow(), table_name="cmdm_known_records")
            parts.append(_predictions_frame(
                linker.inference.predict_between(known_sdf, new_sdf, threshold_match_weight=threshold), prior))
        return pl.concat(parts, how="diagonal_relaxed")


def corroborating_levels(model: dict[str, Any], schema: CustomerSchema) -> dict[str, int]:
    """``gamma_<comparison>`` -> the lowest level that independently confirms an identity.

    Names alone are not enough to merge two people: namesakes are common at scale. A link
    also needs the same e-mail, a phone in common, the same (or one-typo) date of birth, the
    same postcode or house, or the same identifier.
    """
    top = {name: 1 for name in schema.of_kind(Kind.email, Kind.identifier)}
    top.update({name: 2 for name in schema.of_kind(Kind.date)})
    top.update({PHONES: 1, ADDRESS: _placing_levels(model)})
    return _confirming_levels(model, top)


def one_person(model: dict[str, Any], schema: CustomerSchema, columns: Collection[str]) -> pl.Expr:
    """True where a pair (with ``columns``) shares what only one person has, so that a name that differs
    does not make it two people: the same e-mail or identifier; or the same birth date (a date compared
    exactly) together with a phone in common, or at the same address (postcode or house) with no e-mail
    or phone to tell apart.

    A shared phone, address or surname is a household's, not a person's. A birth date alone is not a
    person's either: twins share it and their home, and at scale thousands share a first or a family
    name and a birth date. Twins who also share a phone (a landline) are taken for one person: rarer
    than the one person whose name was typed as another and whose phone is the same.

    Of 39,599 scored pairs of 1M generated records with a name totally different and the same birth
    date but no e-mail or id in common, 398 were one person; these rules confirm 338 of them and 162
    others (twins, mostly), where the birth date alone confirmed all 39,599. Data without e-mails and
    phones (FEBRL: names, address, birth date, a mistyped id) keeps its pairs.
    """
    def at_least(gamma: str, level: int) -> pl.Expr:
        return pl.col(gamma) >= level if gamma in columns else pl.lit(False)

    def unknown(gamma: str) -> pl.Expr:  # missing on a side, or not compared at all
        return pl.col(gamma) == -1 if gamma in columns else pl.lit(True)

    exact = _confirming_levels(model, {name: 1 for name in schema.of_kind(Kind.email, Kind.identifier, Kind.date)})
    dates = {f"gamma_{name}" for name in schema.of_kind(Kind.date)}
    phones = _confirming_levels(model, {PHONES: 1})
    placing = _confirming_levels(model, {ADDRESS: _placing_levels(model)})
    contacts = [f"gamma_{name}" for name in schema.of_kind(Kind.email)] + list(phones)
    same = [at_least(gamma, level) for gamma, level in exact.items() if gamma not in dates]
    for gamma in sorted(dates & exact.keys()):
        born = at_least(gamma, exact[gamma])
        same += [born & at_least(phone, level) for phone, level in phones.items()]
        same += [born & at_least(address, level) & pl.all_horizontal(unknown(c) for c in contacts)
                 for address, level in placing.items()]
    return pl.any_horizontal(same) if same else pl.lit(False)


def organisation_names(model: dict[str, Any], schema: CustomerSchema) -> list[str]:
    """Organisation-name comparisons of the saved model that compare two organisations only (their null
    level holds every other pair): a model saved before they did compared a person's employer too, and
    two employers' names that differ say nothing about the person."""
    names = set(schema.of_kind(Kind.organisation_name))
    return [
        comparison["output_column_name"] for comparison in model.get("comparisons", [])
        if comparison["output_column_name"] in names
        and any(level.get("is_null_level") and "party_type" in level["sql_condition"]
                for level in comparison["comparison_levels"])
    ]


def swapped_levels(model: dict[str, Any], schema: CustomerSchema) -> dict[str, int]:
    """``gamma_<given name>`` -> its level for first and family name swapped, where it has one."""
    families = family_name_attributes(schema)
    levels: dict[str, int] = {}
    for comparison in model.get("comparisons", []):
        if comparison["output_column_name"] not in given_name_attributes(schema):
            continue
        non_null = [lvl for lvl in comparison["comparison_levels"] if not lvl.get("is_null_level", False)]
        for number, level in enumerate(reversed(non_null)):
            if any(f'"{family}_r"' in level["sql_condition"] for family in families):
                levels[f"gamma_{comparison['output_column_name']}"] = number
    return levels


#: Address levels that place a record at one house or postcode (the best ones, at the top), and the
#: label of such a level in models saved before house numbers were compared.
PLACING_LABELS = (SAME_HOUSE, SAME_HOUSE_OTHER_POSTCODE, SAME_POSTCODE, "same street and postcode")


def _placing_levels(model: dict[str, Any]) -> int:
    """How many of the saved model's address levels place a record, read from the model itself, so a
    model trained by an earlier version is judged by its own levels."""
    address = next((c for c in model.get("comparisons", []) if c["output_column_name"] == ADDRESS), None)
    if address is None:
        return 0
    placing = sum(level.get("label_for_charts") in PLACING_LABELS for level in address["comparison_levels"])
    return placing or 2  # an address comparison of the user's own: its two best levels, as before


def _confirming_levels(model: dict[str, Any], top: dict[str, int]) -> dict[str, int]:
    """``top`` counts levels down from the best (1 = exact only); levels are numbered from 0 = else."""
    levels: dict[str, int] = {}
    for comparison in model.get("comparisons", []):
        name = comparison["output_column_name"]
        if name not in top:
            continue
        non_null = [lvl for lvl in comparison["comparison_levels"] if not lvl.get("is_null_level", False)]
        levels[f"gamma_{name}"] = len(non_null) - top[name]
    return levels
