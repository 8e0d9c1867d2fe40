"""Purpose lenses: what one business area sees of the golden records, published for BI tools.

A lens (``lenses:`` in ``cmdm.yaml``) picks golden-record columns and treats each one: ``reveal`` (as it
is), ``mask`` (a readable hint such as ``j***@example.com``) or ``tokenise`` (a keyed HMAC, stable across
runs, so the area can count and join without seeing the value). Rows are the masters that granted the
lens's consent purpose (``consent_current``; no row there means not granted) and pass its row filters,
which are data (column -> allowed values), never SQL.

Everything here is pure Polars on plaintext frames: the asset reads ``golden_customers`` and
``consent_current`` through the warehouse (which decrypts) and hands them in. Publishing is in
:func:`publish_files`; PostgreSQL in :mod:`cmdm_pipeline.protect.lenses.postgres`.

**Keys.** Each lens has its own random AES-256 *file key*, a data key in the key store (owner
``lens/<name>``, wrapped by the KEK like every data key): it encrypts the lens's Parquet file when the lens
reveals personal data, and ``cmdm lenses key <name>`` prints it for the area that owns the lens.
``cmdm lenses key <name> --rotate`` makes the next generation (owner ``lens/<name>/<n>``), used from the
next publication on; :mod:`cmdm_pipeline.protect.lenses.keys` keeps track of generations. Tokens use
an HMAC key derived (HKDF) from the blind-index root key with the lens name in the info string: stable
across runs, KEK rotations and file-key rotations, different per lens, so two areas cannot join their tokens.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pqe

from cmdm_pipeline.config import Lens, LensFormat, ProjectConfig
from cmdm_pipeline.faults import crash_point
from cmdm_pipeline.protect.keys.blind_index import derive_key, keyed_digests
from cmdm_pipeline.protect.keys.keystore import KeyStore
from cmdm_pipeline.schema import CustomerSchema, Kind
from cmdm_pipeline.sql import statement

#: The table name inside every lens output (DuckDB file, PostgreSQL schema).
LENS_TABLE = "customers"
#: Added to a lens with a purpose but no channel: the channels the master granted that purpose on.
CONSENT_CHANNELS = "consent_channels"
LENS_FOLDER = "lenses"
#: Beside the lens folder: warehouse tables BI reads as Parquet (no personal values: counts, metrics, record ids).
REPORT_FOLDER = "published"
_EXTENSIONS: dict[LensFormat, str] = {"duckdb": ".duckdb", "parquet": ".parquet", "csv": ".csv"}
#: A cell a spreadsheet would run as a formula (OWASP "CSV injection"): these first characters, judged
#: after NFKC because spreadsheets read a full-width ＝ as =.
_FORMULA_START = r"^[=+\-@\t\r\n]"


class LensError(Exception):
    """A lens cannot be built or published; the message names the lens and the column, never values."""


@dataclass(frozen=True)
class LensKeys:
    """One lens's secrets: the HMAC key of its tokens and the AES-256 key of its encrypted Parquet file."""

    token: bytes = field(repr=False)
    file: bytes = field(repr=False)


def key_owner(lens_name: str, generation: int = 1) -> str:
    """The key-store owner of a lens's file key: ``lens/<name>``, and ``lens/<name>/<n>`` once rotated."""
    return f"lens/{lens_name}" if generation == 1 else f"lens/{lens_name}/{generation}"


def lens_folder(config: ProjectConfig) -> Path:
    return config.warehouse_path.parent / LENS_FOLDER


def token_key(keys: KeyStore, lens_name: str) -> bytes:
    """The HMAC key of a lens's tokens (derived, so it never changes with the file key's generation)."""
    return derive_key(keys.index_key(), f"lens token|{lens_name}")


def load_lens_keys(
    keys: KeyStore, names: Sequence[str], create: bool = True, generations: Mapping[str, int] | None = None
) -> dict[str, LensKeys]:
    """Each lens's keys, the file key of its ``generations`` entry (default 1); file keys missing from the
    key store are created (``create``) or an error."""
    if not names:
        return {}
    generation = generations or {}
    owners = pl.Series("owner", [key_owner(n, generation.get(n, 1)) for n in names])
    found = keys.keys_for_owners(owners, create=create)
    return {
        name: LensKeys(token=token_key(keys, name), file=found.keys[position])
        for name, position in zip(names, found.index.to_list(), strict=True)
    }


def revealed_pii(lens: Lens, schema: CustomerSchema) -> list[str]:
    """The personal-data attributes this lens shows in plaintext."""
    return [c for c, t in lens.columns.items() if t == "reveal" and c in schema.attributes and schema.attributes[c].pii]


def lens_formats(lens: Lens, schema: CustomerSchema) -> list[LensFormat]:
    """The files a lens is published as (config validation keeps a revealing lens to encrypted Parquet)."""
    if lens.formats is not None:
        return list(lens.formats)
    return ["parquet"] if revealed_pii(lens, schema) else ["duckdb", "parquet"]


def treatments(lens: Lens) -> dict[str, str]:
    """Column -> treatment in output order: ``master_id`` first (revealed unless the lens says otherwise)."""
    return {"master_id": lens.columns.get("master_id", "reveal"), **{c: t for c, t in lens.columns.items() if c != "master_id"}}


# --- building ----------------------------------------------------------------------------------------


def build_lens(
    golden: pl.DataFrame, consent: pl.DataFrame | None, lens: Lens, schema: CustomerSchema, token_key: bytes | None
) -> pl.DataFrame:
    """One row per master the lens shows, its columns treated; sorted by master id.

    ``consent`` is ``consent_current`` (master × purpose × channel, ``granted``); it is needed when the
    lens has a purpose. ``token_key`` is needed when a column is tokenised.
    """
    frame = golden
    if lens.purpose is not None:
        if consent is None:
            raise LensError(f"lens {lens.name!r} needs consent purpose {lens.purpose!r}, but there is no consent_current")
        frame = frame.join(granted_masters(consent, lens.purpose, lens.channel), on="master_id", how="inner")
    frame = frame.filter(row_filter(lens, frame.schema))
    frame = frame.sort("master_id")
    columns = treatments(lens)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LensError(f"lens {lens.name!r}: golden_customers has no column(s) {', '.join(missing)}")
    if "tokenise" in columns.values() and token_key is None:
        raise LensError(f"lens {lens.name!r} tokenises columns but has no token key")
    out = frame.select(
        [mask(c, schema.attributes[c].kind if c in schema.attributes else None, frame.schema[c])
         if t == "mask" else pl.col(c) for c, t in columns.items()]
        + ([pl.col(CONSENT_CHANNELS)] if CONSENT_CHANNELS in frame.columns else [])
    )
    tokenised = [c for c, t in columns.items() if t == "tokenise"]
    if tokenised:
        assert token_key is not None
        out = out.with_columns([tokenise(out[c], token_key) for c in tokenised])
    return out


def granted_masters(consent: pl.DataFrame, purpose: str, channel: str | None) -> pl.DataFrame:
    """Masters that granted ``purpose`` (on ``channel``, or on any channel with the list of channels)."""
    grants = consent.filter((pl.col("purpose") == purpose) & pl.col("granted").fill_null(False))
    if channel is not None:
        return grants.filter(pl.col("channel") == channel).select("master_id").unique()
    return grants.group_by("master_id").agg(pl.col("channel").unique().sort().alias(CONSENT_CHANNELS))


def row_filter(lens: Lens, schema: pl.Schema) -> pl.Expr:
    """All of the lens's ``where`` conditions (column value among the allowed ones); true without any."""
    # No fill_null on a bare literal: Polars 2.1 then builds a predicate of the wrong length on large frames.
    if not lens.where:
        return pl.lit(True)
    condition = pl.lit(True)
    for column, values in lens.where.items():
        if column not in schema:
            raise LensError(f"lens {lens.name!r}: filter column {column!r} is not in golden_customers")
        if schema[column] == pl.Boolean:
            allowed = pl.Series([bool(v) for v in values], dtype=pl.Boolean)
            condition &= pl.col(column).is_in(allowed.implode())
        else:
            allowed = pl.Series([str(v) for v in values], dtype=pl.String)
            condition &= pl.col(column).cast(pl.String).is_in(allowed.implode())
    return condition.fill_null(False)


def mask(column: str, kind: Kind | None, dtype: pl.DataType) -> pl.Expr:
    """A readable hint of the value, never enough to use it: null stays null.

    e-mail ``j***@e***.com``; phone ``***18`` (last two digits); dates the year only; postcode the first
    two characters; any other text its first character, each followed by ``***`` (length not kept).
    """
    col = pl.col(column)
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return col.dt.year().alias(column)
    text = col.cast(pl.String)
    stars = pl.lit("***")
    if kind == Kind.email:
        # The domain is masked too: personal domains often carry the person's name (ada@lovelace-family.org).
        domain = text.str.split_exact("@", 1).struct[1]
        suffix = domain.str.extract(r"(\.[^.@]+)$").fill_null("")
        masked = (pl.when(text.str.contains("@", literal=True))
                  .then(pl.concat_str(text.str.slice(0, 1), stars, pl.lit("@"), domain.str.slice(0, 1), stars, suffix))
                  .otherwise(pl.concat_str(text.str.slice(0, 1), stars)))
    elif kind == Kind.phone:
        masked = pl.when(text.str.len_chars() >= 6).then(pl.concat_str(stars, text.str.slice(-2))).otherwise(stars)
    elif kind == Kind.postcode:
        masked = pl.when(text.str.len_chars() > 3).then(pl.concat_str(text.str.slice(0, 2), stars)).otherwise(stars)
    else:
        masked = pl.concat_str(text.str.slice(0, 1), stars)
    return pl.when(text.is_null() | (text == "")).then(text).otherwise(masked).alias(column)


def tokenise(values: pl.Series, key: bytes) -> pl.Series:
    """Hex HMAC-SHA256-128 of ``<column>|<value>``: equal values give equal tokens in one lens, run after run.

    One HMAC per distinct value (``keyed_digests`` computes them in a tight loop, ~0.5 us each); nulls stay null.
    """
    text = values.cast(pl.String)
    distinct = text.drop_nulls().unique()
    messages = pl.select(pl.concat_str(pl.lit(f"{values.name}|"), pl.lit(distinct))).to_series()
    tokens = keyed_digests(messages, key).bin.encode("hex")
    lookup = pl.DataFrame({"v": distinct, "t": tokens})
    return pl.DataFrame({"v": text}).join(lookup, on="v", how="left", maintain_order="left")["t"].alias(values.name)


def neutralise_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """For CSV: text cells a spreadsheet would run (``=``, ``+``, ``-``, ``@``, tab, CR, LF first) get a leading ``'``;
    lists become ``;``-joined text."""
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.List):
            col = col.cast(pl.List(pl.String)).list.join(";")
        elif dtype != pl.String:
            continue
        exprs.append(pl.when(col.str.normalize("NFKC").str.contains(_FORMULA_START)).then(pl.concat_str(pl.lit("'"), col)).otherwise(col).alias(name))
    return frame.with_columns(exprs) if exprs else frame


# --- publishing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedLens:
    name: str
    rows: int
    files: dict[str, Path]  # format -> path
    encrypted: bool


def report_folder(lens_folder: Path) -> Path:
    return lens_folder.parent / REPORT_FOLDER


def publish_files(
    built: Sequence[tuple[Lens, pl.DataFrame]], folder: Path, keys: dict[str, LensKeys], schema: CustomerSchema,
    reports: Mapping[str, pl.DataFrame] | None = None,
) -> list[PublishedLens]:
    """Write every lens's files into ``folder`` and every report (table name -> rows, no personal values) as
    ``<name>.parquet`` into :func:`report_folder`, all or none: each file is written beside its target under a
    temporary name and renamed over it only once every file is written. Files of lenses and reports no longer
    published (and leftovers of a failed run) are removed.

    A lens that reveals personal data is written only as Parquet with modular encryption (AES-256-GCM,
    encrypted footer, every column under the lens's file key): nobody without that key reads a value.
    """
    folder.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    published: list[PublishedLens] = []
    try:
        for lens, frame in built:
            encrypted = bool(revealed_pii(lens, schema))
            files: dict[str, Path] = {}
            for fmt in lens_formats(lens, schema):
                target = folder / f"{lens.name}{_EXTENSIONS[fmt]}"
                temporary = folder / f".{target.name}.tmp"
                temporary.unlink(missing_ok=True)
                staged.append((temporary, target))
                _write(fmt, frame, temporary, keys[lens.name].file if encrypted else None)
                files[fmt] = target
            published.append(PublishedLens(lens.name, frame.height, files, encrypted))
        if reports:
            report_folder(folder).mkdir(exist_ok=True)
        for name, frame in (reports or {}).items():
            target = report_folder(folder) / f"{name}.parquet"
            temporary = target.with_name(f".{target.name}.tmp")
            staged.append((temporary, target))
            _write("parquet", frame, temporary, None)
    except BaseException:
        for temporary, _ in staged:
            for leftover in (temporary, temporary.with_name(temporary.name + ".wal")):
                leftover.unlink(missing_ok=True)
        raise
    for temporary, target in staged:
        os.replace(temporary, target)
        crash_point("lenses.file_replaced")  # some files new, some old: the next publication replaces them all
    keep = {target for _, target in staged}
    for path in [*folder.iterdir(), *(report_folder(folder).iterdir() if report_folder(folder).is_dir() else [])]:
        stale_output = path.suffix in _EXTENSIONS.values() and path not in keep
        half_written = path.name.startswith(".") and ".tmp" in path.name  # of a run that died mid-write
        if path.is_file() and (stale_output or half_written):
            path.unlink()
    return published


def _write(fmt: LensFormat, frame: pl.DataFrame, path: Path, file_key: bytes | None) -> None:
    if fmt == "parquet":
        encryption = pqe.create_encryption_properties(file_key) if file_key is not None else None
        pq.write_table(frame.to_arrow(), path, compression="zstd", encryption_properties=encryption)
        return
    if file_key is not None:  # config validation prevents this; never write revealed PII in plaintext
        raise LensError(f"{path.name}: {fmt} cannot be encrypted; a lens revealing personal data is Parquet only")
    if fmt == "csv":
        neutralise_formulas(frame).write_csv(path)
        return
    con = duckdb.connect(str(path))
    try:
        con.register("__cmdm_lens", frame.to_arrow())
        con.execute(statement("lenses/create_lens_table", table=LENS_TABLE, staged="__cmdm_lens"))
        con.unregister("__cmdm_lens")
        con.execute("CHECKPOINT")
    finally:
        con.close()


def read_encrypted_parquet(path: Path, file_key: bytes) -> pl.DataFrame:
    """A revealing lens's Parquet file, decrypted with its file key (what a Python BI notebook does)."""
    properties = pqe.create_decryption_properties(file_key)
    return pl.from_arrow(pq.read_table(path, decryption_properties=properties))  # type: ignore[return-value]


def column_treatments(lens: Lens) -> dict[str, list[str]]:
    """Treatment -> columns, for metadata (names only)."""
    grouped: dict[str, list[str]] = {}
    for column, treatment in treatments(lens).items():
        grouped.setdefault(treatment, []).append(column)
    return grouped
