"""`cmdm lookup`: found through the blind index, shown only as a lens allows."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from cmdm_pipeline.cli import main
from cmdm_pipeline.config import load_config
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline_tests.conftest import GOOD_CSV, SCHEMA, csv_source

pytestmark = pytest.mark.integration

LENSES = [
    {"name": "service", "description": "service desk", "purpose": None,
     "columns": {"first_name": "reveal", "last_name": "reveal", "email": "mask", "country": "reveal"}},
    {"name": "uk_only", "description": "UK team", "purpose": None, "columns": {"last_name": "reveal"},
     "where": {"country": ["GB"]}},
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("lookup")
    (root / "crm.csv").write_text(GOOD_CSV, encoding="utf-8")
    document = {"warehouse": {"path": "warehouse/cmdm.duckdb"}, "schema": SCHEMA, "sources": [csv_source()],
                "lenses": LENSES}
    (root / "cmdm.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    config = load_config(root / "cmdm.yaml")
    build_definitions(config).resolve_job_def(JOB_NAME).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=True)
    return config


def lookup(config, *args: str) -> int:  # type: ignore[no-untyped-def]
    return main(["lookup", *args, "--config", str(config.base_dir / "cmdm.yaml")])


def test_found_by_any_spelling_without_a_lens_shows_nothing_personal(project, capsys) -> None:  # type: ignore[no-untyped-def]
    assert lookup(project, "--email", " ADA@example.org") == 0
    out = capsys.readouterr().out
    assert "1 customer(s) found" in out and "crm" in out
    assert "Lovelace" not in out and "ada@" not in out.lower()
    assert lookup(project, "--phone", "0161 496 0000", "--country", "gb") == 0
    assert "1 customer(s) found" in capsys.readouterr().out


def test_a_lens_shows_its_columns_and_masks(project, capsys) -> None:  # type: ignore[no-untyped-def]
    assert lookup(project, "--email", "ada@example.org", "--lens", "service") == 0
    out = capsys.readouterr().out
    assert "Lovelace" in out and "ada@example.org" not in out  # revealed name, masked e-mail
    assert lookup(project, "--email", "grace@example.com", "--lens", "uk_only") == 0
    out = capsys.readouterr().out
    assert "shows 0" in out and "Hopper" not in out  # a US customer is outside the lens's filter


def test_not_found_and_wrong_input(project, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert lookup(project, "--email", "nobody@example.org") == 1
    assert "no customer found" in capsys.readouterr().out
    assert lookup(project, "--email", "ada@example.org", "--lens", "nope") == 2
    assert "no lens 'nope'" in capsys.readouterr().err
    assert lookup(project, "--email", "   ") == 2
    with pytest.raises(SystemExit) as usage:
        lookup(project)
    assert usage.value.code == 2
    (tmp_path / "cmdm.yaml").write_text((project.base_dir / "cmdm.yaml").read_text().replace(
        "warehouse/cmdm.duckdb", "elsewhere/cmdm.duckdb"))
    assert main(["lookup", "--email", "ada@example.org", "--config", str(tmp_path / "cmdm.yaml")]) == 1
    assert "run `cmdm run` first" in capsys.readouterr().err


def test_help_is_complete(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        main(["lookup", "--help"])
    out = capsys.readouterr().out
    for word in ("--email", "--phone", "--national-id", "--country", "--lens", "--config", "exit codes"):
        assert word in out
