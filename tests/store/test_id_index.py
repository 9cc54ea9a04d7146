"""The duplicate rule's on-disk id index: what it holds survives a reopen, dates expire whole,
and its ``upto`` moves with its ids in one write."""

from __future__ import annotations

import gc
import shutil
from datetime import date

import pytest

from store.id_index import IdIndex

D1, D2, D3 = date(2026, 12, 5), date(2026, 12, 6), date(2026, 12, 7)


def test_ids_are_held_per_date_and_survive_a_reopen(tmp_path):
    index = IdIndex(tmp_path / "ids")
    assert index.upto is None and index.days() == []
    index.add(4, {D1: ["a", "b"], D2: ["c"]})
    assert index.contains(D1, ["a", "c", "zz"]) == [True, False, False]
    assert index.contains(D2, ["c", "a"]) == [True, False]
    assert index.contains(D3, ["a"]) == [False]  # a date never written
    index.close()

    again = IdIndex(tmp_path / "ids")
    assert again.upto == 4 and again.days() == [D1, D2]
    assert again.contains(D1, ["b"]) == [True]
    again.close()


def test_upto_moves_with_each_write_even_without_ids(tmp_path):
    index = IdIndex(tmp_path / "ids")
    index.add(-3, {D1: ["a"]})  # the backfill numbers its batches below zero
    assert index.upto == -3
    index.add(-2, {})
    assert index.upto == -2 and index.contains(D1, ["a"]) == [True]
    index.close()


def test_dates_before_the_horizon_are_dropped_whole(tmp_path):
    index = IdIndex(tmp_path / "ids")
    index.add(1, {D1: ["a"], D2: ["b"], D3: ["c"]})
    index.drop_before(D2)
    assert index.days() == [D2, D3]
    assert index.contains(D1, ["a"]) == [False]
    index.add(2, {D1: ["a"]})  # a date can come back (the bronze catch-up of an old batch)
    assert index.contains(D1, ["a"]) == [True]
    index.clear()
    assert index.days() == [] and index.upto is None
    index.close()


def test_a_temporary_index_is_removed_when_closed():
    index = IdIndex()
    path = index.path
    index.add(0, {D1: ["x"]})
    assert path.exists()
    index.close()
    del index
    gc.collect()
    assert not path.exists()


def test_a_second_opener_is_told_who_holds_it(tmp_path):
    index = IdIndex(tmp_path / "ids")
    with pytest.raises(RuntimeError, match="in use by another process"):
        IdIndex(tmp_path / "ids")
    index.close()


def test_the_same_process_opening_it_again_gets_the_open_one(tmp_path):
    first = IdIndex.open(tmp_path / "ids")
    first.add(7, {D1: ["a"]})
    assert IdIndex.open(tmp_path / "ids") is first
    first.close()
    reopened = IdIndex.open(tmp_path / "ids")
    assert reopened is not first and reopened.upto == 7
    reopened.close()


def test_an_index_whose_folder_was_deleted_is_opened_anew(tmp_path):
    first = IdIndex.open(tmp_path / "ids")
    first.add(3, {D1: ["a"]})
    shutil.rmtree(tmp_path / "ids")  # the checkpoint deleted to start over, in-process
    again = IdIndex.open(tmp_path / "ids")
    assert again is not first and first.closed
    assert again.upto is None
    again.add(0, {D2: ["b"]})
    assert again.contains(D2, ["b"]) == [True]
    again.close()
