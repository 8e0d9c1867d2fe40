"""Lens file-key generations: rotation by `cmdm lenses key NAME --rotate`, and what each publication used.

A lens's file key is a data key of owner ``lens/<name>`` (generation 1) or ``lens/<name>/<n>`` (generation
*n*, after rotations). Table ``lens_keys`` (append-only, ids only) holds one row per event: ``created``
(a rotation made generation *n*) and ``published`` (the first publication that encrypted the lens's file
with generation *n*). So:

- the next publication uses the **latest** generation created (1 if the lens was never rotated);
- `cmdm lenses key NAME` prints the key of the generation **last published**, the one that opens the file
  in place: after a rotation it keeps printing the old key until the next publication replaces the file;
- once a publication with generation *n* is recorded, the lens's older generations are destroyed in the
  key store (and the store rebuilt): copies of older files can no longer be opened with a key from it.

Tokens do not change with a rotation: their HMAC key is derived from the blind-index root key and the
lens name (:func:`cmdm_pipeline.protect.lenses.build.token_key`), so an area's joins across runs keep working.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.protect.audit import append_audit, pipeline_actor
from cmdm_pipeline.protect.keys.keystore import KeyStore
from cmdm_pipeline.protect.lenses.build import key_owner, load_lens_keys
from cmdm_pipeline.warehouse import Warehouse

LENS_KEYS = "lens_keys"
UTC = pl.Datetime("us", "UTC")
EVENT_COLUMNS: dict[str, pl.DataType] = {
    "event_id": pl.String(),  # <lens>|<generation>|<event>
    "lens": pl.String(),
    "generation": pl.Int64(),
    "key_owner": pl.String(),
    "event": pl.String(),  # created | published
    "event_time": UTC,
    "run_id": pl.String(),  # the publishing run (null for a rotation)
    "actor": pl.String(),
}
_AUDIT_INPUT: dict[str, pl.DataType] = {"event_time": UTC, "run_id": pl.String(), "actor": pl.String(),
                                        "action": pl.String(), "master_id": pl.String(), "detail": pl.String()}


@dataclass(frozen=True)
class Generations:
    latest: dict[str, int]  # lens -> the generation the next publication uses (absent: 1)
    published: dict[str, int]  # lens -> the generation of the last recorded publication (absent: none)

    def current(self, lens: str) -> int:
        """The generation whose key opens the lens's published file: 1 if no publication was recorded, since
        only a recorded publication uses a later one."""
        return self.published.get(lens, 1)


@dataclass(frozen=True)
class RotatedKey:
    lens: str
    generation: int
    previous: int
    key_owner: str
    data_key_id: str  # hex: an id, not key material


def read_generations(store: Warehouse) -> Generations:
    """Latest and last-published generation per lens, from ``lens_keys`` (empty before any event)."""
    if LENS_KEYS not in store.tables():
        return Generations({}, {})
    events = store.read(LENS_KEYS, ["lens", "generation", "event"])

    def highest(event: str) -> dict[str, int]:
        found = events.filter(pl.col("event") == event).group_by("lens").agg(pl.col("generation").max())
        return dict(found.iter_rows())

    return Generations(highest("created"), highest("published"))


def rotate_lens_key(config: ProjectConfig, keys: KeyStore, lens: str, actor: str,
                    now: dt.datetime | None = None) -> RotatedKey:
    """Create the next generation of ``lens``'s file key and record it (``lens_keys`` and a
    ``lens_key_rotated`` audit row, one transaction). The lens must have a key already (a first run made it):
    otherwise :class:`~cmdm_pipeline.protect.keys.kek.KeyMissingError`. Retried after a failure, it reuses the
    key it made."""
    now = now or dt.datetime.now(dt.UTC)
    store = Warehouse(config.warehouse_path)
    previous = read_generations(store).latest.get(lens, 1)
    load_lens_keys(keys, [lens], create=False, generations={lens: previous})
    owner = key_owner(lens, previous + 1)
    made = keys.keys_for_owners(pl.Series("owner", [owner]), create=True)
    rotated = RotatedKey(lens, previous + 1, previous, owner, made.key_ids[0].hex())
    detail = {"lens": lens, "generation": rotated.generation, "previous_generation": previous, "key_owner": owner,
              "data_key_id": rotated.data_key_id}
    row = pl.DataFrame([{"event_time": now, "run_id": None, "actor": actor, "action": "lens_key_rotated",
                         "master_id": None, "detail": json.dumps(detail, sort_keys=True)}], schema=_AUDIT_INPUT)
    event = _events([(lens, rotated.generation)], "created", None, actor, now)
    append_audit(store, row, append={LENS_KEYS: (event, "event_id")}, logged_at=now)
    return rotated


@dataclass(frozen=True)
class Publication:
    """What one lens's publication put where: names and counts, never values."""

    lens: str
    rows: int
    columns: list[str]
    targets: list[str]  # file formats, and "postgresql"
    encrypted: bool


def record_publications(store: Warehouse, keys: KeyStore, publications: Sequence[Publication],
                        generations: Generations, run_id: str, now: dt.datetime) -> int:
    """One ``lens_published`` audit row per lens and the ``published`` generation events, in one
    transaction; then the lenses' older file keys are destroyed. Returns how many keys were destroyed."""
    detail = [{"lens": p.lens, "rows": p.rows, "columns": p.columns, "targets": p.targets, "encrypted": p.encrypted,
               "key_generation": generations.latest.get(p.lens, 1)} for p in publications]
    rows = pl.DataFrame([{"event_time": now, "run_id": run_id, "actor": pipeline_actor(run_id), "action": "lens_published",
                          "master_id": None, "detail": json.dumps(d, sort_keys=True)} for d in detail], schema=_AUDIT_INPUT)
    used = [(p.lens, generations.latest.get(p.lens, 1)) for p in publications]
    append_audit(store, rows, append={LENS_KEYS: (_events(used, "published", run_id, pipeline_actor(run_id), now),
                                                  "event_id")}, logged_at=now)
    return retire_older_keys(keys, used)


def retire_older_keys(keys: KeyStore, used: Sequence[tuple[str, int]]) -> int:
    """Destroy the file keys of every generation older than the one each lens was just published with."""
    owners = [key_owner(lens, g) for lens, generation in used for g in range(1, generation)]
    if not owners:
        return 0
    destroyed = keys.destroy(owners, compact=False)
    if destroyed:
        keys.compact()  # a destroyed key's bytes stay in the file until it is rebuilt
    return destroyed


def _events(used: Sequence[tuple[str, int]], event: str, run_id: str | None, actor: str, now: dt.datetime) -> pl.DataFrame:
    return pl.DataFrame(
        [{"event_id": f"{lens}|{generation}|{event}", "lens": lens, "generation": generation,
          "key_owner": key_owner(lens, generation), "event": event, "event_time": now, "run_id": run_id, "actor": actor}
         for lens, generation in used],
        schema=EVENT_COLUMNS,
    )
