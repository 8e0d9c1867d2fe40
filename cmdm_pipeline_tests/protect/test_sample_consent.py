"""The bundled consent events: reproducible from the bundled sample, and their planted bad rows are caught."""

from __future__ import annotations

from pathlib import Path

from cmdm_pipeline.config import load_config
from cmdm_pipeline.protect.consent.events import parse_consent_events, read_consent_events
from cmdm_pipeline.sample.consent import FILE_NAME, write_consent_events
from cmdm_pipeline_tests.conftest import REPO_ROOT

SAMPLE = REPO_ROOT / "data" / "sample"


def test_the_bundled_file_is_what_the_generator_writes(tmp_path: Path) -> None:
    assert write_consent_events(SAMPLE, seed=42, out=tmp_path / FILE_NAME) > 300
    assert (tmp_path / FILE_NAME).read_bytes() == (SAMPLE / FILE_NAME).read_bytes()


def test_the_shipped_config_reads_the_bundled_events_and_quarantines_the_planted_rows() -> None:
    config = load_config(REPO_ROOT / "cmdm.yaml")
    assert config.consent is not None
    events = parse_consent_events(read_consent_events(config), config.consent, [s.name for s in config.sources])
    assert sorted(events.issues["rule"]) == [
        "action.unknown", "channel.unknown", "email.invalid", "event.duplicate", "occurred_at.invalid",
        "purpose.unknown", "source_system.unknown", "subject.missing"]
    assert events.valid.height + events.issues["source_row_number"].n_unique() == events.raw.height
    assert set(events.valid["action"]) == {"granted", "withdrawn"} and events.valid["event_id"].is_unique().all()
