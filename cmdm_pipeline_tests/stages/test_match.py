"""One matching run on a small source: a real model, calibrated thresholds, clusters, a deterministic queue."""

from __future__ import annotations

import datetime as dt
import random
import stat
import tempfile
from pathlib import Path

import duckdb
import polars as pl
import pytest
from splink.internals.exceptions import SplinkException

from cmdm_pipeline.config import MatchingConfig, load_config
from cmdm_pipeline.scratch import PREFIX
from cmdm_pipeline.stages.decisions import DECISION_COLUMNS
from cmdm_pipeline.stages.match import match_records, node_pairs, rule_links, stored_pairs
from cmdm_pipeline.stages.match_features import matching_frame
from cmdm_pipeline.stages.match_model import _scratch_db, score_new_pairs, score_pairs, train_model
from cmdm_pipeline_tests.conftest import GOOD_CSV, REPO_ROOT
from cmdm_pipeline_tests.crash import cmdm

SCHEMA = load_config(REPO_ROOT / "cmdm.yaml").customer_schema
GIVEN = ["anna", "ben", "clara", "david", "emma", "felix", "greta", "hugo", "ida", "jonas", "karl", "lena"]
FAMILY = ["meyer", "novak", "okafor", "petrov", "quinn", "rossi", "silva", "tanaka", "ulrich", "varga"]


def typo(value: str, rng: random.Random) -> str:
    i = rng.randrange(len(value))
    return value[:i] + value[i + 1:] if len(value) > 3 else value


def people(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Records of ``n`` people (1-3 each, typos, missing e-mails) and the truth: person per record."""
    rng = random.Random(seed)
    rows, truth = [], []
    for person in range(n):
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        born = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(20_000))
        email = f"{given}.{family}{person}@example.org"
        for _ in range(rng.choice((1, 2, 2, 3))):
            record = str(len(rows))
            rows.append({"source_record_id": record,
                         "first_name": typo(given, rng) if rng.random() < 0.2 else given,
                         "last_name": typo(family, rng) if rng.random() < 0.2 else family,
                         "date_of_birth": born if rng.random() < 0.9 else None,
                         "email": email if rng.random() < 0.7 else None})
            truth.append({"source_system": "crm", "source_record_id": record, "entity": str(person)})
    frame = pl.DataFrame(rows).with_columns(pl.lit("crm").alias("source_system"), pl.lit("person").alias("party_type"))
    for name in SCHEMA.attributes:
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    dates = [n for n in ("customer_since", "responded_on") if n in SCHEMA.attributes]
    frame = frame.with_columns(pl.col(dates).cast(pl.Date)).sort("source_system", "source_record_id")
    return matching_frame(frame, SCHEMA), pl.DataFrame(truth)


def pair_f1(clusters: pl.DataFrame, frame: pl.DataFrame, truth: pl.DataFrame) -> float:
    labelled = frame.select("unique_id", "source_system", "source_record_id").join(clusters, on="unique_id").join(
        truth, on=["source_system", "source_record_id"])
    pairs = lambda keys: int(labelled.group_by(keys).len().select(pl.col("len") * (pl.col("len") - 1) // 2).sum().item())  # noqa: E731
    both, found, true = pairs(["cluster", "entity"]), pairs(["cluster"]), pairs(["entity"])
    return 2 * both / (found + true)


NO_DECISIONS = pl.DataFrame(schema=DECISION_COLUMNS)


@pytest.fixture(scope="module")
def small() -> tuple[pl.DataFrame, pl.DataFrame, dict]:  # type: ignore[type-arg]
    frame, truth = people(90, seed=3)
    assert 150 < frame.height < 250  # "a source of 200 records"
    model = train_model(frame, SCHEMA, MatchingConfig(), version=1).settings
    return frame, truth, model


def test_a_source_of_200_records_gets_a_real_model(small) -> None:  # type: ignore[no-untyped-def]
    _, _, model = small
    first = next(c for c in model["comparisons"] if c["output_column_name"] == "first_name")
    exact = first["comparison_levels"][1]
    assert exact["m_probability"] > 0.5 and exact["u_probability"] < 0.2  # learned, not Splink's defaults
    # The prior is the data's own: about the share of true pairs (here ~1 in 150), not a fixed guess.
    assert 1e-3 < model["probability_two_random_records_match"] < 3e-2


def test_matching_links_duplicates_with_a_threshold_from_the_data(small) -> None:  # type: ignore[no-untyped-def]
    frame, truth, model = small
    result = match_records(frame, model, MatchingConfig(), NO_DECISIONS)
    assert pair_f1(result.clusters, frame, truth) > 0.9
    assert 0.05 < result.threshold.probability < 0.95
    assert 0.8 < result.summary["estimated_precision"] <= 1 and 0.8 < result.summary["estimated_recall"] <= 1
    # Every pair inside a cluster was scored: clusters are judged by all their pairs.
    sizes = result.clusters.group_by("cluster").len()
    within = sizes.select((pl.col("len") * (pl.col("len") - 1) // 2).sum()).item()
    together = node_pairs(result.pairs.select("source_system_l", "source_record_id_l", "source_system_r",
                                              "source_record_id_r", "evidence", "blocked", "comparison_levels"),
                          frame.select("unique_id", "source_system", "source_record_id")).join(
        result.clusters.rename({"unique_id": "node_l", "cluster": "c_l"}), on="node_l").join(
        result.clusters.rename({"unique_id": "node_r", "cluster": "c_r"}), on="node_r").filter(pl.col("c_l") == pl.col("c_r"))
    assert together.height == within


def test_the_queue_is_within_budget_and_the_same_for_the_same_input(small) -> None:  # type: ignore[no-untyped-def]
    frame, _, model = small
    matching = MatchingConfig(review_budget=0.02)
    first = match_records(frame, model, matching, NO_DECISIONS)
    again = match_records(frame, model, matching, NO_DECISIONS)
    shown = first.queue.items["records"].explode().n_unique()
    assert 0 < shown <= int(0.02 * frame.height)  # the budget counts every record the queue shows
    assert first.queue.items.equals(again.queue.items)
    assert first.clusters.equals(again.clusters)
    nobody = match_records(frame, model, MatchingConfig(review_budget=0), NO_DECISIONS)
    assert nobody.queue.items.height == 0 and nobody.queue.decided_automatically == first.queue.doubtful


def test_a_stewards_different_splits_and_same_joins(small) -> None:  # type: ignore[no-untyped-def]
    frame, _, model = small
    base = match_records(frame, model, MatchingConfig(), NO_DECISIONS)
    keyed = base.clusters.join(frame.select("unique_id", "source_system", "source_record_id"), on="unique_id")
    cluster = keyed.group_by("cluster").agg("source_record_id").filter(pl.col("source_record_id").list.len() == 2).row(0)
    apart = keyed.filter(pl.col("cluster") != cluster[0]).row(0, named=True)
    decisions = pl.DataFrame([
        ("crm", cluster[1][0], "crm", cluster[1][1], "different", "s@example.org", "2026-12-01T10:00:00", None),
        ("crm", cluster[1][0], "crm", apart["source_record_id"], "same", "s@example.org", "2026-12-01T10:00:00", None),
    ], schema=DECISION_COLUMNS, orient="row")
    after = match_records(frame, model, MatchingConfig(), decisions).clusters.join(
        frame.select("unique_id", "source_record_id"), on="unique_id")
    of = dict(after.select("source_record_id", "cluster").iter_rows())
    assert of[cluster[1][0]] != of[cluster[1][1]]
    assert of[cluster[1][0]] == of[apart["source_record_id"]]


def test_deterministic_rules_link_equal_values_but_not_placeholders() -> None:
    frame = pl.DataFrame({"unique_id": list(range(6)), "party_type": ["person"] * 6,
                          "national_id": ["A1", "A1", None, None, "B2", "C3"]})
    assert rule_links(frame, [["national_id"]]).sort("node_l").rows() == [(0, 1)]
    shared = frame.with_columns(pl.lit("X").alias("national_id"))
    assert rule_links(shared, [["national_id"]]).height == 15
    crowd = pl.DataFrame({"unique_id": list(range(30)), "party_type": ["person"] * 30, "national_id": ["X"] * 30})
    assert rule_links(crowd, [["national_id"]]).height == 0  # a value 30 records share is no one's


def test_stored_pairs_round_trip_to_record_positions() -> None:
    ids = pl.DataFrame({"unique_id": [0, 1, 2], "source_system": ["shop", "crm", "crm"],
                        "source_record_id": ["9", "1", "2"]})
    pairs = pl.DataFrame({"node_l": [0, 1], "node_r": [1, 2], "evidence": [12.5, -3.0], "blocked": [True, False],
                          "gamma_email": [1, 0], "gamma_first_name": [-1, 2]},
                         schema_overrides={"gamma_email": pl.Int8, "gamma_first_name": pl.Int8})
    stored = stored_pairs(pairs, ids)
    assert stored.select("source_system_l", "source_record_id_l").row(0) == ("crm", "1")  # the smaller key left
    assert node_pairs(stored, ids).sort("node_l").equals(pairs.sort("node_l"))


def test_a_night_without_changes_gives_what_a_full_run_gives(small) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.stages.match import record_hashes, reusable

    frame, _, model = small
    full = match_records(frame, model, MatchingConfig(), NO_DECISIONS)
    stored = full.pairs.with_columns(pl.lit(1, pl.Int64).alias("model_version"))
    clusters = full.clusters.join(frame.select("unique_id", "source_system", "source_record_id"), on="unique_id").join(
        record_hashes(frame), on=["source_system", "source_record_id"])
    previous = reusable(stored, clusters, {**model, "cmdm_model_version": 1})
    assert previous is not None
    night = match_records(frame, model, MatchingConfig(), NO_DECISIONS, previous)
    assert night.summary["mode"] == "incremental: 0 new or changed, 0 gone"
    assert night.prior == full.prior and night.threshold == full.threshold  # completed pairs do not count
    assert night.clusters.equals(full.clusters) and night.queue.items.equals(full.queue.items)
    # Pairs of another model, or of a night that compared nothing, are scored again.
    assert reusable(stored, clusters, {**model, "cmdm_model_version": 2}) is None
    assert reusable(stored.head(0), clusters, {**model, "cmdm_model_version": 1}) is None


def _sorted_pairs(scored: pl.DataFrame) -> pl.DataFrame:
    return scored.select(pl.min_horizontal("unique_id_l", "unique_id_r").alias("l"),
                         pl.max_horizontal("unique_id_l", "unique_id_r").alias("r"), pl.col("evidence").round(9)).sort("l", "r")


def test_new_records_score_as_in_a_full_run_and_leave_no_scratch(small, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Incremental scoring (term-frequency tables, records registered after the linker) under the locked connection."""
    frame, _, model = small
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    new = frame["unique_id"].filter(frame["unique_id"] % 7 == 0)
    touching = pl.col("l").is_in(new.implode()) | pl.col("r").is_in(new.implode())
    full = _sorted_pairs(score_pairs(frame, model, MatchingConfig())).filter(touching)
    assert full.height > 10
    assert _sorted_pairs(score_new_pairs(frame, new, model, MatchingConfig())).equals(full)
    assert list(tmp_path.iterdir()) == []  # every scratch folder was removed


FILE_READS = ["read_text('/etc/passwd')", "read_blob('/etc/passwd')", "read_csv('/etc/passwd')", "glob('/etc/*')"]


@pytest.mark.parametrize("reader", FILE_READS)
@pytest.mark.parametrize("where", ["blocking rule", "comparison level"])
def test_sql_in_the_model_cannot_read_files(small, where: str, reader: str) -> None:  # type: ignore[no-untyped-def]
    """Behind the config's own check: SQL that reaches Splink (from cmdm.yaml or an edited model file) touches no file."""
    frame, _, model = small
    condition = f"(SELECT count(*) FROM {reader}) > 0"
    if where == "blocking rule":
        tampered = {**model, "blocking_rules_to_generate_predictions": [
            {"blocking_rule": f"l.first_name = r.first_name AND {condition}", "sql_dialect": "duckdb"}]}
    else:
        comparisons = [dict(c, comparison_levels=list(c["comparison_levels"])) for c in model["comparisons"]]
        levels = comparisons[0]["comparison_levels"]
        i = next(i for i, level in enumerate(levels) if level["sql_condition"] != "ELSE" and not level.get("is_null_level")
                 and not level.get("tf_adjustment_column") and not level.get("is_exact_match_level"))
        levels[i] = {**levels[i], "sql_condition": condition}
        tampered = {**model, "comparisons": comparisons}
    with pytest.raises(SplinkException) as caught:
        score_pairs(frame, tampered, MatchingConfig())
    assert isinstance(caught.value.__cause__, duckdb.PermissionException)


@pytest.mark.parametrize(("statement", "error"), [
    ("SET enable_external_access = true", duckdb.InvalidInputException),
    ("SET lock_configuration = false", duckdb.InvalidInputException),
    ("SET temp_directory = '{target}'", duckdb.InvalidInputException),
    ("COPY (SELECT 1) TO '{target}'", duckdb.PermissionException),
    ("ATTACH '{target}' AS other", duckdb.PermissionException),
    ("INSTALL httpfs", duckdb.PermissionException),
])
def test_splinks_connection_cannot_be_turned_to_files(statement: str, error: type[Exception], tmp_path: Path) -> None:
    target = tmp_path / "out"
    with _scratch_db("256MB") as db_api:
        con = db_api.duckdb_con
        with pytest.raises(error):
            con.execute(statement.format(target=target))
        # It still spills large jobs, into its own private folder.
        spill = Path(con.sql("SELECT current_setting('temp_directory')").fetchall()[0][0])
        assert spill.parent.name.startswith(f"{PREFIX}splink-") and stat.S_IMODE(spill.parent.stat().st_mode) == 0o700
    assert not target.exists()


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.integration
def test_a_run_killed_in_matching_leaves_records_only_in_its_private_scratch_and_the_next_run_removes_it(
    make_project, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_project()
    temp = tmp_path_factory.mktemp("tmpdir")
    monkeypatch.setenv("TMPDIR", str(temp))  # the runs' temp folder
    email = b"alan@example.org"
    assert email in GOOD_CSV.encode()

    cmdm(config.base_dir / "cmdm.yaml", "run", "--quiet", crash_at="matching.scratch_written")
    [scratch] = temp.glob(f"{PREFIX}splink-*")
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o700
    inside = _files(scratch)
    assert any(email in p.read_bytes() for p in inside)  # the records really were on disk when it died
    assert {stat.S_IMODE(p.stat().st_mode) for p in inside} == {0o600}
    assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in scratch.rglob("*") if d.is_dir())
    assert not [p for p in _files(temp) if scratch not in p.parents and email in p.read_bytes()]

    done = cmdm(config.base_dir / "cmdm.yaml", "run", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not list(temp.glob(f"{PREFIX}*"))


def test_bounded_blocking_scores_fewer_pairs_and_still_those_other_rules_find(small, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Over the pair budget the largest blocks (common names) are left out; a shared e-mail still pairs."""
    from cmdm_pipeline.stages import match_blocking

    frame, truth, model = small
    full = match_records(frame, model, MatchingConfig(), NO_DECISIONS)
    monkeypatch.setattr(match_blocking, "MIN_PAIR_BUDGET", 0)
    bounded = match_records(frame, model, MatchingConfig(max_pairs_per_record=2), NO_DECISIONS)
    s = bounded.summary
    assert s["blocks_left_out"] > 0 and s["pairs_left_out"] > 0 and s["pairs_blocked"] > 2 * frame.height
    blocked = lambda result: result.pairs.filter("blocked").select(  # noqa: E731
        "source_record_id_l", "source_record_id_r")
    assert blocked(bounded).join(blocked(full), on=["source_record_id_l", "source_record_id_r"], how="anti").height == 0
    assert blocked(bounded).height < blocked(full).height
    emails = frame.filter(pl.col("email").is_not_null()).select("source_record_id", "email")
    shared = emails.join(emails, on="email", suffix="_r").filter(pl.col("source_record_id") < pl.col("source_record_id_r"))
    assert shared.height > 20
    assert shared.join(blocked(bounded), left_on=["source_record_id", "source_record_id_r"],
                       right_on=["source_record_id_l", "source_record_id_r"], how="anti").height == 0
    assert pair_f1(bounded.clusters, frame, truth) > 0.9


def test_pairs_scored_in_chunks_are_those_scored_at_once(small, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.stages import match_model

    frame, _, model = small
    at_once = _sorted_pairs(score_pairs(frame, model, MatchingConfig(), pairs=10_000))
    monkeypatch.setattr(match_model, "CHUNK_PAIRS", 1_000)  # 3 x 3 chunks
    chunks: list[tuple[int, int]] = []
    import splink.internals.linker_components.inference as inference

    original = inference.LinkerInference.predict_chunk

    def counted(self, left_chunk, right_chunk, **kwargs):  # type: ignore[no-untyped-def]
        chunks.append((left_chunk, right_chunk))
        return original(self, left_chunk, right_chunk, **kwargs)

    monkeypatch.setattr(inference.LinkerInference, "predict_chunk", counted)
    with caplog.at_level("INFO", logger="dagster.builtin.cmdm.progress"):
        in_chunks = _sorted_pairs(score_pairs(frame, model, MatchingConfig(), pairs=9_000))
    assert len(chunks) == 9 and at_once.height > 50
    # The run log counts the chunks done.
    assert any(r.getMessage().startswith("scoring 9,000 pairs in chunks of records: 9/9 done in ") for r in caplog.records)
    assert in_chunks.equals(at_once)


def test_pairs_stored_in_parts_are_the_pairs_whole(small, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.stages import match

    frame, _, model = small
    matching = MatchingConfig(review_budget=0.02)
    whole = match_records(frame, model, matching, NO_DECISIONS)
    monkeypatch.setattr(match, "STORED_PART_PAIRS", 100)
    parted = match_records(frame, model, matching, NO_DECISIONS)
    parts = list(parted.pair_parts())
    assert len(parts) == -(-whole.pair_count // 100) > 1 and max(p.height for p in parts) == 100
    assert pl.concat(parts).equals(whole.pairs) and parted.pair_count == whole.pairs.height
    assert parted.queue.items.equals(whole.queue.items) and parted.clusters.equals(whole.clusters)
    # Without steward decisions or rules every queued pair was scored, and its evidence found among the pairs.
    assert whole.queue.items.height and whole.queue.items["evidence"].null_count() == 0
