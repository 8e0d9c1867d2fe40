"""The Splink model's settings, compiled from the customer schema: comparisons, blocking and training rules.

Every attribute the schema marks for matching becomes one comparison suited to its kind, with
levels whose strength Splink learns per data set (m by EM, u by sampling): names exact (with
term frequencies), swapped, nicknames, typos and initials; dates of birth exact, one typo, day
and month swapped, near; e-mail exact; identifiers exact or one typo; any other kind exact (with
term frequencies where values repeat) or near. Where a record lives and how it is reached is one
fact for a household: street, postcode, city and phones form one comparison, so a shared home
counts once against names that differ. Settings are plain data in Splink's DuckDB dialect, the model
file's dialect whatever the engine: the Spark engine translates them when it runs them
(:mod:`cmdm_pipeline.engines.spark_sql`), so a model trained on either engine scores on both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cmdm_pipeline.config import MatchingConfig
from cmdm_pipeline.engines import MODEL_DIALECT
from cmdm_pipeline.schema import CustomerSchema, Kind
from cmdm_pipeline.stages.match_features import PHONES, family_name_attributes, given_name_attributes

if TYPE_CHECKING:
    from splink.internals.comparison_level_creator import ComparisonLevelCreator

    #: What Splink's CustomComparison takes as levels.
    Levels = list[ComparisonLevelCreator | dict[str, Any]]

HOME = "home"  # the comparison of address and phones
ADDRESS = "address"  # the address comparison where no phones are compared
SAME_HOUSE = "same street, house number and postcode"
SAME_HOUSE_OTHER_POSTCODE = "same street and house number, not the same postcode"
SAME_POSTCODE = "same postcode"
#: Address levels that place a record at one house or postcode.
PLACING_LABELS = (SAME_HOUSE, SAME_HOUSE_OTHER_POSTCODE, SAME_POSTCODE)


def matched(schema: CustomerSchema, *kinds: Kind) -> list[str]:
    """The attributes of these kinds that take part in matching, in declaration order."""
    return [n for n, a in schema.attributes.items() if a.kind in kinds and a.use_in_matching]


def _address_parts(schema: CustomerSchema) -> tuple[str | None, str | None, str | None]:
    """(street, postcode, city) of the address comparison: the first matched attribute of each kind."""
    first = lambda kind: next(iter(matched(schema, kind)), None)  # noqa: E731
    return first(Kind.address_line), first(Kind.postcode), first(Kind.city)


def _address_levels(schema: CustomerSchema) -> list[Any]:
    """Levels of where a record lives, best first, without the null and else levels."""
    import splink.comparison_level_library as cll

    street, postcode, city = _address_parts(schema)
    levels = []
    if street:
        numbers_l, numbers_r = f"{street}_numbers_l", f"{street}_numbers_r"
        same_street = f"jaro_winkler_similarity({street}_l, {street}_r) >= 0.9"
        # Neighbours share the street, not the house number.
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
    return levels


def _home_comparison(schema: CustomerSchema) -> Any | None:
    """Street, postcode, city and phones as one comparison.

    They are one fact, not four: scoring them apart counts a shared home (a household, an office)
    several times and outweighs given names and birth dates that differ.
    """
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    parts = [c for c in _address_parts(schema) if c]
    phones = bool(matched(schema, Kind.phone))
    if not parts and not phones:
        return None
    no_address = " AND ".join(f"({c}_l IS NULL OR {c}_r IS NULL)" for c in parts) or "TRUE"
    no_phone = f"({PHONES}_l IS NULL OR {PHONES}_r IS NULL)" if phones else "TRUE"
    address = [lvl.create_level_dict(MODEL_DIALECT) for lvl in _address_levels(schema)]
    levels: Levels = [cll.CustomLevel(f"{no_address} AND {no_phone}").configure(
        is_null_level=True, label_for_charts="no address or phone to compare")]
    if phones:
        phone = f"list_has_any({PHONES}_l, {PHONES}_r)"
        placing = [lvl["sql_condition"] for lvl in address if lvl["label_for_charts"] in PLACING_LABELS]
        if placing:
            where = " OR ".join(f"({sql})" for sql in placing)
            levels.append(cll.CustomLevel(f"{phone} AND ({where})", label_for_charts="same home and a phone in common"))
        levels.append(cll.CustomLevel(f"coalesce({phone}, false)", label_for_charts="a phone in common"))
    # An attribute missing on one side makes its condition null: such a level does not hold.
    levels += [cll.CustomLevel(f"coalesce({lvl['sql_condition']}, false)", label_for_charts=lvl["label_for_charts"])
               for lvl in address]
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(output_column_name=HOME if phones else ADDRESS, comparison_levels=levels)


def _name_comparison(schema: CustomerSchema, name: str) -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    part = schema.attributes[name].name_part
    families = family_name_attributes(schema)
    levels: Levels = [cll.NullLevel(name), cll.ExactMatchLevel(name).configure(tf_adjustment_column=name)]
    if part == "given":
        if families and schema.attributes[families[0]].use_in_matching:
            levels.append(cll.ColumnsReversedLevel(name, families[0], symmetrical=True))
        levels.append(cll.ArrayIntersectLevel(f"{name}_variants", min_intersection=1).configure(
            label_for_charts="nickname of the same name"))
    levels += [cll.JaroWinklerLevel(name, 0.92), cll.JaroWinklerLevel(name, 0.8)]
    if part == "given":
        levels.append(cll.CustomLevel(
            f"(length({name}_l) = 1 OR length({name}_r) = 1) AND substr({name}_l, 1, 1) = substr({name}_r, 1, 1)",
            label_for_charts="an initial of the same name"))
    levels.append(cll.ElseLevel())
    return cl.CustomComparison(output_column_name=name, comparison_levels=levels)


def _organisation_comparison(name: str) -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    # An organisation's name identifies it; a person's employer does not identify the person.
    organisations = "party_type_l = 'organisation' AND party_type_r = 'organisation'"
    return cl.CustomComparison(output_column_name=name, comparison_levels=[
        cll.CustomLevel(f"NOT ({organisations}) OR {name}_l IS NULL OR {name}_r IS NULL").configure(
            is_null_level=True, label_for_charts="not two organisations, or missing"),
        cll.ExactMatchLevel(name).configure(tf_adjustment_column=name),
        cll.JaroWinklerLevel(name, 0.92), cll.JaroWinklerLevel(name, 0.8), cll.ElseLevel()])


def _date_comparison(name: str) -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    return cl.CustomComparison(output_column_name=name, comparison_levels=[
        cll.NullLevel(name), cll.ExactMatchLevel(name),
        cll.CustomLevel(f"damerau_levenshtein(CAST({name}_l AS VARCHAR), CAST({name}_r AS VARCHAR)) <= 1",
                        label_for_charts="one typo"),
        # Forms and clerks write day and month either way round.
        cll.CustomLevel(f"year({name}_l) = year({name}_r) AND month({name}_l) = day({name}_r) "
                        f"AND day({name}_l) = month({name}_r)", label_for_charts="day and month swapped"),
        cll.AbsoluteDateDifferenceLevel(name, input_is_string=False, threshold=1, metric="month"),
        cll.AbsoluteDateDifferenceLevel(name, input_is_string=False, threshold=1, metric="year"),
        cll.AbsoluteDateDifferenceLevel(name, input_is_string=False, threshold=10, metric="year"),
        cll.ElseLevel()])


def _exact_comparison(name: str, *near: Any, frequencies: bool = True) -> Any:
    """Null, exact (with term frequencies: a common value says less than a rare one), ``near`` levels, else."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    exact: ComparisonLevelCreator = cll.ExactMatchLevel(name)
    if frequencies:
        exact = exact.configure(tf_adjustment_column=name)
    return cl.CustomComparison(output_column_name=name,
                               comparison_levels=[cll.NullLevel(name), exact, *near, cll.ElseLevel()])


def build_comparisons(schema: CustomerSchema) -> list[Any]:
    """One Splink comparison per matched attribute (address parts and phones pooled into one)."""
    import splink.comparison_level_library as cll

    comparisons: list[Any] = [_name_comparison(schema, n) for n in matched(schema, Kind.person_name)]
    comparisons += [_organisation_comparison(n) for n in matched(schema, Kind.organisation_name)]
    home = _home_comparison(schema)
    comparisons += [home] if home is not None else []
    comparisons += [_date_comparison(n) for n in matched(schema, Kind.date)]
    # An e-mail address is one person's: how often a value repeats says nothing about who holds it.
    comparisons += [_exact_comparison(n, frequencies=False) for n in matched(schema, Kind.email)]
    comparisons += [_exact_comparison(n, cll.DamerauLevenshteinLevel(n, 1), frequencies=False)
                    for n in matched(schema, Kind.identifier)]
    in_home = set(_address_parts(schema))
    for name in matched(schema, Kind.text, Kind.city, Kind.address_line, Kind.region):
        if name not in in_home:  # e.g. a place of birth, an occupation
            comparisons.append(_exact_comparison(name, cll.JaroWinklerLevel(name, 0.9)))
    for name in matched(schema, Kind.category, Kind.country, Kind.postcode, Kind.number, Kind.boolean):
        if name not in in_home:
            comparisons.append(_exact_comparison(name))
    return comparisons


def default_blocking_rules(schema: CustomerSchema) -> list[str]:
    """Equi-join blocking rules from the attributes that exist; each catches a different kind of error."""
    given = [g for g in given_name_attributes(schema) if schema.attributes[g].use_in_matching]
    family = [f for f in family_name_attributes(schema) if schema.attributes[f].use_in_matching]
    dates = matched(schema, Kind.date)
    rules: list[str] = [f"l.{e} = r.{e}" for e in matched(schema, Kind.email)]
    if matched(schema, Kind.phone):
        rules += [f"l.{PHONES}[1] = r.{PHONES}[1]", f"l.{PHONES}[-1] = r.{PHONES}[-1]"]
    if given and family:
        g, f = given[0], family[0]
        rules.append(f"l.{g} = r.{g} AND l.{f} = r.{f}")
        # Forms and tills swap first and family name; the comparison has a level for it.
        rules.append(f"l.{g} = r.{f} AND l.{f} = r.{g}")
        # A typo late in either name.
        rules.append(f"substr(l.{g}, 1, 3) = substr(r.{g}, 1, 3) AND substr(l.{f}, 1, 3) = substr(r.{f}, 1, 3)")
    for date in dates[:1]:
        if family:
            rules.append(f"l.{date} = r.{date} AND l.{family[0]} = r.{family[0]}")
        if given:
            rules.append(f"l.{date} = r.{date} AND substr(l.{given[0]}, 1, 1) = substr(r.{given[0]}, 1, 1)")
    for postcode in matched(schema, Kind.postcode)[:1]:
        for date in dates[:1]:
            # Swapped names with a typo, and a family name changed by marriage.
            rules.append(f"l.{date} = r.{date} AND l.{postcode} = r.{postcode}")
        if given:
            rules.append(f"l.{postcode} = r.{postcode} AND substr(l.{given[0]}, 1, 1) = substr(r.{given[0]}, 1, 1)")
        if family:
            rules.append(f"l.{postcode} = r.{postcode} AND substr(l.{family[0]}, 1, 2) = substr(r.{family[0]}, 1, 2)")
    street, _, city = _address_parts(schema)
    if family and city:
        # Nicknames and changed e-mails: the same family name in the same town.
        rules.append(f"l.{family[0]} = r.{family[0]} AND l.{city} = r.{city}")
    rules += [f"l.{i} = r.{i}" for i in matched(schema, Kind.identifier)]
    for extra in matched(schema, Kind.text, Kind.city, Kind.category):
        if extra not in (street, city) and family:
            rules.append(f"l.{extra} = r.{extra} AND l.{family[0]} = r.{family[0]}")
    for org in matched(schema, Kind.organisation_name)[:1]:
        rules.append(f"l.{org} = r.{org} AND l.party_type = 'organisation' AND r.party_type = 'organisation'")
    return list(dict.fromkeys(rules))


def training_rules(schema: CustomerSchema) -> tuple[list[str], list[str]]:
    """(deterministic rules for a first prior, blocking rules for EM), from what exists.

    No EM session blocks on phones or addresses: the pairs they gather are households as often as
    one person, and EM would learn a household's likeness as a match's.
    """
    given = [g for g in given_name_attributes(schema) if schema.attributes[g].use_in_matching]
    family = [f for f in family_name_attributes(schema) if schema.attributes[f].use_in_matching]
    dates = matched(schema, Kind.date)
    emails = matched(schema, Kind.email)
    deterministic = [f"l.{e} = r.{e}" for e in emails]
    deterministic += [f"l.{i} = r.{i}" for i in matched(schema, Kind.identifier)]
    if given and family and dates:
        deterministic.append(
            f"l.{given[0]} = r.{given[0]} AND l.{family[0]} = r.{family[0]} AND l.{dates[0]} = r.{dates[0]}")
    em: list[str] = []
    if given and family:
        em.append(f"l.{given[0]} = r.{given[0]} AND l.{family[0]} = r.{family[0]}")
    em += [f"l.{d} = r.{d}" for d in dates[:1]]
    em += [f"l.{e} = r.{e}" for e in emails[:1]]
    if not em:  # no names, dates or e-mails: train on what the predictions block on, a household's excepted
        em = [r for r in default_blocking_rules(schema) if PHONES not in r and not any(
            f"l.{c} " in r for c in _address_parts(schema) if c)][:2]
    return deterministic, em


def build_settings(schema: CustomerSchema, matching: MatchingConfig) -> dict[str, Any]:
    """Splink settings as a plain dict, in the model's dialect (DuckDB's, whatever the engine)."""
    from splink import SettingsCreator

    overrides = {name: {**comparison, "output_column_name": name} for name, comparison in matching.comparisons.items()}
    generated = [c for c in build_comparisons(schema) if c.get_comparison(MODEL_DIALECT).output_column_name not in overrides]
    creator = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=[*generated, *overrides.values()],
        # Splink takes SQL strings here too (to_blocking_rule_creator wraps them); its annotation omits str.
        blocking_rules_to_generate_predictions=[
            f"({rule}) AND l.party_type = r.party_type"  # type: ignore[misc]
            for rule in (matching.blocking_rules or default_blocking_rules(schema))
        ],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
        additional_columns_to_retain=[],
    )
    return creator.get_settings(MODEL_DIALECT).as_dict()
