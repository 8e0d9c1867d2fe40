"""Publish what BI reads from the warehouse as it is now: every configured lens (files, PostgreSQL
schemas, audit) and the report tables BI needs beside them (:data:`REPORTS`, as Parquet).

The publish step calls it at the end of a run; erasure calls it too, once the subject's rows are deleted,
so lens and report files are replaced by a publication without the subject (never just removed).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cmdm_pipeline.config import Lens, ProjectConfig
from cmdm_pipeline.protect.keys.keystore import KeyStore
from cmdm_pipeline.protect.lenses.build import (
    PublishedLens,
    build_lens,
    lens_folder,
    load_lens_keys,
    publish_files,
    report_folder,
    token_key,
)
from cmdm_pipeline.protect.lenses.keys import Generations, Publication, read_generations, record_publications
from cmdm_pipeline.stages.match_model import latest_model
from cmdm_pipeline.warehouse import Warehouse
from cmdm_pipeline.web.snapshot import SNAPSHOT_TABLES, publish_snapshot, snapshot_folder

GOLDEN, CONSENT_CURRENT = "golden_customers", "consent_current"
#: Tables published for BI as they are: counts, quality metrics, and the review queue's record ids, scores and
#: comparison levels (never an attribute value; erasure deletes a subject's rows there and republishes).
REPORTS = ("quality_report", "run_reconciliation", "match_review_queue")


@dataclass(frozen=True)
class LensPublication:
    lenses: list[Lens]  # those built and published
    published: list[PublishedLens]
    schemas: dict[str, str]  # lens -> "schema (role role)" in PostgreSQL
    generations: Generations
    old_keys_destroyed: int
    reports: dict[str, tuple[Path, int]]  # table -> (Parquet file, rows)
    snapshot: Path | None  # the workbench snapshot's manifest (None: no keyring to encrypt it with)


def publish_lenses(store: Warehouse, config: ProjectConfig, key_store: KeyStore, run_id: str,
                   now: dt.datetime) -> LensPublication:
    """Build every lens from ``golden_customers`` (and ``consent_current``) and publish it with the
    :data:`REPORTS` the warehouse holds, all files or none."""
    generations = read_generations(store)
    keys = load_lens_keys(key_store, [lens.name for lens in config.lenses], generations=generations.latest)
    built, golden, consent = [], None, None
    if config.lenses:
        golden = store.read(GOLDEN)
        consent = store.read(CONSENT_CURRENT) if config.consent else None
        built = [(lens, build_lens(golden, consent, lens, config.customer_schema, keys[lens.name].token))
                 for lens in config.lenses]
    tables = set(store.tables())
    reports = {name: store.read(name) for name in REPORTS if name in tables}
    published = publish_files(built, lens_folder(config), keys, config.customer_schema, reports)
    folder = report_folder(lens_folder(config))
    schemas = {}
    if config.lenses_target is not None:
        from cmdm_pipeline.protect.lenses.postgres import publish_postgres

        schemas = {p.name: f"{p.schema} (role {p.role})" for p in publish_postgres(built, config.lenses_target)}
    retired = record_publications(store, key_store, _publications(built, published, schemas), generations,
                                  run_id, now) if published else 0
    # The golden records and the lenses go before the snapshot reads its tables (the validated records among them).
    lenses = [lens for lens, _ in built]
    del built, golden, consent
    snapshot = _publish_snapshot(store, config, key_store, tables, run_id, now)
    return LensPublication(lenses, published, schemas, generations, retired,
                           {name: (folder / f"{name}.parquet", frame.height) for name, frame in reports.items()},
                           snapshot)


def _publish_snapshot(store: Warehouse, config: ProjectConfig, key_store: KeyStore, tables: set[str], run_id: str,
                      now: dt.datetime) -> Path | None:
    """What `cmdm serve` reads (:mod:`cmdm_pipeline.web.snapshot`), so the web app never opens the warehouse."""
    if key_store.keyring is None:
        return None
    frames = {name: functools.partial(store.read, name) for name in SNAPSHOT_TABLES if name in tables}
    latest = latest_model(config.warehouse_path)
    model = json.loads(latest.read_text(encoding="utf-8")) if latest else None
    token_keys = {lens.name: token_key(key_store, lens.name) for lens in config.lenses}
    return publish_snapshot(frames, model, snapshot_folder(config.warehouse_path), key_store.keyring, run_id, now,
                            token_keys)


def _publications(built: list[tuple[Lens, pl.DataFrame]], published: list[PublishedLens],
                  schemas: dict[str, str]) -> list[Publication]:
    frames = {lens.name: frame for lens, frame in built}
    return [Publication(p.name, p.rows, frames[p.name].columns,
                        [*p.files, *(["postgresql"] if p.name in schemas else [])], p.encrypted) for p in published]
