"""The Definitions load for the shipped config, with the expected graph, and pass Dagster's validation."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg

from cmdm_pipeline.config import load_config
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline_tests.conftest import REPO_ROOT


def test_asset_graph_of_the_shipped_config() -> None:
    defs = build_definitions(load_config(REPO_ROOT / "cmdm.yaml"))
    graph = defs.resolve_asset_graph()
    specs = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    raw = {f"raw_{name}" for name in ("crm", "erp", "shop", "pos", "survey")}
    assert set(specs) == raw | {
        "standardised_customers", "validated_customers", "quarantined_records", "run_reconciliation",
        "match_model", "match_pairs", "match_review_queue", "customer_clusters", "match_summary",
        "customer_xref", "customer_xref_absent", "master_id_lineage", "golden_customers", "golden_attribute_lineage", "golden_customers_history", "customer_lookup_index",
        "quality_report", "golden_quality_scores",
        "consent_history", "consent_current", "consent_quarantine", "audit_log",
        "lens_finance", "lens_marketing", "lens_service", "lens_stewardship", "published_reports",
        "erasure_log", "erasure_notifications", "erasure_tombstones", "erasure_quarantine",
    }
    parents = {name: {k.to_user_string() for k in node.parent_keys} for name, node in specs.items()}
    assert parents["standardised_customers"] == raw
    assert parents["validated_customers"] == parents["quarantined_records"] == {"standardised_customers"}
    assert parents["run_reconciliation"] == raw | {"validated_customers", "quarantined_records"}
    assert parents["customer_xref"] == {"customer_clusters"}
    assert parents["golden_customers"] == {"customer_xref", "validated_customers"}
    assert parents["lens_marketing"] == {"golden_customers", "consent_current"}
    assert parents["published_reports"] == {"quality_report", "run_reconciliation", "match_review_queue"}
    assert {specs[name].group_name for name in raw} == {"ingest"}
    assert all(parents[name] == {"erasure_tombstones"} for name in raw)  # erasure runs before anything is read
    erasure = {n for n in specs if n.startswith("erasure_")}
    downstream, frontier = set(), {"erasure_tombstones"}
    while frontier:  # everything reachable from the tombstones
        frontier = {name for name in specs if parents[name] & frontier} - downstream
        downstream |= frontier
    assert set(specs) - erasure <= downstream  # lenses included: they never publish an erased subject
    tables = [node for name, node in specs.items() if name != "match_model"]
    assert all(node.description and node.description.startswith("One row per") for node in tables)
    job = defs.resolve_job_def(JOB_NAME)
    assert job.executor_def is dg.in_process_executor


#: The asset groups in the order the data flows through them.
GROUPS = ("ingest", "standardise", "validate", "match", "master", "govern", "publish")


def test_groups_follow_the_data_and_steps_and_checks_have_readable_names() -> None:
    defs = build_definitions(load_config(REPO_ROOT / "cmdm.yaml"))
    graph = defs.resolve_asset_graph()
    group = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert set(group.values()) == set(GROUPS)
    assert {n for n, g in group.items() if g == "ingest"} == {*(n for n in group if n.startswith(("raw_", "erasure_")))}
    assert group["golden_customers"] == "master" and group["consent_current"] == "govern"
    # No dependency runs backwards: every asset's parents sit in its own group or an earlier one.
    for key in graph.get_all_asset_keys():
        for parent in graph.get(key).parent_keys:
            assert GROUPS.index(group[parent.to_user_string()]) <= GROUPS.index(group[key.to_user_string()]), (
                parent.to_user_string(), key.to_user_string())
    job = defs.resolve_job_def(JOB_NAME)
    assert not [node.name for node in job.nodes if node.name.startswith("_")]
    assert {"process_erasure_requests", "validate_customers", "match_records", "assign_master_ids",
            "build_golden_records", "measure_quality", "update_consent"} <= {node.name for node in job.nodes}
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert ("golden_customers", "unique_master_id") in checks
    assert all(not name.startswith(asset) for asset, name in checks)  # the check's name does not repeat its asset
    assert job.description is not None
    assert all(word in job.description for word in ("erasure", "quality", "consent", "audit", "lenses"))


def test_dagster_definitions_validate_passes() -> None:
    env = {**os.environ, "CMDM_CONFIG": str(REPO_ROOT / "cmdm.yaml")}
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    result = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_importing_the_definitions_reads_no_config(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Cron runs `cmdm run --config /abs/cmdm.yaml` from any folder: no ./cmdm.yaml may be needed to import.
    env = {k: v for k, v in os.environ.items() if k != "CMDM_CONFIG"}
    code = ("import cmdm_pipeline.definitions as d, dagster as dg; "
            "assert not isinstance(d.defs, dg.Definitions); print('imported')")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "imported" in result.stdout
