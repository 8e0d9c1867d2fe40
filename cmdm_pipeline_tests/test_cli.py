"""The `cmdm` command: summary, exit codes, and messages for wrong input."""

from __future__ import annotations

import pytest

from cmdm_pipeline.cli import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, main
from cmdm_pipeline_tests.conftest import GOOD_CSV


@pytest.mark.integration
def test_run_prints_the_summary(make_project, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_project(files={"crm.csv": GOOD_CSV + "4,,,x@example.org,,,GB,\n"})
    assert main(["run", "--config", str(config.base_dir / "cmdm.yaml")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "crm                      4           3            1" in out
    assert "has_a_name" in out
    assert str(config.warehouse_path) in out or "warehouse/cmdm.duckdb" in out
    assert "dagster dev -w workspace.yaml" in out


@pytest.mark.integration
def test_failed_run_exits_1_with_the_reason(make_project, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_project(files={})
    assert main(["run", "--quiet", "--config", str(config.base_dir / "cmdm.yaml")]) == EXIT_RUN_FAILED
    err = capsys.readouterr().err
    assert "step raw_crm failed" in err and "file not found" in err


def test_invalid_config_exits_2(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "cmdm.yaml").write_text("sources: []\n", encoding="utf-8")
    assert main(["run", "--config", str(tmp_path / "cmdm.yaml")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "at schema: Field required" in err and "at sources: List should have at least 1 item" in err


@pytest.mark.parametrize("argv", [[], ["fly"], ["run", "--unknown"]])
def test_wrong_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == EXIT_USAGE
    assert "usage: cmdm" in capsys.readouterr().err


def test_help_describes_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "--config PATH" in out and "CMDM_CONFIG" in out
