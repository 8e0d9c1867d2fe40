"""The reported case, in the real job: the key store is deleted (the key kept) after an erasure. The next run
is refused before it reads or writes anything; `cmdm keys new-store` then lets runs go on, and the erased
subject does not come back although the sources still hold them."""

from __future__ import annotations

import polars as pl
import pytest

from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.protect.keys.kek import KeyStoreMissingError
from cmdm_pipeline.protect.keys.keystore import keystore_path
from cmdm_pipeline.protect.keys.pairing import new_store
from cmdm_pipeline_tests.conftest import csv_source
from cmdm_pipeline_tests.protect.test_consent_job import run
from cmdm_pipeline_tests.protect.test_erasure_job import CANARY_CSV, ERASURE, SHOP, SHOP_ROWS, scan

pytestmark = pytest.mark.integration

REQUESTS = "Ticket,Email,Phone,Master,System,Record,When\nT-1,zebulon.canary@example.net,,,,,2026-06-01\n"


def _chain(error: BaseException | None) -> str:
    texts, seen = [], set()
    while error is not None and id(error) not in seen:  # Dagster's chains can loop
        seen.add(id(error))
        texts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return "\n".join(texts)


def test_a_lost_store_stops_the_run_and_a_new_one_keeps_the_erased_out(make_project) -> None:  # type: ignore[no-untyped-def]
    files = {"crm.csv": CANARY_CSV, "shop.jsonl": SHOP_ROWS, "erasure.csv": REQUESTS}
    config = make_project(files=files, sources=[csv_source(), SHOP], erasure=ERASURE,
                          quality={"max_match_rate_drift": 1, "max_cluster_size_drift": 1, "max_quarantine_rate": 1})
    run(config.base_dir)
    run(config.base_dir)  # the canary is erased
    store = open_warehouse(config)
    golden = store.read("golden_customers", columns=["master_id"]).sort("master_id")
    assert store.read("erasure_log")["status"].to_list() == ["erased"]

    keystore_path(config).unlink()
    before = config.warehouse_path.read_bytes()
    with pytest.raises(Exception) as caught:
        run(config.base_dir)
    said = _chain(caught.value)
    assert KeyStoreMissingError.__name__ in said and "Restore the key store from its backup" in said
    assert config.warehouse_path.read_bytes() == before and not keystore_path(config).exists()

    result = new_store(config)
    assert "golden_customers" in result.dropped and result.kept_index_key
    run(config.base_dir)
    store = open_warehouse(config)
    assert store.read("customer_xref").filter(pl.col("source_record_id").is_in(["7", "77"])).is_empty()
    assert store.read("golden_customers", columns=["master_id"]).sort("master_id").equals(golden)  # no master back
    assert scan(config.warehouse_path.parent) == {}
