"""The column schemas the table assets declare (``cmdm_pipeline.tables``) are the columns a run writes."""

from __future__ import annotations

import dagster as dg
import duckdb
import polars as pl
import pytest

from cmdm_pipeline.config import ProjectConfig, load_config
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.protect.lenses.build import LENS_TABLE, lens_folder, report_folder
from cmdm_pipeline.protect.lenses.publication import REPORTS
from cmdm_pipeline.tables import column_description, raw_columns, type_name
from cmdm_pipeline.warehouse import Warehouse
from cmdm_pipeline_tests.conftest import GOOD_CSV, REPO_ROOT, csv_source
from cmdm_pipeline_tests.protect.test_consent_job import CONSENT, EVENTS, SHOP_SOURCE, shop

#: Assets that are files, not warehouse tables: no table name; all but the match model declare their columns.
FILES = {"match_model", "published_reports"}
#: Lenses of every treatment: tokenised, masked (text and a date), revealed (a list too), with and without the
#: consent channels column, in every file format that can hold them (a revealing lens's encrypted Parquet is typed
#: by the same rule as any revealed column).
LENSES = [
    {"name": "campaigns", "description": "test", "purpose": "marketing", "formats": ["duckdb", "parquet"],
     "columns": {"master_id": "tokenise", "email": "tokenise", "first_name": "mask", "date_of_birth": "mask",
                 "country": "reveal", "nps_latest_score": "reveal", "source_systems": "reveal"}},
    {"name": "desk", "description": "test", "purpose": None, "formats": ["csv", "duckdb", "parquet"],
     "columns": {"postcode": "mask", "country": "reveal", "record_count": "reveal", "nps_latest_date": "reveal"}},
]


def _is_file(name: str) -> bool:
    return name in FILES or name.startswith("lens_")


@pytest.mark.parametrize(("dtype", "shown"), [
    (pl.String(), "String"),
    (pl.Datetime("us", "UTC"), "Datetime(UTC)"),
    (pl.Datetime("us"), "Datetime(no zone)"),
    (pl.List(pl.String()), "List(String)"),
    (pl.Struct({"rule": pl.String(), "n": pl.Int64()}), "Struct(rule: String, n: Int64)"),
    ("Struct (Int8 per comparison of the model)", "Struct (Int8 per comparison of the model)"),
])
def test_type_names(dtype: pl.DataType | str, shown: str) -> None:
    assert type_name(dtype) == shown


def test_raw_columns_are_the_id_mapped_and_per_row_type_columns_then_lineage(make_project) -> None:  # type: ignore[no-untyped-def]
    source = make_project(sources=[csv_source(party_type={"column": "Kind", "values": {"P": "person"}})]).sources[0]
    assert list(raw_columns(source)) == ["Id", "First", "Last", "Email", "Phone", "Zip", "Country", "DOB", "Kind",
                                         "source_system", "source_record_id", "source_row_number", "ingested_at",
                                         "parse_error", "unparsed"]


def test_attribute_columns_are_described_from_the_customer_schema(make_project) -> None:  # type: ignore[no-untyped-def]
    schema = {"attributes": {"email": {"kind": "email", "pii": True, "description": "Where we write to."},
                             "country": {"kind": "country"}}}
    config = make_project(schema=schema, sources=[csv_source(columns={"Email": "email", "Country": "country"})])
    assert column_description("golden_customers", "email", config) == "Where we write to. Personal data: stored encrypted."
    assert column_description("golden_customers", "country", config) == "Schema attribute (country)."
    assert column_description("match_summary", "records", config) == "Records matched."  # the table's own meaning
    assert column_description("customer_xref", "records", config) == "Records concerned."


def test_every_table_asset_of_the_shipped_config_has_a_column_schema_and_table_name() -> None:
    specs = build_definitions(load_config(REPO_ROOT / "cmdm.yaml")).resolve_all_asset_specs()
    described = set()
    for spec in specs:
        name = spec.key.to_user_string()
        if name == "match_model":
            continue
        schema = spec.metadata.get("dagster/column_schema")
        assert isinstance(schema, dg.TableSchema) and schema.columns, name
        assert [c.name for c in schema.columns if not (c.type and c.description)] == [], name
        assert spec.metadata.get("dagster/table_name") == (None if _is_file(name) else name)
        described.add(name)
    assert {"lens_marketing", "lens_service", "lens_finance", "published_reports"} <= described


@pytest.mark.integration
def test_the_declared_columns_are_the_columns_a_run_writes(make_project) -> None:  # type: ignore[no-untyped-def]
    files = {"crm.csv": GOOD_CSV, "shop.jsonl": shop("ada.l@example.org"), "consent.csv": EVENTS}
    config = make_project(files=files, sources=[csv_source(), SHOP_SOURCE], consent=CONSENT,
                          matching={"deterministic_rules": [["email"]]}, lenses=LENSES)
    defs = build_definitions(config)
    result = defs.resolve_job_def(JOB_NAME).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    store = open_warehouse(config)
    checked = set()
    for spec in defs.resolve_all_asset_specs():
        name = spec.key.to_user_string()
        if name == "match_model":
            continue
        declared = spec.metadata["dagster/column_schema"].columns
        for written, actual in _written(name, config, store):
            assert [c.name for c in declared] == list(actual), (name, written)
            for column in declared if written != ".csv" else []:  # CSV has no types
                if column.type.startswith("Struct ("):  # one field per comparison of the model
                    assert isinstance(actual[column.name], pl.Struct), (name, column.name)
                else:
                    assert column.type == type_name(actual[column.name]), (name, written, column.name)
            checked.add(f"{name} {written}" if _is_file(name) else name)
    assert {"raw_crm", "golden_customers", "consent_history", "erasure_tombstones", "audit_log"} <= checked
    assert {"lens_campaigns .parquet", "lens_campaigns .duckdb", "lens_desk .parquet", "lens_desk .duckdb",
            "lens_desk .csv", "published_reports .parquet"} <= checked


def _written(name: str, config: ProjectConfig, store: Warehouse) -> list[tuple[str, pl.Schema]]:
    """What the run wrote for asset ``name``: per table or file (by its suffix), its schema."""
    if not _is_file(name):
        return [(name, store.read(name).schema)]
    if name == "published_reports":
        frames = [(report, pl.read_parquet(report_folder(lens_folder(config)) / f"{report}.parquet")) for report in REPORTS]
        return [(".parquet", pl.Schema({f"{report}.{c}": t for report, f in frames for c, t in f.schema.items()}))]
    files = sorted(lens_folder(config).glob(f"{name.removeprefix('lens_')}.*"))
    assert files, name
    out = []
    for path in files:
        if path.suffix == ".csv":
            out.append((path.suffix, pl.read_csv(path, n_rows=0).schema))
        elif path.suffix == ".duckdb":
            with duckdb.connect(str(path), read_only=True) as con:
                out.append((path.suffix, con.sql(f"SELECT * FROM {LENS_TABLE}").pl().schema))
        else:
            out.append((path.suffix, pl.read_parquet(path).schema))
    return out
