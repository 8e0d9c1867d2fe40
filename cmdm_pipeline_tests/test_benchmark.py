"""The benchmark: scoring, its mode for your own labelled data, the suite's data sets, plain Splink's settings,
and one run of the suite on FEBRL1 (the large runs are not tests)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cmdm_pipeline.benchmark import (
    RssSampler,
    engine_ratios,
    failure,
    labelled_truth,
    main,
    own_config,
    read_truth,
    score_clusters,
)
from cmdm_pipeline.benchmark_data import NAME_FORMS, DataSetError, dataset_names, parse_dataset, prepare
from cmdm_pipeline.config import load_config
from cmdm_pipeline.plain_splink import plain_settings
from cmdm_pipeline_tests.conftest import REPO_ROOT


def test_scores_are_pairwise_and_b_cubed() -> None:
    truth = pl.DataFrame({"source_system": ["s"] * 5, "source_record_id": list("abcde"), "entity": ["1", "1", "1", "2", "2"]})
    # Predicted: {a, b} {c, d} {e}. True pairs ab ac bc de; predicted pairs ab cd; one right.
    assigned = truth.select("source_system", "source_record_id").with_columns(pl.Series("master_id", ["x", "x", "y", "y", "z"]))
    scores = score_clusters(assigned, truth, "master_id")
    assert scores["pair_precision"] == pytest.approx(1 / 2)
    assert scores["pair_recall"] == pytest.approx(1 / 4)
    # B-cubed precision per record: a 1, b 1, c 1/2, d 1/2, e 1; recall: a 2/3, b 2/3, c 1/3, d 1/2, e 1/2.
    assert scores["b3_precision"] == pytest.approx(4 / 5)
    assert scores["b3_recall"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 / 2 + 1 / 2) / 5)
    assert scores["largest_cluster"] == 2


def test_truth_file_errors_name_file_row_and_column(tmp_path: Path) -> None:
    good = tmp_path / "truth.csv"
    good.write_text("source_system,source_record_id,entity,note\ncrm,1,A,x\nerp,9,A,\nshop,3,,unlabelled\n")
    assert read_truth(good).rows() == [("crm", "1", "A"), ("erp", "9", "A")]
    missing = tmp_path / "missing.csv"
    missing.write_text("source_system,record,entity\ncrm,1,A\n")
    with pytest.raises(SystemExit, match=r"missing.csv: missing column\(s\) \['source_record_id'\]"):
        read_truth(missing)
    twice = tmp_path / "twice.csv"
    twice.write_text("source_system,source_record_id,entity\ncrm,1,A\ncrm,2,B\ncrm,1,C\n")
    with pytest.raises(SystemExit, match="twice.csv: row 2: a record is labelled more than once"):
        read_truth(twice)
    with pytest.raises(SystemExit, match="nosuch.csv: cannot read the truth CSV"):
        read_truth(tmp_path / "nosuch.csv")


def test_own_config_writes_only_into_the_workdir(make_project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_project(protection={"key_file": "/secrets/prod.kek.json"},
                 lenses_target={"url": "postgresql://publisher@bi.example:5432/bi"})
    config = own_config(tmp_path / "cmdm.yaml", tmp_path / "work")
    assert config.warehouse_path == tmp_path / "work" / "warehouse" / "cmdm.duckdb"
    assert config.protection.key_file is None and config.protection.keystore is None
    assert config.lenses_target is None
    # Sources are still read from beside the config.
    assert config.resolve(config.sources[0].path) == tmp_path / "crm.csv"


def test_config_and_truth_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--config", "cmdm.yaml"])
    assert exit_.value.code == 2 and "--config and --truth go together" in capsys.readouterr().err


def test_the_ceiling_links_one_customers_records_that_share_a_value_and_nothing_else() -> None:
    from cmdm_pipeline.benchmark import shared_value_ceiling
    from cmdm_pipeline.config import load_config
    from cmdm_pipeline_tests.conftest import REPO_ROOT

    schema = load_config(REPO_ROOT / "cmdm.yaml").customer_schema
    records = pl.DataFrame({
        "source_system": ["s"] * 6, "source_record_id": list("abcdef"),
        # a-b: the same e-mail local part at two domains; b-c: one number as landline and as mobile; d: only
        # the name; e-f: two customers with the same e-mail (a shared mailbox), never linked across customers.
        "email": ["ann.lee@x.org", "ann.lee@y.org", None, "ann@z.org", "info@w.org", "info@w.org"],
        "phone": [None, "+441610000000", None, None, None, None],
        "mobile_phone": [None, None, "+441610000000", None, None, None],
        "first_name": ["Ann"] * 4 + ["Bo", "Cy"],
    })
    truth = pl.DataFrame({"source_system": ["s"] * 6, "source_record_id": list("abcdef"),
                          "entity": ["ann"] * 4 + ["bo", "cy"]})
    ceiling = shared_value_ceiling(records, truth, schema)
    # Ann's 4 records make 6 pairs; a, b and c are linked (3 pairs), d is not.
    assert ceiling["pair_precision"] == 1.0 and ceiling["pair_recall"] == 0.5
    assert ceiling["largest_cluster"] == 3


@pytest.mark.parametrize(("name", "sources", "entities"), [
    ("febrl1", {"febrl1": 1000}, 500),
    ("febrl2", {"febrl2": 5000}, 4000),
    ("febrl3", {"febrl3": 5000}, 2000),
    ("febrl4", {"febrl4a": 5000, "febrl4b": 5000}, 5000),
])
def test_febrl_data_sets_are_prepared_as_sources_truth_and_config(
        tmp_path: Path, name: str, sources: dict[str, int], entities: int) -> None:
    prepared = prepare(name, tmp_path, seed=7)
    config = load_config(tmp_path / "cmdm.yaml")
    assert {s.name: s.default_country for s in config.sources} == {s: "AU" for s in sources}
    for source in config.sources:
        assert pl.read_csv(source.path, infer_schema=False).height == sources[source.name]
    truth = read_truth(prepared.truth_path)
    assert truth.group_by("source_system").len().sort("source_system").rows() == sorted(sources.items())
    assert truth["entity"].n_unique() == entities
    # The shipped settings on other sources: no consent or erasure, nothing naming a shipped source.
    assert config.consent is None and config.erasure.source is None
    assert config.survivorship.customer_provided_sources == [] and config.quality.quarantine_rate_by_source == {}
    # The engine (and its Spark warehouse, under each project's own folder) is not a matching setting: model_dump leaves it out.
    assert config.matching.model_dump() == load_config(REPO_ROOT / "cmdm.yaml").matching.model_dump()
    assert config.warehouse_path == tmp_path / "warehouse" / "cmdm.duckdb"


def test_febrl_street_number_and_street_are_one_address_line(tmp_path: Path) -> None:
    config = prepare("febrl1", tmp_path, seed=7).config
    rows = pl.read_csv(config.sources[0].path, infer_schema=False)
    # rec-223-org: " , waller, 6, tullaroop street, willaroo, ..." (no given name; leading spaces stripped)
    first = rows.filter(pl.col("rec_id") == "rec-223-org").row(0, named=True)
    assert first["address_line_1"] == "6 tullaroop street" and first["given_name"] is None
    assert first["surname"] == "waller" and first["date_of_birth"] == "19081209"
    assert config.sources[0].columns["address_line_1"] == "address_line_1"


def test_registry_data_sets_add_their_attributes_and_label_people(tmp_path: Path) -> None:
    prepared = prepare("registry-email-200", tmp_path, seed=3)
    config = load_config(tmp_path / "cmdm.yaml")
    attributes = config.customer_schema.attributes
    assert attributes["birth_place"].use_in_matching and attributes["occupation"].use_in_matching
    assert [s.name for s in config.sources] == ["registry"] and "email" in config.sources[0].columns.values()
    validated = pl.read_csv(prepared.truth_path, infer_schema=False).select(
        "source_system", "source_record_id", pl.lit("person").alias("party_type"))
    truth = labelled_truth(prepared.truth_path, validated)
    assert truth.height == 200 and truth["entity"].null_count() == 0


def test_data_set_names_are_checked() -> None:
    assert parse_dataset("febrl3") == ("febrl3", None)
    assert parse_dataset("bundled-100000") == ("bundled", 100_000)
    assert parse_dataset("registry-email-1000") == ("registry-email", 1000)
    assert dataset_names("febrl1, registry-50000") == ["febrl1", "registry-50000"]
    for wrong in ("febrl5", "bundled", "bundled-0", "registry-1e6", "registry-email-"):
        with pytest.raises(DataSetError, match=f"unknown data set '{wrong}'; valid forms: febrl1, febrl2"):
            dataset_names(f"febrl1,{wrong}")
    with pytest.raises(DataSetError, match="listed twice: febrl1"):
        dataset_names("febrl1,febrl2,febrl1")


def test_a_wrong_data_set_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--suite", "--datasets", "febrl1,nope"])
    assert exit_.value.code == 2 and NAME_FORMS in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--suite", "--records", "1000"])
    assert "--records and --config run one on its own" in capsys.readouterr().err


def test_a_workdir_with_a_warehouse_from_an_earlier_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "febrl2" / "warehouse").mkdir(parents=True)
    with pytest.raises(SystemExit, match="febrl2/warehouse: a warehouse is there from an earlier run"):
        main(["--suite", "--datasets", "febrl1,febrl2", "--workdir", str(tmp_path)])


def test_engines_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    for wrong in ("polars", "duckdb,duckdb", ","):
        with pytest.raises(SystemExit):
            main(["--suite", "--datasets", "febrl1", "--engine", wrong])
        assert "--engine: expected distinct engines of duckdb, spark" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--records", "1000", "--engine", "duckdb,spark"])
    assert "several engines run as a suite" in capsys.readouterr().err


def test_with_several_engines_each_has_its_folder_and_an_earlier_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "febrl1" / "spark" / "warehouse").mkdir(parents=True)
    with pytest.raises(SystemExit, match="febrl1/spark/warehouse: a warehouse is there from an earlier run"):
        main(["--suite", "--datasets", "febrl1", "--engine", "duckdb,spark", "--workdir", str(tmp_path)])


def run_figures(engine: str, seconds: float, peak: float, pair_f1: float, **extra: object) -> dict[str, object]:
    return {"dataset": "d", "engine": engine, "pipeline_seconds": seconds, "total_peak_rss_gb": peak,
            "jvm_peak_rss_gb": 1.5 if engine == "spark" else 0.0, "cmdm": {"pair_f1": pair_f1, "b3_f1": pair_f1},
            "step_seconds": {"match_model": seconds / 2, "validated_customers": seconds / 4}, **extra}


def test_other_engines_are_reported_as_ratios_to_duckdb() -> None:
    results = [run_figures("duckdb", 100, 2.0, 0.95), run_figures("spark", 300, 5.0, 0.94),
               {"dataset": "e", "engine": "spark", "error": "RuntimeError: gone"}, run_figures("spark", 10, 1, 0.9, dataset="f")]
    (ratio,) = engine_ratios(results)  # the failed run and the one without a DuckDB run beside it have none
    assert ratio["dataset"] == "d" and ratio["engine"] == "spark" and ratio["jvm_gb"] == 1.5
    assert ratio["seconds"] == pytest.approx(3.0) and ratio["peak"] == pytest.approx(2.5)
    assert ratio["pair_f1"] == pytest.approx(-0.01) and ratio["step_seconds"]["match_model"] == pytest.approx(3.0)


def test_memory_is_sampled_for_the_process_and_its_children() -> None:
    import subprocess
    import sys
    import time

    with RssSampler() as alone:
        time.sleep(1)
    script = "import time; b = bytearray(300_000_000); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"  # its memory is touched
        with RssSampler() as sampler:
            time.sleep(1)
    finally:
        child.kill()
        child.wait()
    assert sampler.peaks().total - alone.peaks().total > 250_000_000  # the child's 300 MB
    assert sampler.peaks().jvm == 0  # only java processes count as the Spark JVM


def comparison_kinds(schema_source: Path, columns: list[str]) -> tuple[dict[str, str], object]:
    settings = plain_settings(load_config(schema_source).customer_schema, columns)
    return {name: type(c).__name__ for name, c in settings.comparisons.items()}, settings


def test_plain_splink_settings_for_febrl_like_records(tmp_path: Path) -> None:
    prepare("febrl1", tmp_path, seed=7)
    febrl = ["first_name", "last_name", "address_line_1", "address_line_2", "city", "postcode", "region",
             "date_of_birth", "national_id"]
    kinds, settings = comparison_kinds(tmp_path / "cmdm.yaml", febrl)
    # region is not a matched attribute of the schema; nothing is compared that the records lack.
    assert kinds == {
        "first_name": "NameComparison", "last_name": "NameComparison", "date_of_birth": "DateOfBirthComparison",
        "address_line_1": "LevenshteinAtThresholds", "address_line_2": "LevenshteinAtThresholds",
        "city": "ExactMatch", "postcode": "ExactMatch", "national_id": "ExactMatch",
    }
    assert settings.blocking_rules == [
        ("first_name", "last_name"), ("last_name", "date_of_birth"), ("first_name", "date_of_birth"),
        ("postcode", "first_name"), ("national_id",), ("city", "last_name"),
    ]
    assert settings.deterministic_rules == [("first_name", "last_name", "date_of_birth")]
    assert settings.training_rules == [("first_name", "last_name"), ("date_of_birth",), ("postcode",)]
    postcode = settings.comparisons["postcode"].get_comparison("duckdb").as_dict()
    assert postcode["comparison_levels"][1]["tf_adjustment_column"] == "postcode"


def test_plain_splink_settings_for_records_with_emails_phones_and_organisations() -> None:
    shipped = REPO_ROOT / "cmdm.yaml"
    columns = ["first_name", "last_name", "organisation_name", "date_of_birth", "email", "phone", "mobile_phone",
               "address_line_1", "city", "postcode", "country", "tax_id"]
    kinds, settings = comparison_kinds(shipped, columns)
    assert kinds["email"] == "EmailComparison" and kinds["organisation_name"] == "JaroWinklerAtThresholds"
    assert kinds["phone"] == kinds["mobile_phone"] == kinds["tax_id"] == "ExactMatch"
    assert "country" not in kinds and "national_id" not in kinds
    assert settings.blocking_rules == [
        ("first_name", "last_name"), ("last_name", "date_of_birth"), ("first_name", "date_of_birth"),
        ("postcode", "first_name"), ("email",), ("phone",), ("mobile_phone",), ("tax_id",), ("city", "last_name"),
        ("organisation_name", "postcode"),
    ]
    assert settings.deterministic_rules == [("first_name", "last_name", "date_of_birth"), ("email",)]
    assert settings.training_rules == [("first_name", "last_name"), ("date_of_birth",), ("email",)]


def test_the_suite_on_febrl1_measures_the_pipeline_and_plain_splink(tmp_path: Path) -> None:
    figures_path = tmp_path / "figures.json"
    code = main(["--suite", "--datasets", "febrl1", "--workdir", str(tmp_path / "work"), "--json", str(figures_path)])
    assert code == 0
    (figures,) = json.loads(figures_path.read_text())["datasets"]
    assert figures["dataset"] == "febrl1" and figures["records"] == figures["labelled_records"] == 1000
    assert (tmp_path / "work" / "febrl1" / "warehouse" / "cmdm.duckdb").exists()
    for scores in (figures["cmdm"], figures["plain_splink"]["best"], figures["shared_value_ceiling"]):
        assert 0 < scores["pair_f1"] <= 1 and 0 < scores["b3_f1"] <= 1
    assert figures["cmdm"]["pair_f1"] > 0.9 and figures["plain_splink"]["best"]["pair_f1"] > 0.9
    assert len(figures["plain_splink"]["thresholds"]) == 7
    assert figures["review_queue"]["records"] >= 0 and 0 <= figures["review_queue"]["share_of_records"] <= 1
    assert figures["step_seconds"] and all(seconds > 0 for seconds in figures["step_seconds"].values())
    assert figures["pipeline_seconds"] > 0 and figures["peak_rss_gb"] > 0 and figures["engine"] == "duckdb"
    # All processes' memory is proportional (shared library pages split), so it may be below the process's RSS.
    assert figures["total_peak_rss_gb"] > 0 and figures["jvm_peak_rss_gb"] == 0


def test_generated_data_is_made_in_a_child_process() -> None:
    # The generator's working copies must not stay resident in the process whose peak memory is measured.
    import os

    from cmdm_pipeline.benchmark_data import in_child

    assert in_child(os.getpid) != os.getpid()
    assert in_child(divmod, 7, 2) == (3, 1)


def test_a_run_past_the_memory_limit_stops_naming_its_step(tmp_path: Path) -> None:
    figures_path = tmp_path / "figures.json"
    code = main(["--suite", "--datasets", "febrl1", "--max-rss-gb", "0.2", "--workdir", str(tmp_path / "work"),
                 "--json", str(figures_path), "--no-splink"])
    (figures,) = json.loads(figures_path.read_text())["datasets"]
    assert code == 1 and figures["dataset"] == "febrl1" and figures["engine"] == "duckdb"
    assert figures["error"].startswith("MemoryLimitReached: all processes held ")
    assert "(the limit: 0.2 GB)" in figures["error"] and ", in step(s) " in figures["error"]


def test_a_failure_is_told_in_one_line_with_the_cause_that_ended_the_step() -> None:
    try:
        try:
            raise MemoryError("Java heap space\n  at somewhere")
        except MemoryError as cause:
            raise RuntimeError('Error occurred while executing op "match_model":\n\nmore') from cause
    except RuntimeError as exc:
        told = failure(exc)
    assert told == 'RuntimeError: Error occurred while executing op "match_model": (cause: MemoryError: Java heap space at somewhere)'
    assert failure(ValueError()) == "ValueError: "
