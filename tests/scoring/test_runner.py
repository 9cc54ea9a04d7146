"""Scoring passes on real Delta tables (no broker, no MLflow): the change feed as the stream
sees it, idempotent writes, the emission policy, batch/stream parity, the Kafka value."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from features.registry import FEATURE_DTYPES, FEATURE_NAMES
from scoring.inputs import latest_changes
from scoring.latest import LatestScores
from scoring.model import ModelCache
from scoring.runner import Emission, process_batch, score_table
from scoring.score import ScoringRules
from scoring.sink import ScoreSink, kafka_records, to_spark
from store.ingest import CDF
from store.tables import Txn, merge, overwrite
from tests.scoring.models import model, vectors
from tests.scoring.test_model_cache import MemoryRegistry

RULES = ScoringRules(reasons_for_bands=("high",))
AS_OF = date(2024, 3, 6)


def features_df(spark: SparkSession, x: pd.DataFrame, users: list[str], as_of=AS_OF) -> DataFrame:
    """Rows shaped like user_features (its column types), from synthetic vectors."""
    pdf = pd.concat(
        [pd.DataFrame({"user_id": users, "as_of": [as_of] * len(users)}), x.reset_index(drop=True)],
        axis=1,
    )
    df = spark.createDataFrame(pdf)
    return df.select(
        F.col("user_id"),
        F.col("as_of").cast("date"),
        *[F.col(n).cast(FEATURE_DTYPES[n]).alias(n) for n in FEATURE_NAMES],
    )


def changes(spark: SparkSession, path: str, start: int, end: int) -> DataFrame:
    """The change feed of versions [start, end]: what one micro-batch of the stream holds."""
    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", start)
        .option("endingVersion", end)
        .load(path)
    )


@pytest.fixture
def table(spark, tmp_path):
    """user_features with 30 users at version 0 (Change Data Feed on)."""
    path = str(tmp_path / "user_features")
    users = [f"u{i:02d}" for i in range(30)]
    overwrite(features_df(spark, vectors(30, seed=7), users), path, properties=CDF)
    return path, users


def update(spark, path: str, frame: DataFrame, n: int) -> None:
    merge(spark, frame, path, Txn("test-updates", n), on=["user_id"], update_set=None)


def cache_for(m) -> ModelCache:
    registry = MemoryRegistry(
        aliases={"champion": m.version}, versions={m.version: (list(FEATURE_NAMES), m.booster)}
    )
    return ModelCache(registry, m.name, "champion", FEATURE_NAMES, log=lambda _line: None)


def test_latest_changes_keeps_each_users_newest_vector(spark, table):
    path, _ = table
    base = vectors(2, seed=8)
    update(spark, path, features_df(spark, base.assign(tenure_days=100.0), ["u01", "new"]), 1)
    update(spark, path, features_df(spark, base[:1].assign(tenure_days=200.0), ["u01"]), 2)
    got = latest_changes(changes(spark, path, 0, 2))
    expected = [
        (u, 0, None if pd.isna(v) else float(v), 1)  # a NaN int feature is stored as null
        for u, v in zip(
            [f"u{i:02d}" for i in range(30)], vectors(30, seed=7)["tenure_days"], strict=True
        )
        if u != "u01"
    ]
    expected += [("u01", 2, 200.0, 3), ("new", 1, 100.0, 1)]
    rows = got[["user_id", "features_version", "tenure_days", "changes"]].astype(object)
    assert sorted(
        (u, v, None if pd.isna(d) else d, c) for u, v, d, c in rows.itertuples(index=False)
    ) == sorted(expected)
    newest = latest_changes(changes(spark, path, 2, 2))
    assert newest["features_committed_at"].notna().all()
    assert newest["features_committed_at"].dt.tz is None  # naive UTC, as score_frame takes it
    assert set(latest_changes(changes(spark, path, 0, 0)).columns) >= set(FEATURE_NAMES)


def in_population(x: pd.DataFrame) -> pd.Series:
    """The rows the 28-day test models score (their recency known and at most 28 days)."""
    return x["days_since_last_event"] <= 28


def test_stream_pass_writes_once_and_emits_only_changes(spark, table, tmp_path):
    path, _ = table
    m = model("recency", version=1)
    sink = ScoreSink(str(tmp_path / "churn_scores"))
    run = dict(
        cache=cache_for(m),
        rules=RULES,
        emission=Emission("changed", 0.05),
        sink=sink,
        latest=LatestScores(),
        writer="stream_scores-test",
    )
    x = vectors(30, seed=7)
    live = int(in_population(x).sum())
    first = process_batch(spark, changes(spark, path, 0, 0), 0, **run)
    assert (first.rows_in, first.scored, first.lapsed, first.emitted) == (30, live, 0, live)
    assert first.outside == 30 - live
    assert f"{live} users scored" in first.line() and "model test-model v1" in first.line()
    written = sink.read(spark).collect()
    replay = process_batch(spark, changes(spark, path, 0, 0), 0, **run)
    assert replay.skipped and replay.line() == "batch 0: already written, skipped"
    # Without the lookup the batch is scored again, and the sink drops the second append.
    unchecked = process_batch(spark, changes(spark, path, 0, 0), 0, may_be_replay=False, **run)
    assert not unchecked.skipped and unchecked.emitted == 0  # nothing changed since
    assertDataFrameEqual(sink.read(spark), written)

    # u00 goes quiet for 20 days (its score jumps); u01's vector is rewritten unchanged.
    quiet = features_df(spark, x[:1].assign(days_since_last_event=20.0), ["u00"])
    same = features_df(spark, x[1:2], ["u01"])
    update(spark, path, quiet.unionByName(same), 1)
    second = process_batch(spark, changes(spark, path, 1, 1), 1, **run)
    assert (second.scored, second.emitted) == (2, 1)
    new = sink.read(spark).where(F.col("batch_id") == 1).collect()
    assert [(r["user_id"], r["features_version"], r["writer"]) for r in new] == [
        ("u00", 1, "stream_scores-test")
    ]
    assert new[0]["risk_band"] == "high" and new[0]["reasons"][0]["feature"] == (
        "days_since_last_event"
    )
    state = run["latest"].lookup(pd.Series(["u00"]))
    assert state["score"].tolist() == [new[0]["score"]]


def test_a_user_going_quiet_lapses_out_once_and_comes_back(spark, table, tmp_path):
    """Quiet within the lookback: scored. Past it: one lapsed record, then nothing while
    away (also after a restart). Active again: scored, and emitted as a first score."""
    path, _ = table
    m = model("recency", version=1)
    sink = ScoreSink(str(tmp_path / "churn_scores"), None)
    run = dict(cache=cache_for(m), rules=RULES, emission=Emission("changed", 0.05), sink=sink)
    writer = "stream_scores-test"
    process_batch(spark, changes(spark, path, 0, 0), 0, latest=LatestScores(), writer=writer, **run)
    base = vectors(1, seed=9)
    steps = [  # days since u99's last event -> (scored, lapsed, outside), its record's status
        (2.0, (1, 0, 0), "scored"),  # a new user: a first score
        (20.0, (1, 0, 0), "scored"),  # quiet: the score moved
        (28.0, (1, 0, 0), None),  # the last day in the population: scored, score unchanged
        (29.0, (0, 1, 0), "lapsed"),  # out: one lapsed record
        (45.0, (0, 0, 1), None),  # still away (after a restart): no record
        (20.0, (1, 0, 0), "scored"),  # back: emitted although the score is the one it had
    ]
    latest = LatestScores.of(sink.read(spark))
    for n, (days, counts, status) in enumerate(steps, start=1):
        update(spark, path, features_df(spark, base.assign(days_since_last_event=days), ["u99"]), n)
        if days == 45.0:  # a restart: the state is read again from the table
            latest = LatestScores.of(sink.read(spark))
        r = process_batch(spark, changes(spark, path, n, n), n, latest=latest, writer=writer, **run)
        rows = sink.read(spark).where(F.col("batch_id") == n).collect()
        assert [row["status"] for row in rows] == ([status] if status else []), (days, r.line())
        assert (r.scored, r.lapsed, r.outside) == counts, (days, r.line())
        if status == "lapsed":
            (row,) = rows
            assert row["score"] is None and row["risk_band"] is None and row["reasons"] is None
            assert row["features_version"] == n and row["model_version"] == 1
    history = sink.read(spark).where(F.col("user_id") == "u99").orderBy("batch_id").collect()
    assert [r["status"] for r in history] == ["scored", "scored", "lapsed", "scored"]
    assert history[1]["score"] == history[3]["score"]
    assert latest.lookup(pd.Series(["u99"]))["status"].tolist() == ["scored"]
    # The keyed state and the table's one definition agree on every user.
    table_latest = LatestScores.of(sink.read(spark)).rows.sort_index()
    assert_frame_equal(latest.rows.sort_index(), table_latest, check_dtype=False)


def test_batch_scoring_matches_the_stream_and_runs_once(spark, table, tmp_path):
    path, _ = table
    m = model("sessions", version=2)
    stream_sink = ScoreSink(str(tmp_path / "stream_scores"))
    process_batch(
        spark,
        changes(spark, path, 0, 0),
        0,
        cache=cache_for(m),
        rules=RULES,
        emission=Emission("every"),
        sink=stream_sink,
        latest=LatestScores(),
        writer="stream_scores-test",
    )
    batch_sink = ScoreSink(str(tmp_path / "batch_scores"))
    result, _ = score_table(spark, path, m, rules=RULES, sink=batch_sink)
    live = int(in_population(vectors(30, seed=7)).sum())
    assert (result.scored, result.emitted, result.batch_id) == (live, live, 0)
    columns = [
        "record_id",
        "user_id",
        "score",
        "risk_band",
        "status",
        "model_version",
        "features_as_of",
        "features_version",
        "reasons",
    ]
    assertDataFrameEqual(
        stream_sink.read(spark).select(*columns), batch_sink.read(spark).select(*columns)
    )
    assert {r["writer"] for r in batch_sink.read(spark).select("writer").collect()} == {
        "score_batch-test-model-v2"
    }
    again, _ = score_table(spark, path, m, rules=RULES, sink=batch_sink)
    assert again.skipped and batch_sink.read(spark).count() == live


def test_kafka_value_is_the_score_as_json_with_nulls_kept(spark, table):
    path, _ = table
    m = model("recency", version=3)
    from scoring.score import score_frame

    pdf = latest_changes(changes(spark, path, 0, 0))
    scored = score_frame(m, pdf, ScoringRules(reasons_for_bands=("high",)))
    records = kafka_records(to_spark(spark, scored, "w", 0)).collect()
    by_user = {bytes(r["key"]).decode(): json.loads(bytes(r["value"])) for r in records}
    assert set(by_user) == set(scored["user_id"])
    row = scored.iloc[0]
    value = by_user[row["user_id"]]
    assert list(value) == [
        "schema_version", "record_id", "user_id", "score", "risk_band", "status", "model_name",
        "model_version", "features_as_of", "features_version", "scored_at", "reasons",
    ]  # fmt: skip
    assert value["schema_version"] == 2 and value["record_id"] == row["record_id"]
    assert value["score"] == row["score"] and value["model_version"] == 3
    assert value["features_as_of"] == "2024-03-06" and value["scored_at"].endswith("Z")
    low = next(v for v in by_user.values() if v["risk_band"] != "high")
    high = next(v for v in by_user.values() if v["risk_band"] == "high")
    assert "reasons" in low and low["reasons"] is None
    assert set(high["reasons"][0]) == {"feature", "value", "contribution"}


def test_a_sink_writes_each_version_of_a_writer_once_in_and_across_processes(spark, tmp_path):
    path = str(tmp_path / "churn_scores")
    scored = lambda version: to_spark(  # noqa: E731
        spark, score_frame_rows(spark, tmp_path, version), "w", version
    )
    sink = ScoreSink(path)
    assert sink.write(scored(0), Txn("w", 0)) and sink.write(scored(1), Txn("w", 1))
    # In the same process: a version not newer than one committed writes nothing.
    assert not sink.write(scored(1), Txn("w", 1)) and not sink.write(scored(0), Txn("w", 0))
    # A new process (a new sink) reads the newest version from the table first.
    again = ScoreSink(path)
    assert not again.write(scored(1), Txn("w", 1)) and again.committed == {"w": 1}
    assert again.write(scored(2), Txn("w", 2))
    assert not ScoreSink(path).write(scored(2), Txn("w", 2))
    assert sorted(r["batch_id"] for r in sink.read(spark).collect()) == [0, 0, 1, 1, 2, 2]
    assert sink.committed == {"w": 1}


def score_frame_rows(spark: SparkSession, tmp_path, version: int) -> pd.DataFrame:
    """Two users' scores from the test model, as score_frame returns them."""
    from scoring.score import score_frame

    users = ["u00", "u01"]
    pdf = features_df(spark, vectors(2, seed=version), users).toPandas()
    pdf = pdf.assign(features_version=version, features_committed_at=pd.Timestamp("2024-03-06"))
    return score_frame(model("recency", version=1), pdf, RULES)
