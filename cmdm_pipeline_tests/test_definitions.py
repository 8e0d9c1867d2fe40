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
        "consent_history", "consent_current", "consent_quarantine", "audit_log", "lenses",
        "erasure_log", "erasure_notifications", "erasure_tombstones", "erasure_quarantine",
    }
    parents = {name: {k.to_user_string() for k in node.parent_keys} for name, node in specs.items()}
    assert parents["standardised_customers"] == raw
    assert parents["validated_customers"] == parents["quarantined_records"] == {"standardised_customers"}
    assert parents["run_reconciliation"] == raw | {"validated_customers", "quarantined_records"}
    assert parents["customer_xref"] == {"customer_clusters"}
    assert parents["golden_customers"] == {"customer_xref", "validated_customers"}
    assert parents["lenses"] == {"golden_customers", "consent_current"}
    assert {specs[name].group_name for name in raw} == {"extract"}
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
