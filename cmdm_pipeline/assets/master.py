"""Mastering assets: stable master ids (``customer_xref``), golden records, lineage and history."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.erasure.history import record_history_sources
from cmdm_pipeline.protect.keys.at_rest import AtRest, plaintext_personal_columns, warehouse_keys
from cmdm_pipeline.protect.keys.blind_index import version_digests
from cmdm_pipeline.protect.keys.keystore import KeyStore
from cmdm_pipeline.protect.lookup import INDEX_ORDER, LOOKUP_INDEX, lookup_index
from cmdm_pipeline.resources import WarehouseResource
from cmdm_pipeline.stages.history import CURRENT_VERSION_COLUMNS, VERSION_DIGEST, value_columns, with_version_start
from cmdm_pipeline.stages.master import KEY, LINEAGE_COLUMNS, assign_master_ids, highest_issued, sequence_row
from cmdm_pipeline.stages.survivorship import golden_of_masters, linked_golden_records
from cmdm_pipeline.tables import (
    ABSENT,
    ATTRIBUTE_LINEAGE,
    CLUSTERS,
    GOLDEN,
    HISTORY,
    ID_LINEAGE,
    ID_SEQUENCE,
    VALIDATED,
    XREF,
)
from cmdm_pipeline.warehouse import Versions, Warehouse

#: Golden records are built from about this many records at a time (all of a master's records together).
GOLDEN_PART_RECORDS = 1_000_000


def master_id_assets(config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="assign_master_ids",
        specs=[
            dg.AssetSpec(XREF, group_name="master", deps=[CLUSTERS], kinds={"duckdb"},
                         description="One row per source record: its master_id (stable across runs), link confidence, first and last seen. Join on source_system + source_record_id."),
            dg.AssetSpec(ID_LINEAGE, group_name="master", deps=[CLUSTERS], kinds={"duckdb"},
                         description="One row per master id retired by a merge or created by a split, every run kept."),
            dg.AssetSpec(ABSENT, group_name="master", deps=[CLUSTERS], kinds={"duckdb"},
                         description="One row per source record known from an earlier run but missing from the latest: "
                                     "the master_id it keeps (so it gets it back when it returns), first and last seen."),
        ],
    )
    def _ids(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        store = warehouse.get(config)
        clusters = store.read(CLUSTERS)
        tables = store.tables()
        previous = store.read(XREF) if XREF in tables else None
        run_id, now = context.run.run_id, dt.datetime.now(dt.UTC)
        history = store.read(ID_LINEAGE).filter(pl.col("run_id") != run_id) if ID_LINEAGE in tables else pl.DataFrame(schema=LINEAGE_COLUMNS)
        issued = highest_issued(store.read(ID_SEQUENCE) if ID_SEQUENCE in tables else None, history)
        absent = store.read(ABSENT) if ABSENT in tables else None
        result = assign_master_ids(clusters, previous, run_id, now, issued, absent)
        store.replace({XREF: result.xref, ABSENT: result.absent, ID_LINEAGE: pl.concat([history, result.lineage]),
                       ID_SEQUENCE: sequence_row(result.highest_issued, run_id, now)})
        masters = result.xref["master_id"].n_unique()
        events = dict(result.lineage.group_by("event").len().iter_rows())
        per_master = result.xref.group_by("master_id").len()["len"]
        yield dg.MaterializeResult(asset_key=XREF, metadata={
            "dagster/row_count": result.xref.height, "masters": masters,
            "records_per_master": round(result.xref.height / masters, 3) if masters else 0.0,
            "masters_with_several_records": int((per_master > 1).sum())})
        returned = 0 if absent is None else result.xref.join(absent.select(KEY), on=KEY).height
        yield dg.MaterializeResult(asset_key=ABSENT, metadata={
            "dagster/row_count": result.absent.height, "returned_this_run": returned,
            "masters_without_present_records": result.absent.join(result.xref, on="master_id", how="anti")["master_id"].n_unique()})
        yield dg.MaterializeResult(asset_key=ID_LINEAGE, metadata={"dagster/row_count": result.lineage.height + history.height,
                                                                  "merged_this_run": events.get("merged", 0),
                                                                  "split_this_run": events.get("split", 0)})

    return _ids


def golden_assets(config: ProjectConfig) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name="build_golden_records",
        specs=[
            dg.AssetSpec(GOLDEN, group_name="master", deps=[XREF, VALIDATED], kinds={"duckdb"},
                         description="One row per master customer: every attribute chosen by its survivorship rule, plus record and source counts, and valid_from: since when this version holds."),
            dg.AssetSpec(ATTRIBUTE_LINEAGE, group_name="master", deps=[XREF, VALIDATED], kinds={"duckdb"},
                         description="One row per master and attribute: the source record whose value won, and the rule that chose it."),
            dg.AssetSpec(HISTORY, group_name="master", deps=[XREF, VALIDATED], kinds={"duckdb"},
                         description="One row per version of a golden record: valid_from, valid_to (null = current), run_id."),
            dg.AssetSpec(LOOKUP_INDEX, group_name="master", deps=[XREF, VALIDATED], kinds={"duckdb"},
                         description="One row per record and e-mail, phone or personal id it holds: the value's blind index "
                                     "(keyed HMAC) and the record's master_id. `cmdm lookup` finds customers with it."),
        ],
    )
    def _golden(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        store = warehouse.get(config)
        # The index needs the index key even where tables are stored in plaintext.
        keys = warehouse_keys(store, config)
        golden, lineage, index = golden_tables(store, config, keys, GOLDEN_PART_RECORDS)
        now = dt.datetime.now(dt.UTC)
        golden = write_golden(store, golden, {ATTRIBUTE_LINEAGE: lineage, LOOKUP_INDEX: index}, keys, now, context.run.run_id)
        history = store.query(f"SELECT count(*) AS versions, count(*) FILTER (valid_to IS NULL) AS current FROM {HISTORY}")  # noqa: S608 - a constant name
        # Here too, not only in the erasure step: a run that skips that step must not leave versions unlisted.
        record_history_sources(store)
        by_party = dict(golden.group_by("party_type").len().iter_rows())
        yield dg.MaterializeResult(asset_key=GOLDEN, metadata={
            "dagster/row_count": golden.height, "by_party_type": dg.MetadataValue.json(by_party),
            "masters_from_several_sources": golden.filter(pl.col("source_count") > 1).height})
        yield dg.MaterializeResult(asset_key=ATTRIBUTE_LINEAGE, metadata={
            "dagster/row_count": lineage.height,
            "values_by_rule": dg.MetadataValue.json(dict(lineage.group_by("rule").len().sort("rule").iter_rows()))})
        yield dg.MaterializeResult(asset_key=HISTORY, metadata={
            "dagster/row_count": history["versions"][0], "current_versions": history["current"][0],
            "versions_begun": golden.filter(pl.col("valid_from") == now).height})
        yield dg.MaterializeResult(asset_key=LOOKUP_INDEX, metadata={
            "dagster/row_count": index.height,
            "values_by_kind": dg.MetadataValue.json(dict(index.group_by("kind").len().sort("kind").iter_rows()))})

    return _golden


def golden_tables(
    store: Warehouse, config: ProjectConfig, keys: KeyStore, part_records: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The golden records, their attribute lineage and the lookup index, built from about ``part_records`` validated
    records at a time (:func:`records_by_master`)."""
    parts, indexes = [], []
    for records in records_by_master(store, part_records):
        parts.append(golden_of_masters(records, config.customer_schema, config.survivorship))
        indexes.append(lookup_index(records, config.customer_schema, keys))
        del records  # the largest frame here: the next part needs the memory
    golden, lineage = linked_golden_records(parts, config.customer_schema)
    return golden, lineage, pl.concat(indexes).sort(INDEX_ORDER)


def records_by_master(store: Warehouse, part_records: int) -> Iterator[pl.DataFrame]:
    """The validated records with their ``master_id``, about ``part_records`` at a time, every record of a master
    in the same part, so that the validated records are never all in memory at once."""
    xref = store.read(XREF, [*KEY, "master_id"])
    parts = max(1, -(-xref.height // part_records))
    part = xref["master_id"].hash() % parts
    for number in range(parts):
        chosen = xref.filter(part == number)
        yield store.read(VALIDATED, rows=chosen.select(KEY)).join(chosen, on=KEY)


def write_golden(
    store: Warehouse, golden: pl.DataFrame, others: dict[str, pl.DataFrame], keys: KeyStore, now: dt.datetime, run_id: str
) -> pl.DataFrame:
    """Store the golden records (each with its ``version_digest`` and ``valid_from``) and ``others`` in one
    transaction, the history brought up to date in it; returns the golden records as stored (plaintext)."""
    columns, (stored, encrypted) = value_columns(golden), store.column_types()
    golden = golden.with_columns(version_digests(golden, columns, keys))
    golden = with_version_start(golden, current_versions(store, stored, columns, keys), now)
    resealed = history_to_reseal(store, stored, encrypted)
    tables = {**({HISTORY: resealed} if resealed is not None else {}), GOLDEN: golden, **others}
    store.replace(tables, versions=Versions(HISTORY, GOLDEN, now, run_id))
    return golden


def history_to_reseal(
    store: Warehouse, stored: dict[str, dict[str, str]], encrypted: dict[str, set[str]]
) -> pl.DataFrame | None:
    """The whole history, when a personal column of it is stored in plaintext (encryption was switched on
    since it was written): it is then sealed again, once, in the same transaction as the golden records.
    ``stored``, ``encrypted``: :meth:`Warehouse.column_types`."""
    if not isinstance(store.at_rest, AtRest) or HISTORY not in stored:
        return None
    if not plaintext_personal_columns(store.at_rest, {HISTORY: stored[HISTORY]}, encrypted):
        return None
    return store.read(HISTORY)


def current_versions(
    store: Warehouse, stored: dict[str, dict[str, str]], columns: list[str], keys: KeyStore
) -> pl.DataFrame | None:
    """master_id, valid_from and version_digest of every master's current version, read without decrypting.

    ``stored``: every table's columns (:meth:`Warehouse.column_types`). A warehouse written before versions
    had digests gets them once from its decrypted current versions.
    """
    if VERSION_DIGEST in stored.get(GOLDEN, {}):
        return store.query(f"SELECT {', '.join(CURRENT_VERSION_COLUMNS)} FROM {GOLDEN}")  # noqa: S608 - constant names
    if HISTORY not in stored:
        return None
    current = store.read(HISTORY, where=pl.col("valid_to").is_null())
    current = current.with_columns(pl.lit(None).alias(c) for c in columns if c not in current.columns)
    return current.with_columns(version_digests(current, columns, keys)).select(CURRENT_VERSION_COLUMNS)
