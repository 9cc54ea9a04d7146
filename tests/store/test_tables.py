"""store.tables against real Delta tables."""

from __future__ import annotations

import shutil

from store.tables import newest_version_from, table_exists


def test_a_table_another_process_creates_is_seen_once_it_is_there(spark, tmp_path):
    """The scorer waits for user_features, which the feature stream creates: its first look
    may find the table's log directory still empty (decision 56)."""
    made = tmp_path / "made"
    spark.range(3).write.format("delta").save(str(made))
    table = tmp_path / "table"
    (table / "_delta_log").mkdir(parents=True)  # another writer, half way
    assert not table_exists(spark, str(table))
    shutil.copytree(made, table, dirs_exist_ok=True)  # its commit lands, outside this JVM
    assert table_exists(spark, str(table))
    assert not table_exists(spark, str(tmp_path / "nothing"))


def test_the_newest_version_is_found_from_a_given_one(spark, tmp_path):
    path = str(tmp_path / "t")
    for _ in range(3):  # versions 0, 1, 2
        spark.range(1).write.format("delta").mode("append").save(path)
    assert [newest_version_from(spark, path, v) for v in (0, 2, 3, 7)] == [2, 2, 2, 6]
