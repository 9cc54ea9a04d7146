"""scoring.latest: one "latest record per user", in Spark and as keyed state, on real Delta."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
from pandas.testing import assert_frame_equal
from pyspark.sql import functions as F

from scoring.latest import ORDER, LatestScores, current, latest
from scoring.sink import ScoreSink, to_spark
from store.tables import Txn, append

T1, T2 = datetime(2024, 3, 6, 1), datetime(2024, 3, 7, 1)


def records(rows: list[tuple]) -> pd.DataFrame:
    """score_frame-shaped rows from (user, features_version, scored_at, model_version, score,
    status)."""
    return pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(len(rows))],
            "user_id": [r[0] for r in rows],
            "score": [r[4] for r in rows],
            "risk_band": [None if r[5] == "lapsed" else "low" for r in rows],
            "status": [r[5] for r in rows],
            "model_name": "m",
            "model_version": [r[3] for r in rows],
            "features_as_of": date(2024, 3, 6),
            "features_version": [r[1] for r in rows],
            "scored_at": [r[2] for r in rows],
            "reasons": [None] * len(rows),
        }
    )


# Each user's rows in the order they are written; the last column names the expected latest.
CASES = [
    # a newer feature version wins over a later scoring of an older one (a late batch job)
    ("a", 5, T1, 1, 0.1, "scored", True),
    ("a", 3, T2, 2, 0.9, "scored", False),
    # same features: the later scoring wins; same scoring time: the newer model
    ("b", 4, T1, 1, 0.2, "scored", False),
    ("b", 4, T2, 1, 0.3, "scored", False),
    ("b", 4, T2, 2, 0.4, "scored", True),
    # a lapsed record is a user's latest until a newer score comes
    ("c", 6, T1, 1, 0.5, "scored", False),
    ("c", 7, T2, 1, None, "lapsed", True),
    ("d", 7, T2, 1, None, "lapsed", False),
    ("d", 8, T2, 1, 0.6, "scored", True),
]


def test_the_table_rule_and_the_keyed_state_pick_the_same_latest_record(spark, tmp_path):
    rows = records([c[:6] for c in CASES])
    expected = sorted(rows["record_id"][[c[6] for c in CASES]])
    sink = ScoreSink(str(tmp_path / "churn_scores"))
    for i in range(len(rows)):  # one commit per row, in the listed order
        sink.write(to_spark(spark, rows[i : i + 1], "w", i), Txn("w", i))
    table = sink.read(spark)
    assert sorted(r["record_id"] for r in latest(table).collect()) == expected
    assert sorted(r["user_id"] for r in current(table).collect()) == ["a", "b", "d"]

    state = LatestScores()
    for i in range(len(rows)):
        state.update(rows[i : i + 1])
    kept = state.rows.reset_index()[["user_id", *ORDER]]
    assert sorted(rows.merge(kept, on=["user_id", *ORDER])["record_id"]) == expected
    assert_frame_equal(
        LatestScores.of(table).rows.sort_index(), state.rows.sort_index(), check_dtype=False
    )
    users = pd.Series(["c", "d", "e"])
    assert state.scored(users).tolist() == [False, True, False]  # lapsed, scored, unknown
    assert state.lookup(users)["user_id"].tolist() == ["c", "d"]


def test_a_table_written_before_status_existed_gets_the_column_and_reads_as_scores(spark, tmp_path):
    path = str(tmp_path / "churn_scores")
    old = to_spark(spark, records([("a", 1, T1, 1, 0.4, "scored")]), "w", 0).drop("status")
    append(old, path)
    sink = ScoreSink(path)
    assert "status" not in sink.read(spark).columns
    assert [r["status"] for r in latest(sink.read(spark)).collect()] == ["scored"]
    lapsed = records([("a", 2, T2, 1, None, "lapsed")])
    assert sink.write(to_spark(spark, lapsed, "w", 1), Txn("w", 1))
    table = sink.read(spark)
    assert table.columns.index("status") == table.columns.index("risk_band") + 1
    assert table.where(F.col("status").isNull()).count() == 1  # the old row, as it was
    assert [(r["status"], r["features_version"]) for r in latest(table).collect()] == [
        ("lapsed", 2)
    ]
