"""Matching assets: ``match_model`` (trained on purpose), then pairs, review queue and clusters."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from cmdm_pipeline.assets.validate import VALIDATED
from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.stages.cluster import MUST_LINK_WEIGHT, ClusterSettings, cluster_pairs
from cmdm_pipeline.stages.match import (
    corroborated,
    decided_edges,
    keyed_pairs,
    names_disagree,
    open_questions,
    read_decisions,
    review_queue,
)
from cmdm_pipeline.stages.match_features import (
    KEY, family_name_attributes, feature_inputs, given_name_attributes, matching_frame,
)
from cmdm_pipeline.stages.match_model import (
    MIN_TRAINING_RECORDS,
    MODEL_VERSION_KEY,
    corroborating_levels,
    deterministic_pairs,
    one_person,
    organisation_names,
    score_new_pairs,
    score_pairs,
    swapped_levels,
    train_model,
)

RETRAIN_TAG = "cmdm/retrain"
FULL_REBUILD_TAG = "cmdm/full_rebuild"
MODEL = "match_model"
PAIRS = "match_pairs"
REVIEW = "match_review_queue"
CLUSTERS = "customer_clusters"


def model_dir(config: ProjectConfig) -> Path:
    return config.warehouse_path.parent / "models"


def latest_model(config: ProjectConfig) -> Path | None:
    models = sorted(model_dir(config).glob("match_model_v*.json"), key=lambda p: int(p.stem.rsplit("v", 1)[1]))
    return models[-1] if models else None


def features(store, config: ProjectConfig) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    """Matching features of the validated records, in key order so unique ids are stable."""
    records = store.read(VALIDATED, feature_inputs(config.customer_schema)).sort(KEY)
    return matching_frame(records, config.customer_schema)


def match_model_asset(config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.asset(
        name=MODEL,
        group_name="match",
        deps=[VALIDATED],
        kinds={"splink", "duckdb"},
        description=(
            "The Splink model (JSON, versioned) compiled from the customer schema. Trained only when none "
            f"exists, when `matching.retrain` is set, or when the run has tag `{RETRAIN_TAG}=true`."
        ),
    )
    def _model(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        existing = latest_model(config)
        asked = config.matching.retrain or context.run.tags.get(RETRAIN_TAG, "").lower() == "true"
        charts = config.warehouse_path.parent / "reports" / "splink"
        if existing is not None and not asked:
            version = json.loads(existing.read_text())[MODEL_VERSION_KEY]
            context.log.info(f"reusing match model v{version} ({existing.name}); tag {RETRAIN_TAG}=true retrains")
            return dg.MaterializeResult(metadata={"version": version, "trained_this_run": False,
                                                  "model": dg.MetadataValue.path(str(existing))})
        version = 1 if existing is None else int(existing.stem.rsplit("v", 1)[1]) + 1
        frame = features(warehouse.get(config), config)
        if frame.height < MIN_TRAINING_RECORDS:
            context.log.warning(
                f"{frame.height} validated records: too few to train (need {MIN_TRAINING_RECORDS}); "
                "matching uses the deterministic rules only"
            )
            return dg.MaterializeResult(metadata={"trained_this_run": False, "records": frame.height,
                                                  "mode": "deterministic rules only"})
        trained = train_model(frame, config.customer_schema, config.matching, version, charts_dir=charts)
        path = model_dir(config) / f"match_model_v{version}.json"
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
                "seconds": dg.MetadataValue.json({k: round(v, 2) for k, v in trained.seconds.items()}),
                "model": dg.MetadataValue.path(str(path)),
                "match_weights_chart": dg.MetadataValue.url((charts / "match_weights.html").as_uri()),
                "m_u_parameters_chart": dg.MetadataValue.url((charts / "m_u_parameters.html").as_uri()),
            }
        )

    return _model


def _deterministic(frame: pl.DataFrame, config: ProjectConfig) -> pl.DataFrame:
    matching = config.matching
    return deterministic_pairs(frame, config.customer_schema, matching.deterministic_rules, matching.max_cluster_size).with_columns(
        pl.lit(None, pl.Float64).alias("match_weight"),
        pl.lit(float(config.matching.link_evidence)).alias("evidence"),
        pl.lit(None, pl.Float64).alias("match_probability"),
    )


def _stored(pairs: pl.DataFrame) -> pl.DataFrame:
    """Scored pairs as stored: keys, scores and levels (a struct); the flags come from :func:`_flagged`."""
    gammas = [c for c in pairs.columns if c.startswith("gamma_")]
    # A struct of small ints, not JSON text: at 1M records there are millions of pairs, and
    # BI tools can filter on a level (comparison_levels.email = 3) directly.
    levels = (
        pl.struct(pl.col(g).cast(pl.Int8).alias(g.removeprefix("gamma_")) for g in gammas)
        if gammas else pl.lit(None, pl.Struct({}))
    )
    return pairs.select(
        "source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r",
        "match_weight", "evidence", "match_probability", levels.alias("comparison_levels"),
    )


FLAGS = ("names_disagree", "corroborated")


def _flagged(pairs: pl.DataFrame, config: ProjectConfig, model: dict | None) -> pl.DataFrame:  # type: ignore[type-arg]
    """Pairs with ``names_disagree`` and ``corroborated`` worked out from their stored levels, placed before
    them. Every night's pairs go through here, last night's kept ones too: a change of these rules (a new
    cmdm_pipeline) applies to every pair, not only to those scored again."""
    schema = config.customer_schema
    fields = [f.name for f in pairs.schema["comparison_levels"].fields]  # type: ignore[attr-defined]
    gammas = [f"gamma_{name}" for name in fields]
    levels = pairs.drop(FLAGS, strict=False).with_columns(
        pl.col("comparison_levels").struct.field(n).alias(g) for n, g in zip(fields, gammas)
    )
    if model is None:  # deterministic rules only: no levels to judge by
        flags = [pl.lit(False).alias("names_disagree"), pl.lit(True).alias("corroborated")]
    else:
        flags = [
            names_disagree(
                levels, given_name_attributes(schema), family_name_attributes(schema), swapped_levels(model, schema),
                one_person(model, schema, levels.columns), organisation_names(model, schema),
            ).alias("names_disagree"),
            corroborated(levels, corroborating_levels(model, schema)).alias("corroborated"),
        ]
    rest = [c for c in pairs.columns if c not in FLAGS]
    at = rest.index("comparison_levels")
    return levels.with_columns(flags).select(*rest[:at], *FLAGS, *rest[at:])


def _previous(store, model_version: int | None) -> tuple[pl.DataFrame, pl.DataFrame] | None:  # type: ignore[no-untyped-def]
    """Last run's pairs and record hashes, when they were scored by this same model."""
    tables = store.tables()
    if PAIRS not in tables or CLUSTERS not in tables:
        return None
    pairs = store.read(PAIRS)
    clusters = store.read(CLUSTERS)
    if "record_hash" not in clusters.columns or "corroborated" not in pairs.columns:
        return None
    # Levels as JSON text (an older warehouse) or none (scored without a model) cannot be flagged again
    # by today's rules (_flagged): such a night scores every pair.
    levels = pairs.schema.get("comparison_levels")
    if not isinstance(levels, pl.Struct) or not levels.fields:
        return None
    versions = pairs["model_version"].unique().to_list()
    if pairs.height and versions != [model_version]:
        return None
    return pairs.drop("model_version"), clusters.select(*KEY, "record_hash")


def match_assets(config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(PAIRS, group_name="match", deps=[MODEL, VALIDATED], kinds={"splink", "duckdb"},
                         description="One row per scored record pair with at least the review evidence: keys, match weight, evidence, probability, comparison levels."),
            dg.AssetSpec(REVIEW, group_name="match", deps=[MODEL, VALIDATED], kinds={"duckdb"},
                         description="One row per pair or cluster a data steward should decide: uncertain pairs and clusters too doubtful to merge."),
            dg.AssetSpec(CLUSTERS, group_name="match", deps=[MODEL, VALIDATED], kinds={"duckdb"},
                         description="One row per validated record: the cluster it belongs to and its strongest link inside it."),
        ],
    )
    def _match(context: dg.AssetExecutionContext, warehouse: WarehouseResource):  # type: ignore[no-untyped-def]
        store = warehouse.get(config)
        matching = config.matching
        path = latest_model(config)
        frame = features(store, config)
        ids = frame.select("unique_id", *KEY)
        hashes = frame.select(*KEY, pl.struct(pl.exclude("unique_id", *KEY)).hash(seed=0).alias("record_hash"))
        model = json.loads(path.read_text()) if path else None
        model_version = model[MODEL_VERSION_KEY] if model else None
        full = matching.full_rebuild or context.run.tags.get(FULL_REBUILD_TAG, "").lower() == "true"
        previous = _previous(store, model_version) if model and not full else None
        if model is None:
            stored_pairs = _stored(keyed_pairs(_deterministic(frame, config), ids))
            mode = "deterministic rules (no model)"
        elif previous is None:
            stored_pairs = _stored(keyed_pairs(score_pairs(frame, model, matching), ids))
            mode = "full"
        else:
            old_pairs, old_hashes = previous
            changed = hashes.join(old_hashes, on=[*KEY, "record_hash"], how="anti").select(KEY)
            gone = old_hashes.select(KEY).join(hashes.select(KEY), on=KEY, how="anti")
            touched = pl.concat([changed, gone])
            kept = old_pairs.drop(FLAGS).join(
                touched.rename({"source_system": "source_system_l", "source_record_id": "source_record_id_l"}),
                on=["source_system_l", "source_record_id_l"], how="anti",
            ).join(
                touched.rename({"source_system": "source_system_r", "source_record_id": "source_record_id_r"}),
                on=["source_system_r", "source_record_id_r"], how="anti",
            )
            new_ids = ids.join(changed, on=KEY)["unique_id"]
            fresh = (
                _stored(keyed_pairs(score_new_pairs(frame, new_ids, model, matching), ids))
                if new_ids.len() else kept.head(0)
            )
            stored_pairs = pl.concat([kept, fresh.select(kept.columns)])
            mode = f"incremental: {changed.height} new or changed, {gone.height} gone"
        stored_pairs = _flagged(stored_pairs, config, model).with_columns(
            pl.lit(model_version, dtype=pl.Int64).alias("model_version")
        )
        context.log.info(f"matching mode: {mode}")
        decisions = read_decisions(config.resolve(matching.decisions) if matching.decisions else None)
        must, cannot = decided_edges(decisions, ids)
        nodes = stored_pairs.filter(~pl.col("names_disagree") & pl.col("corroborated")).join(
            ids.rename({"unique_id": "node_l", "source_system": "source_system_l", "source_record_id": "source_record_id_l"}),
            on=["source_system_l", "source_record_id_l"],
        ).join(
            ids.rename({"unique_id": "node_r", "source_system": "source_system_r", "source_record_id": "source_record_id_r"}),
            on=["source_system_r", "source_record_id_r"],
        )
        # Deterministic rules link like steward "same" decisions: at any evidence.
        rule_links = deterministic_pairs(
            frame, config.customer_schema, matching.deterministic_rules, matching.max_cluster_size
        ).select(
            pl.col("unique_id_l").alias("node_l"), pl.col("unique_id_r").alias("node_r"),
            pl.lit(MUST_LINK_WEIGHT).alias("weight"),
        )
        edges = pl.concat([nodes.select("node_l", "node_r", pl.col("evidence").alias("weight")), rule_links, must])
        clusters = cluster_pairs(
            ids["unique_id"], edges,
            ClusterSettings(matching.link_evidence, matching.max_cluster_size, matching.min_cluster_density),
            cannot_link=cannot,
        )
        members = (
            clusters.nodes.join(ids, left_on="node", right_on="unique_id")
            .join(hashes, on=KEY)
            .select(*KEY, "cluster", "link_confidence", "record_hash")
        )
        pair_queue = review_queue(stored_pairs, decisions, matching.link_evidence, matching.review_evidence)
        pair_queue = open_questions(pair_queue, members)
        cluster_queue = clusters.doubtful.with_row_index("n").explode("nodes").join(
            ids, left_on="nodes", right_on="unique_id"
        ).group_by("n", "reason").agg(pl.concat_str(KEY, separator=":").sort().alias("records"))
        queue = pl.concat(
            [
                pair_queue.select(pl.lit("pair").alias("review_type"), "source_system_l", "source_record_id_l",
                                  "source_system_r", "source_record_id_r",
                                  pl.concat_list(pl.concat_str("source_system_l", "source_record_id_l", separator=":"),
                                                 pl.concat_str("source_system_r", "source_record_id_r", separator=":")).alias("records"),
                                  "evidence", "match_probability", "comparison_levels", "review_reason"),
                cluster_queue.select(pl.lit("cluster").alias("review_type"), pl.lit(None, pl.String).alias("source_system_l"),
                                     pl.lit(None, pl.String).alias("source_record_id_l"), pl.lit(None, pl.String).alias("source_system_r"),
                                     pl.lit(None, pl.String).alias("source_record_id_r"), "records",
                                     pl.lit(None, pl.Float64).alias("evidence"), pl.lit(None, pl.Float64).alias("match_probability"),
                                     pl.lit(None, pair_queue.schema["comparison_levels"]).alias("comparison_levels"),
                                     pl.col("reason").alias("review_reason")),
            ],
            how="vertical_relaxed",
        )
        store.replace({PAIRS: stored_pairs, REVIEW: queue, CLUSTERS: members})
        sizes = members.group_by("cluster").agg(pl.len().alias("size"))
        linked = stored_pairs.filter(
            (pl.col("evidence") >= matching.link_evidence) & ~pl.col("names_disagree") & pl.col("corroborated")
        ).height
        context.log.info(f"{stored_pairs.height} pairs scored, {linked} linked, {sizes.height} clusters, {queue.height} to review")
        band = (pl.col("evidence") >= matching.review_evidence) & (pl.col("evidence") < matching.link_evidence)
        yield dg.MaterializeResult(asset_key=PAIRS, metadata={
            "dagster/row_count": stored_pairs.height, "pairs_linked": linked,
            "pairs_in_review_band": stored_pairs.filter(band).height,
            "pairs_kept_apart_names_differ": stored_pairs.filter(pl.col("names_disagree")).height,
            "pairs_uncorroborated": stored_pairs.filter(~pl.col("corroborated")).height,
            "mode": mode, "model_version": model_version or "none (deterministic rules)"})
        yield dg.MaterializeResult(asset_key=REVIEW, metadata={
            "dagster/row_count": queue.height,
            "pairs_to_review": pair_queue.height, "clusters_to_review": cluster_queue.height})
        yield dg.MaterializeResult(asset_key=CLUSTERS, metadata={
            "dagster/row_count": members.height, "clusters": sizes.height,
            "largest_cluster": int(sizes["size"].max() or 0),
            "singletons": sizes.filter(pl.col("size") == 1).height,
            # Share of records that matched at least one other record.
            "match_rate": round(sizes.filter(pl.col("size") > 1)["size"].sum() / max(members.height, 1), 4),
            "cluster_size_distribution": dg.MetadataValue.json(
                {str(k): v for k, v in sizes.group_by("size").len().sort("size").iter_rows()}),
            "steward_decisions": decisions.height})

    return _match
