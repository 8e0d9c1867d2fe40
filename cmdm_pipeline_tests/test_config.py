"""The config loader: the shipped cmdm.yaml loads, and every error names file, key path and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmdm_pipeline.config import ConfigError, load_config
from cmdm_pipeline.schema import Kind, Severity
from cmdm_pipeline_tests.conftest import REPO_ROOT, SCHEMA, csv_source


def test_shipped_config_declares_the_canonical_schema() -> None:
    config = load_config(REPO_ROOT / "cmdm.yaml")
    attributes = config.customer_schema.attributes
    for name in ("first_name", "last_name", "organisation_name", "date_of_birth", "email", "phone",
                 "address_line_1", "city", "region", "postcode", "country", "national_id", "tax_id", "gender"):
        assert name in attributes
    assert {s.name for s in config.sources} == {"crm", "erp", "shop", "pos", "survey"}
    assert attributes["email"].pii and not attributes["country"].pii
    assert config.customer_schema.of_kind(Kind.phone) == ["phone", "mobile_phone"]
    assert config.warehouse_path == REPO_ROOT / "data/warehouse/cmdm.duckdb"


def test_config_path_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, make_project) -> None:
    config = make_project()
    monkeypatch.setenv("CMDM_CONFIG", str(config.base_dir / "cmdm.yaml"))
    assert load_config().base_dir == config.base_dir


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cmdm.yaml"
    path.write_text("schema: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cmdm\.yaml: not valid YAML"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "cmdm.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(path)


@pytest.mark.parametrize(
    ("change", "where", "expected"),
    [
        (lambda d: d["schema"]["attributes"]["email"].update(kind="mail"), "schema.attributes.email.kind", "Input should be"),
        (lambda d: d["schema"]["attributes"]["email"].update(rules=[{"required": True, "pattern": "x"}]),
         "schema.attributes.email.rules[0]", "exactly one of"),
        (lambda d: d["schema"]["attributes"]["email"].update(rules=[{"pattern": "("}]),
         "schema.attributes.email.rules[0].pattern", "does not compile"),
        (lambda d: d["schema"]["attributes"]["email"].update(rules=[{"required": True, "severity": "maybe"}]),
         "schema.attributes.email.rules[0].severity", "'reject' or 'warn'"),
        (lambda d: d["schema"]["attributes"]["nps_score"].update(rules=[{"range": {}}]),
         "schema.attributes.nps_score.rules[0].range", "needs `min`, `max` or both"),
        (lambda d: d["schema"]["attributes"].update(source_system={"kind": "text"}),
         "schema.attributes", "reserved"),
        (lambda d: d["schema"]["attributes"].update(Bad_Name={"kind": "text"}), "schema.attributes", "lower_snake_case"),
        (lambda d: d["schema"]["rules"].append({"expression": "1=1"}), "schema", "needs a `name`"),
        (lambda d: d["sources"][0]["columns"].update(Extra="no_such_attribute"), "(top level)", "unknown attribute 'no_such_attribute'"),
        (lambda d: d["sources"][0].update(kind="excel"), "sources[0](crm).kind", "Input should be"),
        (lambda d: d["sources"][0].pop("path"), "sources[0](crm)", "needs `path`"),
        (lambda d: d["sources"][0].update(trust_rank=0), "sources[0](crm).trust_rank", "greater than or equal to 1"),
        (lambda d: d["sources"][0].update(encoding="klingon"), "sources[0](crm).encoding", "unknown text encoding"),
        (lambda d: d["sources"][0].update(default_country="XX"), "sources[0](crm).default_country", "alpha-2"),
        (lambda d: d["sources"].append(dict(d["sources"][0])), "(top level)", "source names must be unique"),
        (lambda d: d.update(surprise=1), "surprise", "Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_key_path(tmp_path: Path, change, where: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    import copy

    import yaml

    document = {"schema": copy.deepcopy(SCHEMA), "sources": [csv_source()]}
    change(document)
    path = tmp_path / "cmdm.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"at {where}:" in message, message
    assert expected in message, message


def test_rules_keep_declared_severity(make_project) -> None:
    schema = {"attributes": {"email": {"kind": "email", "rules": [{"required": True, "severity": "warn"}]}}}
    config = make_project(schema=schema, sources=[csv_source(columns={"Email": "email"})])
    rule = config.customer_schema.attributes["email"].rules[0]
    assert rule.type == "required" and rule.severity is Severity.warn


def test_database_url_reads_environment_variables(monkeypatch: pytest.MonkeyPatch, make_project) -> None:
    source = csv_source(kind="postgresql", path=None, url="postgresql://${PGUSER_X}@127.0.0.1/test", table="t")
    source.pop("path")
    config = make_project(sources=[source])
    monkeypatch.setenv("PGUSER_X", "alice")
    assert config.sources[0].resolved_url() == "postgresql://alice@127.0.0.1/test"
    monkeypatch.delenv("PGUSER_X")
    with pytest.raises(ConfigError, match="PGUSER_X used in `url` is not set"):
        config.sources[0].resolved_url()


@pytest.mark.parametrize(("rule", "message"), [
    (["nickname"], "matching.deterministic_rules\\[0\\] names unknown attribute 'nickname'"),
    (["phone"], "'phone' is a phone; a record's phones are pooled"),
    (["nps_score"], "'nps_score' is not compared"),
])
def test_a_deterministic_rule_must_name_a_compared_attribute(make_project, rule: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        make_project(matching={"deterministic_rules": [rule]})


@pytest.mark.parametrize(("expression", "message"), [
    ("first_nmae IS NOT NULL", "names unknown column\\(s\\) first_nmae"),
    ("email = (SELECT content FROM read_text('/etc/passwd'))", "may not contain a subquery or read a table or file"),
    ("email IS NULL) FROM read_text('/etc/passwd') WHERE (true", "must be one SQL expression"),
    ("email IS NULL) OR (", "cannot be run: invalid expression"),
    ("email IS NULL -- ", "is not valid SQL"),
    ("current_setting('home_directory') IS NOT NULL", "may not call current_setting\\(\\)"),
    ("no_such_function(email)", "cannot be run: unsupported function 'no_such_function'"),
])
def test_a_cross_field_rule_is_checked_when_the_config_loads(make_project, expression: str, message: str) -> None:  # type: ignore[no-untyped-def]
    schema = {**SCHEMA, "rules": [{"name": "bad", "expression": expression}]}
    with pytest.raises(ConfigError, match=f"at schema: .*rules\\[0\\]\\(bad\\): the expression {message}"):
        make_project(schema=schema)


@pytest.mark.parametrize(("rule", "message"), [
    ("l.emial = r.email", "names unknown column\\(s\\) l.emial; known: "),
    ("email = r.email", "names column\\(s\\) email without l. or r."),
    ("l.email = (SELECT content FROM read_text('/etc/passwd'))", "may not contain a subquery or read a table or file"),
    ("l.email = r.email) FROM read_text('/etc/passwd') WHERE (true", "must be one SQL expression"),
    ("read_text('/etc/passwd') = l.email", "calls read_text\\(\\), which is not a DuckDB scalar function"),
    ("getenv('HOME') = l.email", "may not call getenv\\(\\)"),
    ("l.email = r.email; DROP TABLE x", "is not valid SQL"),
])
def test_a_blocking_rule_is_checked_when_the_config_loads(make_project, rule: str, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=f"matching.blocking_rules\\[1\\] {message}"):
        make_project(matching={"blocking_rules": ["l.email = r.email", rule]})


def test_plain_blocking_rules_and_conditions_load(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project(matching={
        "blocking_rules": ["substr(l.last_name, 1, 3) = substr(r.last_name, 1, 3) AND l.phones[1] = r.phones[1]"],
        "comparisons": {"email": {"comparison_levels": [
            {"sql_condition": "email_l IS NULL OR email_r IS NULL", "is_null_level": True},
            {"sql_condition": "jaro_winkler_similarity(email_l, email_r) > 0.9"}, {"sql_condition": "ELSE"}]}},
    })
    assert config.matching.blocking_rules == [
        "substr(l.last_name, 1, 3) = substr(r.last_name, 1, 3) AND l.phones[1] = r.phones[1]"]


def test_a_comparison_condition_may_not_read_files(make_project) -> None:  # type: ignore[no-untyped-def]
    levels = [{"sql_condition": "email_l = (SELECT content FROM read_text('/etc/passwd'))"}]
    with pytest.raises(ConfigError, match="comparisons.email.comparison_levels\\[0\\].sql_condition may not contain"):
        make_project(matching={"comparisons": {"email": {"comparison_levels": levels}}})


def test_retired_sources_and_max_shrink(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project(retired_sources=["legacy_crm"], quality={"max_shrink": 0.5})
    assert config.retired_sources == ["legacy_crm"] and config.quality.max_shrink == 0.5
    with pytest.raises(ConfigError, match="retired_sources names source\\(s\\) still in `sources`: crm"):
        make_project(retired_sources=["crm"])
    with pytest.raises(ConfigError, match="quality.max_shrink: Input should be less than or equal to 1"):
        make_project(quality={"max_shrink": 1.5})


def test_the_generated_blocking_rules_would_pass_the_check() -> None:
    # The check must not refuse what the pipeline itself writes: every default rule of the shipped schema.
    import polars as pl

    from cmdm_pipeline.sql_checks import check_expression
    from cmdm_pipeline.stages.match_features import KEY, matching_frame
    from cmdm_pipeline.stages.match_settings import default_blocking_rules

    schema = load_config(REPO_ROOT / "cmdm.yaml").customer_schema
    features = matching_frame(pl.DataFrame(schema={c: pl.String for c in [*KEY, "party_type", *schema.attributes]}),
                              schema).columns
    rules = default_blocking_rules(schema)
    assert len(rules) > 5
    for rule in rules:
        check_expression(rule, features, prefixes=("l", "r"))
