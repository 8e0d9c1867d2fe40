"""The benchmark's scoring and its mode for your own labelled data (the full runs are not tests)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from cmdm_pipeline.benchmark import main, own_config, read_truth, score_clusters


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
