"""Every check's verdict, passing and failing, and the `quality:` config its limits come from."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from cmdm_pipeline.config import ConfigError, load_config
from cmdm_pipeline.definitions import build_definitions
from cmdm_pipeline.quality import checks
from cmdm_pipeline.stages.reconcile import reconcile
from cmdm_pipeline_tests.conftest import REPO_ROOT

AT = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
SHARES = {"cluster_size_1": 0.6, "cluster_size_2": 0.3, "cluster_size_3": 0.1}


def test_reconciliation_passes_when_every_row_is_accounted_for_and_fails_otherwise() -> None:
    validated = pl.DataFrame({"source_system": ["crm", "crm", "shop"]})
    quarantined = pl.DataFrame({"source_system": ["shop"]})
    good = checks.reconciliation_verdict(reconcile("r", {"crm": 2, "shop": 2}, validated, quarantined, AT))
    assert good.passed and good.metadata["by_source"]["shop"] == {"rows_read": 2, "rows_validated": 1, "rows_quarantined": 1}
    lost = checks.reconciliation_verdict(reconcile("r", {"crm": 3, "shop": 2}, validated, quarantined, AT))
    assert not lost.passed and "crm" in lost.description and "shop" not in lost.description
    assert not checks.reconciliation_verdict(reconcile("r", {}, validated.head(0), quarantined.head(0), AT)).passed


@pytest.mark.parametrize(("rows", "distinct", "missing", "passed"), [(3, 3, 0, True), (3, 2, 0, False), (3, 2, 1, False)])
def test_unique_master_id(rows: int, distinct: int, missing: int, passed: bool) -> None:
    assert checks.unique_master_id_verdict(rows, distinct, missing).passed is passed


def test_quarantine_rate_against_the_default_and_a_source_limit() -> None:
    counts = pl.DataFrame({"source_system": ["crm", "survey"], "validated": [90, 70], "quarantined": [10, 30]})
    assert checks.quarantine_rate_verdict(counts, 0.3, {}).passed  # 10% and 30%: at most the limit
    tight = checks.quarantine_rate_verdict(counts, 0.5, {"crm": 0.05})
    assert not tight.passed and tight.description == "quarantine rate above its limit: crm 10.0% > 5.0%"
    assert tight.metadata["by_source"]["survey"] == {"rows": 100, "quarantined": 30, "rate": 0.3, "limit": 0.5}
    empty = pl.DataFrame({"source_system": ["pos"], "validated": [0], "quarantined": [0]})
    assert checks.quarantine_rate_verdict(empty, 0.0, {}).passed


def test_match_rate_drift_passes_without_a_previous_run_within_the_limit_or_when_accepted() -> None:
    first = checks.match_rate_drift_verdict(0.7, None, None, 0.1)
    assert first.passed and first.metadata["previous_run"] is None and "no previous run" in first.description
    assert checks.match_rate_drift_verdict(0.7, 0.65, "run-1", 0.1).passed
    jump = checks.match_rate_drift_verdict(0.9, 0.65, "run-1", 0.1)
    assert not jump.passed and jump.metadata["drift"] == 0.25
    accepted = checks.match_rate_drift_verdict(0.9, 0.65, "run-1", 0.1, accepted=True)
    assert accepted.passed and accepted.metadata["accepted_by_tag"] is True


def test_cluster_size_drift_is_the_total_variation_distance() -> None:
    assert checks.cluster_size_drift_verdict(SHARES, None, None, 0.1).passed
    assert checks.cluster_size_drift_verdict(SHARES, {**SHARES, "cluster_size_1": 0.5, "cluster_size_2": 0.4}, "r", 0.1).passed
    merged = {"cluster_size_10_plus": 1.0}  # everything in one big cluster: the classic chaining failure
    moved = checks.cluster_size_drift_verdict(merged, SHARES, "r", 0.1)
    assert not moved.passed and moved.metadata["drift"] == 1.0
    assert checks.cluster_size_drift_verdict(merged, SHARES, "r", 0.1, accepted=True).passed


def test_quality_limits_have_defaults_and_are_checked(make_project) -> None:  # type: ignore[no-untyped-def]
    quality = make_project().quality
    assert (quality.max_quarantine_rate, quality.max_match_rate_drift, quality.max_cluster_size_drift) == (0.5, 0.1, 0.1)
    assert make_project(quality={"quarantine_rate_by_source": {"crm": 0.2}}).quality.quarantine_rate_by_source == {"crm": 0.2}
    with pytest.raises(ConfigError, match="quality.quarantine_rate_by_source names unknown source"):
        make_project(quality={"quarantine_rate_by_source": {"nope": 0.2}})
    with pytest.raises(ConfigError, match="quality.max_quarantine_rate"):
        make_project(quality={"max_quarantine_rate": 1.5})


def test_the_checks_block_the_assets_publication_depends_on() -> None:
    graph = build_definitions(load_config(REPO_ROOT / "cmdm.yaml")).resolve_asset_graph()
    specs = {key.name: graph.get_check_spec(key) for key in graph.asset_check_keys}
    assert {name: spec.asset_key.to_user_string() for name, spec in specs.items()} == {
        "source_rows_reconcile": "validated_customers",
        "sources_did_not_shrink": "validated_customers",
        "quarantine_rate_within_limit": "validated_customers",
        "match_rate_within_drift": "customer_clusters",
        "cluster_sizes_within_drift": "customer_clusters",
        "unique_master_id": "golden_customers",
        "personal_data_stored_encrypted": "golden_customers",
    }
    assert all(spec.blocking and spec.description for spec in specs.values())
