"""store.tables against real Delta tables."""

from __future__ import annotations

import shutil

from store.tables import table_exists


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
