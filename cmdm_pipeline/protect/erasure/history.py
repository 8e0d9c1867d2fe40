"""A subject's values in *other* masters' history: which versions hold them, and the table that tells.

A source record wrongly merged into somebody else's master M, and later split off, leaves its values in
M's old versions of ``golden_customers_history``, encrypted under M's data key, which erasure does not
destroy (M is somebody else). Neither table says which records a closed version drew on:
``golden_attribute_lineage`` holds the winners of the *current* versions only, and a version's row holds
values, not where they came from. So the erasure step keeps that record itself:

**``golden_history_sources``**: one row per history version (``master_id``, ``valid_from``) × source
record it drew on (ids only). After the golden step writes the history, and again at the start of every
run before any request is resolved (for warehouses written before this table existed),
:func:`record_history_sources` adds the current versions with the records of their masters in
``customer_xref`` (members: counts, source lists and survey answers come from every member) and in
``golden_attribute_lineage`` (winners, written in the same transaction as the history, so always in step
with it); rows already there are kept, so a version current over several runs lists every record it drew
on in any of them.

**What erasure removes** (:func:`copied_versions`): every version of a master outside the subject's own
that lists one of the subject's records. The version rows are *deleted*, not blanked: a version is one
statement of what the master said during its validity, and a blanked cell would state a null that was
never true; a deleted version states nothing. The master's other versions stay. Deleted rows are counted
per table in ``erasure_log.rows_removed`` and gone from the file with the rebuild. A master *every*
version of which goes (:func:`wholly_copied`: an id that only ever described the subject's records,
such as their first master, merged into the one they were wrongly joined to) is erased as one of the
subject's own: its key destroyed, its lineage and audit rows deleted.

**Versions with no row here** were written before this table existed. For them ``master_id_lineage`` is the only evidence: a split
into one of the subject's masters from M means the subject's records were in M until that split. Every
unlisted version of such an M valid between the first time any of the subject's records was seen
(``customer_xref.first_seen``) and that split is removed too; more than one split away is not followed.
"""

from __future__ import annotations

import polars as pl

from cmdm_pipeline.sql import statement
from cmdm_pipeline.warehouse import Warehouse

HISTORY_SOURCES = "golden_history_sources"
HISTORY, XREF, ATTRIBUTE_LINEAGE = "golden_customers_history", "customer_xref", "golden_attribute_lineage"

UTC = pl.Datetime("us", "UTC")
_KEY = ["source_system", "source_record_id"]
VERSION_KEY: dict[str, pl.DataType] = {"master_id": pl.String(), "valid_from": UTC}
SOURCE_COLUMNS: dict[str, pl.DataType] = {**VERSION_KEY, "source_system": pl.String(), "source_record_id": pl.String()}
VERSION_COLUMNS: dict[str, pl.DataType] = {**VERSION_KEY, "valid_to": UTC}


def record_history_sources(store: Warehouse) -> int:
    """Add the current history versions' records to ``golden_history_sources``; returns the rows added."""
    tables = set(store.tables())
    sources = [name for name in (XREF, ATTRIBUTE_LINEAGE) if name in tables]
    if HISTORY not in tables or not sources:
        return 0
    added = 0
    with store.connect() as con:
        con.begin()
        try:
            con.execute(statement("erasure/create_history_sources", table=HISTORY_SOURCES))
            for name in sources:
                found = con.execute(statement("erasure/insert_history_sources", table=HISTORY_SOURCES,
                                              history=HISTORY, sources=name)).fetchall()
                added += int(found[0][0])
            con.commit()
        except BaseException:
            con.rollback()
            raise
    return added


def copied_versions(records: pl.DataFrame, family: list[str], known_sources: pl.DataFrame, versions: pl.DataFrame,
                    lineage: pl.DataFrame, xref: pl.DataFrame) -> pl.DataFrame:
    """(master_id, valid_from) of every version of a master outside ``family`` that may hold a value of
    ``records`` (source_system, source_record_id): listed in ``known_sources``, or found by the lineage
    fallback of the module docstring. ``versions``: master_id, valid_from, valid_to of the history."""
    listed = known_sources.join(records, on=_KEY, how="semi").select(list(VERSION_KEY))
    unlisted = _unlisted_versions(records, family, known_sources, versions, lineage, xref)
    found = pl.concat([listed.cast(VERSION_KEY), unlisted.cast(VERSION_KEY)])  # type: ignore[arg-type]
    return found.filter(~pl.col("master_id").is_in(family)).unique().sort(list(VERSION_KEY))


def wholly_copied(copied: pl.DataFrame, versions: pl.DataFrame) -> list[str]:
    """Masters every version of which is in ``copied``: ids that only ever described the subject's records
    (typically their own first master, later merged into somebody else's)."""
    every = versions.group_by("master_id").agg(pl.len().alias("__all"))
    hit = copied.group_by("master_id").agg(pl.len().alias("__hit"))
    return sorted(hit.join(every, on="master_id").filter(pl.col("__hit") == pl.col("__all"))["master_id"].to_list())


def _unlisted_versions(records: pl.DataFrame, family: list[str], known_sources: pl.DataFrame,
                       versions: pl.DataFrame, lineage: pl.DataFrame, xref: pl.DataFrame) -> pl.DataFrame:
    if versions.is_empty() or "recorded_at" not in lineage.columns or records.is_empty():
        return pl.DataFrame(schema=VERSION_KEY)
    left = lineage.filter((pl.col("event") == "split") & pl.col("master_id").is_in(family)).group_by(
        pl.col("related_master_id").alias("master_id")).agg(pl.col("recorded_at").max().alias("__until"))
    seen = xref.join(records, on=_KEY, how="semi")["first_seen"].min() if "first_seen" in xref.columns else None
    since = pl.lit(seen, dtype=UTC) if seen is not None else pl.lit(None, dtype=UTC)
    listed = known_sources.select(list(VERSION_KEY)).unique()
    return versions.join(left, on="master_id").join(listed, on=list(VERSION_KEY), how="anti").filter(
        (pl.col("valid_from") < pl.col("__until"))
        & (pl.col("valid_to").is_null() | since.is_null() | (pl.col("valid_to") > since))
    ).select(list(VERSION_KEY))
