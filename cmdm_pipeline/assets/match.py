"""Matching assets: ``match_model`` (trained on purpose), then pairs, review queue, clusters and the run's summary."""

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.schema import Kind
from cmdm_pipeline.stages.decisions import steward_decisions
from cmdm_pipeline.stages.match import KEY, MatchResult, match_records, record_hashes, reusable
from cmdm_pipeline.stages.match_features import feature_inputs, matching_frame
from cmdm_pipeline.stages.match_model import MODEL_VERSION_KEY, latest_model, model_dir, train_model
from cmdm_pipeline.tables import CLUSTERS, PAIRS, REVIEW, VALIDATED
from cmdm_pipeline.tables import MATCH_SUMMARY as SUMMARY
from cmdm_pipeline.warehouse import TableReader

RETRAIN_TAG = "cmdm/retrain"
FULL_REBUILD_TAG = "cmdm/full_rebuild"
MODEL = "match_model"  # a file, not a table
#: Models saved before thresholds and the prior came from the data are trained again, once.
MODEL_FORMAT_KEY, MODEL_FORMAT = "cmdm_model_format", 2


def features(store, config: ProjectConfig) -> pl.DataFrame:
    """Matching features of the validated records, in key order so unique ids are stable."""
    records = store.read(VALIDATED, feature_inputs(config.customer_schema)).sort(KEY)
    return matching_frame(records, config.customer_schema)


def match_model_asset(config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.asset(
        name=MODEL,
        group_name="match",
        deps=[VALIDATED],
        kinds={"splink", config.engine},
        description=(
            "The Splink model (JSON, versioned) compiled from the customer schema and calibrated on the data. "
            f"Trained when none exists, when `matching.retrain` is set, or when the run has tag `{RETRAIN_TAG}=true`."
        ),
    )
    def _model(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        existing = latest_model(config.warehouse_path)
        saved = json.loads(existing.read_text()) if existing else {}
        asked = config.matching.retrain or context.run.tags.get(RETRAIN_TAG, "").lower() == "true"
        outdated = existing is not None and saved.get(MODEL_FORMAT_KEY) != MODEL_FORMAT
        charts = config.warehouse_path.parent / "reports" / "splink"
        if existing is not None and not asked and not outdated:
            version = saved[MODEL_VERSION_KEY]
            context.log.info(f"reusing match model v{version} ({existing.name}); tag {RETRAIN_TAG}=true retrains")
            return dg.MaterializeResult(metadata={"version": version, "trained_this_run": False,
                                                  "model": dg.MetadataValue.path(str(existing))})
        if outdated and existing is not None:
            context.log.info(f"{existing.name} was saved by an earlier cmdm_pipeline: training a calibrated model")
        version = 1 if existing is None else int(existing.stem.rsplit("v", 1)[1]) + 1
        frame = features(warehouse.get(config), config)
        if frame.height < 2:
            context.log.info(f"{frame.height} validated record(s): nothing to compare, no model trained")
            return dg.MaterializeResult(metadata={"trained_this_run": False, "records": frame.height})
        trained = train_model(frame, config.customer_schema, config.matching, version, charts_dir=charts)
        trained.settings[MODEL_FORMAT_KEY] = MODEL_FORMAT
        path = model_dir(config.warehouse_path) / f"match_model_v{version}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_text(json.dumps(trained.settings, indent=1))
        path.with_suffix(".tmp").replace(path)  # atomic: a half-written model is never read
        context.log.info(f"trained match model v{version} on {frame.height} records")
        return dg.MaterializeResult(
            metadata={
                "version": version,
                "trained_this_run": True,
                "records": frame.height,
                "probability_two_random_records_match": trained.settings["probability_two_random_records_match"],
                "em_rules_skipped": dg.MetadataValue.json(trained.settings["cmdm_em_rules_skipped"]),
                "seconds": dg.MetadataValue.json({k: round(v, 2) for k, v in trained.seconds.items()}),
                "model": dg.MetadataValue.path(str(path)),
                # Served by the workbench (`cmdm serve`): a browser refuses file:// links from the Dagster UI.
                "match_weights_chart": dg.MetadataValue.url(f"{config.web.base_url.rstrip('/')}/match/charts/match_weights.html"),
                "m_u_parameters_chart": dg.MetadataValue.url(f"{config.web.base_url.rstrip('/')}/match/charts/m_u_parameters.html"),
                "charts_folder": dg.MetadataValue.path(str(charts)),
            }
        )

    return _model


def _previous(store, model: dict[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """Last run's pairs and record hashes, when they were scored by this same model."""
    tables = store.tables()
    if PAIRS not in tables or CLUSTERS not in tables:
        return None
    return reusable(store.read(PAIRS), store.read(CLUSTERS), model)


def _singletons(frame: pl.DataFrame) -> MatchResult:
    """Nothing to compare (fewer than two records): every record its own cluster."""
    from cmdm_pipeline.stages.match_calibration import Threshold
    from cmdm_pipeline.stages.review import Queue

    keys = {c: pl.String for c in ("source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r")}
    levels = pl.Struct({"none": pl.Int8})  # no comparison was made
    empty_pairs = pl.DataFrame(schema=keys | {"match_weight": pl.Float64, "evidence": pl.Float64,
                                              "match_probability": pl.Float64, "blocked": pl.Boolean,
                                              "comparison_levels": levels})
    empty_queue = pl.DataFrame(schema={"review_type": pl.String} | keys | {
        "records": pl.List(pl.String), "evidence": pl.Float64, "match_probability": pl.Float64,
        "comparison_levels": levels, "merged": pl.Boolean, "doubt": pl.Float64, "records_affected": pl.Int64,
        "priority": pl.Float64, "review_reason": pl.String})
    clusters = frame.select("unique_id", pl.col("unique_id").alias("cluster"), pl.lit(None, pl.Float64).alias("link_confidence"))
    return MatchResult(lambda: iter([empty_pairs]), 0, clusters, Queue(empty_queue, 0, 0), Threshold(0.5, 1.0), 0.0,
                       {"mode": "no pairs to compare", "records": frame.height})


def _summary_row(result: MatchResult, run_id: str, model_version: int | None, budget: float) -> pl.DataFrame:
    s = result.summary
    return pl.DataFrame({
        "run_id": [run_id], "run_at": [dt.datetime.now(dt.UTC).replace(tzinfo=None)],
        "model_version": [model_version], "records": [s.get("records", 0)], "pairs_scored": [s.get("pairs_scored", 0)],
        "pairs_blocked": [s.get("pairs_blocked")], "pairs_left_out": [s.get("pairs_left_out")],
        "match_prior": [result.prior], "link_threshold": [result.threshold.probability],
        "estimated_precision": [s.get("estimated_precision")], "estimated_recall": [s.get("estimated_recall")],
        "review_budget": [budget], "queued": [result.queue.items.height], "doubtful": [result.queue.doubtful],
        "decided_automatically": [result.queue.decided_automatically],
    }, schema_overrides={"model_version": pl.Int64, "estimated_precision": pl.Float64, "estimated_recall": pl.Float64,
                         "pairs_blocked": pl.Int64, "pairs_left_out": pl.Int64})


def match_assets(config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="match_records",
        specs=[
            dg.AssetSpec(PAIRS, group_name="match", deps=[MODEL, VALIDATED], kinds={"splink", config.engine, "duckdb"},
                         description="One row per scored record pair that could link, and every pair inside a candidate "
                                     "cluster: keys, match weight, evidence, probability, comparison levels."),
            dg.AssetSpec(REVIEW, group_name="match", deps=[MODEL, VALIDATED], kinds={"duckdb"},
                         description="One row per doubtful decision a data steward should take, most valuable first, "
                                     "at most `matching.review_budget` of the records."),
            dg.AssetSpec(CLUSTERS, group_name="match", deps=[MODEL, VALIDATED], kinds={"duckdb"},
                         description="One row per validated record: the cluster it belongs to and its strongest link inside it."),
            dg.AssetSpec(SUMMARY, group_name="match", deps=[MODEL, VALIDATED], kinds={"duckdb"},
                         description="One row per run (this one): the prior, link threshold, the model's estimated precision and "
                                     "recall, and the review queue's counts."),
        ],
    )
    def _match(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        store = warehouse.get(config)
        matching = config.matching
        path = latest_model(config.warehouse_path)
        frame = features(store, config)
        model = json.loads(path.read_text()) if path and frame.height >= 2 else None
        version = model[MODEL_VERSION_KEY] if model else None
        decisions = steward_decisions(config.resolve(matching.decisions) if matching.decisions else None,
                                      config.decision_store_path)
        if model is None:
            result = _singletons(frame)
        else:
            full = matching.full_rebuild or context.run.tags.get(FULL_REBUILD_TAG, "").lower() == "true"
            previous = None if full else _previous(store, model)
            several = config.customer_schema.of_kind(Kind.email)  # a customer holds several e-mail addresses
            result = match_records(frame, model, matching, decisions, previous, several)
        ids = frame.select("unique_id", *KEY)
        members = result.clusters.join(ids, on="unique_id").join(record_hashes(frame), on=KEY).select(
            *KEY, "cluster", "link_confidence", "record_hash")
        queue = result.queue.items
        summary = _summary_row(result, context.run.run_id, version, matching.review_budget)

        def parts(_: TableReader) -> Iterator[dict[str, pl.DataFrame]]:
            yield {REVIEW: queue, CLUSTERS: members, SUMMARY: summary}
            # Keyed a part at a time: the pairs with their keys would be several times the scored pairs' memory.
            for part in result.pair_parts():
                yield {PAIRS: part.with_columns(pl.lit(version, dtype=pl.Int64).alias("model_version"))}

        store.replace_in_parts(parts)
        sizes = members.group_by("cluster").agg(pl.len().alias("size"))
        largest = sizes["size"].max()  # an int, or None without clusters
        s = result.summary
        context.log.info(
            f"matching ({s['mode']}): {result.pair_count} pairs, prior {result.prior:.3g}, link threshold "
            f"p >= {result.threshold.probability:.3f}; {sizes.height} clusters; {queue.height} to review "
            f"({result.queue.decided_automatically} doubtful decisions over the budget left to the model)")
        estimates: dict[str, Any] = {k: round(float(v), 4) for k, v in s.items() if k.startswith("estimated_")}
        yield dg.MaterializeResult(asset_key=PAIRS, metadata={
            "dagster/row_count": result.pair_count, "mode": s["mode"], "pairs_completed": s.get("pairs_completed", 0),
            # Blocks over the pair budget (matching.max_pairs_per_record), not compared this run.
            "blocks_left_out": s.get("blocks_left_out", 0), "pairs_left_out": s.get("pairs_left_out", 0),
            "model_version": version or "none (fewer than two records)",
            "match_prior": float(result.prior), "link_threshold": round(result.threshold.probability, 4)})
        yield dg.MaterializeResult(asset_key=REVIEW, metadata={
            "dagster/row_count": queue.height, "review_budget": matching.review_budget,
            "doubtful_decisions": result.queue.doubtful,
            "decided_automatically": result.queue.decided_automatically})
        yield dg.MaterializeResult(asset_key=CLUSTERS, metadata={
            "dagster/row_count": members.height, "clusters": sizes.height,
            "largest_cluster": largest if isinstance(largest, int) else 0,
            "singletons": sizes.filter(pl.col("size") == 1).height,
            # Share of records that matched at least one other record.
            "match_rate": round(float(sizes.filter(pl.col("size") > 1)["size"].sum()) / max(members.height, 1), 4),
            "cluster_size_distribution": dg.MetadataValue.json(
                {str(k): v for k, v in sizes.group_by("size").len().sort("size").iter_rows()}),
            **estimates, "steward_decisions": decisions.height})
        yield dg.MaterializeResult(asset_key=SUMMARY, metadata={
            "dagster/row_count": 1, "link_threshold": round(result.threshold.probability, 4), **estimates,
            "queued": queue.height, "decided_automatically": result.queue.decided_automatically})

    return _match
