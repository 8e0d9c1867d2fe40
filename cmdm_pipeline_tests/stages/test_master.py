"""Stable master ids: reruns, new records, merges and splits."""

from __future__ import annotations

import datetime as dt

import polars as pl

from cmdm_pipeline.stages.master import assign_master_ids

T1 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def clusters(*groups: list[str]) -> pl.DataFrame:
    rows = [(key.split(":")[0], key.split(":")[1], i, 1.0) for i, group in enumerate(groups) for key in group]
    return pl.DataFrame(rows, schema=["source_system", "source_record_id", "cluster", "link_confidence"], orient="row")


def ids(xref: pl.DataFrame) -> dict[str, str]:
    return {f"{s}:{r}": m for s, r, m in xref.select("source_system", "source_record_id", "master_id").iter_rows()}


def test_first_run_numbers_clusters_by_smallest_record() -> None:
    result = assign_master_ids(clusters(["crm:2", "erp:1"], ["crm:1"]), None, "r1", T1)
    assert ids(result.xref) == {"crm:1": "M000000001", "crm:2": "M000000002", "erp:1": "M000000002"}
    assert result.lineage.height == 0
    assert result.xref["first_seen"].unique().to_list() == [T1]


def test_rerun_on_same_input_keeps_ids_and_first_seen() -> None:
    first = assign_master_ids(clusters(["crm:1", "erp:1"], ["crm:2"]), None, "r1", T1)
    # Cluster numbering may change between runs; ids must not.
    second = assign_master_ids(clusters(["crm:2"], ["erp:1", "crm:1"]), first.xref, "r2", T2)
    assert ids(second.xref) == ids(first.xref)
    assert second.xref["first_seen"].unique().to_list() == [T1]
    assert second.xref["last_seen"].unique().to_list() == [T2]
    assert second.lineage.height == 0


def test_new_records_join_existing_masters_and_new_ones_get_next_ids() -> None:
    first = assign_master_ids(clusters(["crm:1"], ["crm:2"]), None, "r1", T1)
    second = assign_master_ids(clusters(["crm:1", "shop:9"], ["crm:2"], ["pos:5"]), first.xref, "r2", T2)
    assert ids(second.xref) == {"crm:1": "M000000001", "shop:9": "M000000001", "crm:2": "M000000002", "pos:5": "M000000003"}


def test_merge_keeps_the_older_id_and_records_the_retired_one() -> None:
    first = assign_master_ids(clusters(["crm:1"]), None, "r1", T1)
    second = assign_master_ids(clusters(["crm:1"], ["erp:1"]), first.xref, "r2", T2)
    third = assign_master_ids(clusters(["erp:1", "crm:1"]), second.xref, "r3", T2)
    assert set(ids(third.xref).values()) == {"M000000001"}
    assert third.lineage.select("event", "master_id", "related_master_id", "records").rows() == [
        ("merged", "M000000002", "M000000001", 1)
    ]


def test_a_retired_id_is_never_issued_again() -> None:
    from cmdm_pipeline.stages.master import highest_issued, sequence_row

    first = assign_master_ids(clusters(["crm:1"], ["erp:1"]), None, "r1", T1)
    assert first.highest_issued == 2
    merged = assign_master_ids(clusters(["crm:1", "erp:1"]), first.xref, "r2", T2)  # M000000002 retired
    assert merged.highest_issued == 2 and set(ids(merged.xref).values()) == {"M000000001"}
    # Without the sequence, the next fresh id would be M000000002 again (the highest still in use is 1).
    issued = highest_issued(sequence_row(merged.highest_issued, "r2", T2), merged.lineage)
    split = assign_master_ids(clusters(["crm:1"], ["erp:1"]), merged.xref, "r3", T2, issued)
    assert ids(split.xref) == {"crm:1": "M000000001", "erp:1": "M000000003"}
    # A warehouse written before the sequence existed: the lineage still names the retired id.
    assert highest_issued(None, merged.lineage) == 2


def test_split_keeps_the_id_with_the_larger_part() -> None:
    first = assign_master_ids(clusters(["crm:1", "crm:2", "erp:1"]), None, "r1", T1)
    second = assign_master_ids(clusters(["crm:1"], ["crm:2", "erp:1"]), first.xref, "r2", T2)
    assert ids(second.xref) == {"crm:2": "M000000001", "erp:1": "M000000001", "crm:1": "M000000002"}
    assert second.lineage.select("event", "master_id", "related_master_id", "records").rows() == [
        ("split", "M000000002", "M000000001", 1)
    ]


T3 = dt.datetime(2026, 1, 3, tzinfo=dt.UTC)


def test_a_record_missing_for_a_night_gets_its_master_id_back() -> None:
    first = assign_master_ids(clusters(["crm:1", "erp:1"], ["crm:2"], ["crm:3"]), None, "r1", T1)
    # crm is empty tonight: erp:1 keeps M1 alone; crm:2 and crm:3 are remembered, not dropped.
    away = assign_master_ids(clusters(["erp:1"], ["pos:7"]), first.xref, "r2", T2)
    assert ids(away.xref) == {"erp:1": "M000000001", "pos:7": "M000000004"}
    assert ids(away.absent) == {"crm:1": "M000000001", "crm:2": "M000000002", "crm:3": "M000000003"}
    assert away.absent["last_seen"].unique().to_list() == [T1]
    back = assign_master_ids(clusters(["crm:1", "erp:1"], ["crm:2"], ["crm:3"], ["pos:7"]), away.xref, "r3", T3,
                             away.highest_issued, away.absent)
    assert ids(back.xref) == {**ids(first.xref), "pos:7": "M000000004"}
    assert back.xref.filter(pl.col("source_record_id") == "2")["first_seen"].to_list() == [T1]
    assert back.absent.is_empty() and back.lineage.is_empty()  # nothing merged or split: nothing to record


def test_a_returning_record_that_now_matches_another_master_is_a_recorded_merge() -> None:
    first = assign_master_ids(clusters(["crm:1"], ["erp:1"]), None, "r1", T1)
    away = assign_master_ids(clusters(["erp:1"]), first.xref, "r2", T2, first.highest_issued)
    back = assign_master_ids(clusters(["crm:1", "erp:1"]), away.xref, "r3", T3, away.highest_issued, away.absent)
    assert set(ids(back.xref).values()) == {"M000000001"}  # the older master keeps its id
    assert back.lineage.select("event", "master_id", "related_master_id").rows() == [
        ("merged", "M000000002", "M000000001")]


def test_a_missing_record_follows_its_master_into_a_merge() -> None:
    first = assign_master_ids(clusters(["crm:1"], ["crm:2", "erp:1"]), None, "r1", T1)
    # crm:2 is away while its companion erp:1 is found to be crm:1's customer: M2 merges into M1.
    tonight = assign_master_ids(clusters(["crm:1", "erp:1"]), first.xref, "r2", T2, first.highest_issued)
    assert tonight.lineage.select("event", "master_id", "related_master_id").rows() == [
        ("merged", "M000000002", "M000000001")]
    assert ids(tonight.absent) == {"crm:2": "M000000001"}  # a merged id never comes back
    back = assign_master_ids(clusters(["crm:1", "crm:2", "erp:1"]), tonight.xref, "r3", T3,
                             tonight.highest_issued, tonight.absent)
    assert set(ids(back.xref).values()) == {"M000000001"} and back.lineage.is_empty()
