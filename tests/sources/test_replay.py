"""Replay of CSV / Parquet logs, the Online Retail preset, and the real Online Retail files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sources.contract import contract_errors
from sources.replay import (
    ONLINE_RETAIL,
    ReplayMapping,
    ReplayRecord,
    replay,
    replay_online_retail,
)

RETAIL_CSV = """\
InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536366,22633,"HAND WARMER, UNION JACK",6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom
536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
C536379,D,Discount,-1,2010-12-01 09:41:00,27.50,14527.0,United Kingdom
536414,22139,,56,2010-12-01 11:52:00,0.0,,United Kingdom
536365,NA,FREEBIE,1,2010-12-01 08:26:00,0.0,17850.0,United Kingdom
"""


def _event(eid: str, user: str | None, etype: str, time: str, **props: object) -> dict:
    value: dict = {"event_id": eid}
    if user is not None:
        value["user_id"] = user
    value |= {"event_type": etype, "event_time": time, "schema_version": 1, "properties": props}
    return value


def test_online_retail_csv(tmp_path: Path) -> None:
    path = tmp_path / "2010-12-01.csv"
    path.write_text(RETAIL_CSV)
    r = replay(path, ONLINE_RETAIL)
    records = list(r)
    f = "2010-12-01.csv"
    # Sorted by time, ties kept in file order; ids name the original row.
    assert records == [
        ReplayRecord(
            "17850",
            _event(f"{f}#1", "17850", "purchase", "2010-12-01T08:26:00.000Z",
                   amount=15.3, currency="GBP", quantity=6, product_id="85123A"),
        ),
        ReplayRecord(
            "17850",
            _event(f"{f}#4", "17850", "purchase", "2010-12-01T08:26:00.000Z",
                   amount=0.0, currency="GBP", quantity=1, product_id="NA"),
        ),
        ReplayRecord(
            "17850",
            _event(f"{f}#0", "17850", "purchase", "2010-12-01T08:28:00.000Z",
                   amount=11.1, currency="GBP", quantity=6, product_id="22633"),
        ),
        ReplayRecord(
            "14527",
            _event(f"{f}#2", "14527", "refund", "2010-12-01T09:41:00.000Z",
                   amount=27.5, currency="GBP", quantity=1, product_id="D"),
        ),
        ReplayRecord(
            None,
            _event(f"{f}#3", None, "purchase", "2010-12-01T11:52:00.000Z",
                   amount=0.0, currency="GBP", quantity=56, product_id="22139"),
        ),
    ]  # fmt: skip
    s = r.stats
    assert (s.rows_read, s.events, s.refunds, s.rows_without_user, s.rejected) == (5, 5, 1, 1, 1)
    assert s.per_file[f].rows_without_user == 1
    assert [bool(contract_errors(x.value)) for x in records] == [False] * 4 + [True]


def test_parquet_with_float_customer_and_typed_times(tmp_path: Path) -> None:
    df = pd.read_csv(pd.io.common.StringIO(RETAIL_CSV), dtype={"CustomerID": float})
    df["InvoiceDate"] = pd.to_datetime(df["InvoiceDate"])
    assert df["CustomerID"].dtype == np.float64
    df.to_parquet(tmp_path / "part.parquet")
    mapping = replace(ONLINE_RETAIL, time_format=None)
    records = list(replay(tmp_path / "part.parquet", mapping))
    assert [x.key for x in records] == ["17850", "17850", "17850", "14527", None]
    assert [x.value["event_type"] for x in records] == ["purchase"] * 3 + ["refund", "purchase"]
    assert [x.value["properties"]["amount"] for x in records] == [15.3, 0.0, 11.1, 27.5, 0.0]
    assert records[0].value["event_time"] == "2010-12-01T08:26:00.000Z"
    assert records[0].value["event_id"] == "part.parquet#1"


def test_generic_mapping_with_type_column_ids_and_devices(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(
        "id,who,at,kind,total,qty,sku,dev,sess,cur\n"
        "a1,7,2024-03-01T12:34:56.789Z,buy,19.99,2,p-1,Web,s-9,EUR\n"
        "a2,7,2024-03-01T12:30:00Z,view,,,p-1,smart-tv,s-9,\n"
        "a3,8,2024-03-01T13:00:00Z,return,-5.00,-1,p-2,ios,,\n"
        "a4,9,not a time,weird,,,,,,\n"
    )
    mapping = ReplayMapping(
        user_id="who", event_time="at", event_type="kind", event_id="id", amount="total",
        quantity="qty", product_id="sku", device="dev", session_id="sess", currency="cur",
        default_currency="USD", negative_is_refund=True,
        event_type_map={"buy": "purchase", "view": "page_view", "return": "purchase"},
    )  # fmt: skip
    r = replay(tmp_path / "log.csv", mapping)
    records = list(r)
    assert [x.value for x in records] == [
        _event("a2", "7", "page_view", "2024-03-01T12:30:00.000Z",
               product_id="p-1", session_id="s-9", device="other"),
        _event("a1", "7", "purchase", "2024-03-01T12:34:56.789Z", amount=19.99,
               currency="EUR", quantity=2, product_id="p-1", session_id="s-9", device="web"),
        _event("a3", "8", "refund", "2024-03-01T13:00:00.000Z", amount=5.0,
               currency="USD", quantity=1, product_id="p-2", device="ios"),
        {"event_id": "a4", "user_id": "9", "event_type": "weird", "schema_version": 1,
         "properties": {}},
    ]  # fmt: skip
    assert r.stats.rejected == 1 and r.stats.refunds == 1


def test_directory_and_glob_read_files_in_name_order(tmp_path: Path) -> None:
    for day, user in (("2010-12-02", "2"), ("2010-12-01", "1")):
        (tmp_path / f"{day}.csv").write_text(
            "CustomerID,InvoiceDate,InvoiceNo,Quantity,UnitPrice,StockCode\n"
            f"{user}.0,{day} 10:00:00,5,1,1.0,X\n{user}.0,{day} 09:00:00,C6,-2,1.5,Y\n"
        )
    (tmp_path / "README.md").write_text("not a log")
    r = replay(tmp_path, ONLINE_RETAIL)
    ids = [x.value["event_id"] for x in r]
    assert ids == ["2010-12-01.csv#1", "2010-12-01.csv#0", "2010-12-02.csv#1", "2010-12-02.csv#0"]
    assert list(r.stats.per_file) == ["2010-12-01.csv", "2010-12-02.csv"]
    assert (r.stats.refunds, r.stats.late_events) == (2, 0)
    assert [x.value["event_id"] for x in replay(str(tmp_path / "*.csv"), ONLINE_RETAIL)] == ids
    with pytest.raises(FileNotFoundError):
        replay(tmp_path / "nothing-*.csv", ONLINE_RETAIL)


RETAIL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "online-retail"


@pytest.mark.skipif(
    not (RETAIL_DIR / "by-day").is_dir(),
    reason=f"Online Retail data not found at {RETAIL_DIR} (shared data, not in the repo)",
)
def test_real_online_retail_days(tmp_path: Path) -> None:
    days = ["2010-12-01.csv", "2010-12-03.csv", "2011-08-12.csv"]
    files = [RETAIL_DIR / "by-day" / d for d in days]
    r = replay(files, ONLINE_RETAIL)
    records = list(r)
    raw = pd.concat([pd.read_csv(f, dtype=str) for f in files])
    s = r.stats
    assert s.rows_read == s.events == len(records) == len(raw)
    assert s.refunds == raw["InvoiceNo"].str.startswith("C").sum()
    assert s.rows_without_user == raw["CustomerID"].isna().sum() > 0
    assert sum(x.key is None for x in records) == s.rows_without_user
    assert all("user_id" not in x.value for x in records if x.key is None)
    # Everything with a customer is valid; 2011-08-12 holds the negative bad-debt rows,
    # which have no customer and so are rejected either way.
    assert [x.value for x in records if x.key and contract_errors(x.value)] == []
    assert s.rejected == s.rows_without_user
    assert [s.per_file[d].rows for d in days] == [len(pd.read_csv(f)) for f in files]
    times = [x.value["event_time"] for x in records]
    assert times == sorted(times)


def test_replay_online_retail_points_at_by_day(tmp_path: Path) -> None:
    (tmp_path / "by-day").mkdir()
    (tmp_path / "by-day" / "2010-12-01.csv").write_text(RETAIL_CSV)
    assert len(list(replay_online_retail(tmp_path))) == 5


def test_files_out_of_time_order_are_counted_as_late(tmp_path: Path) -> None:
    header = "CustomerID,InvoiceDate,InvoiceNo,Quantity,UnitPrice,StockCode\n"
    (tmp_path / "a.csv").write_text(header + "1,2010-12-02 10:00:00,5,1,1.0,X\n")
    (tmp_path / "b.csv").write_text(header)  # an empty day is fine
    (tmp_path / "c.csv").write_text(
        header + "1,2010-12-01 10:00:00,6,1,1.0,X\n1,2010-12-03 10:00:00,7,1,1.0,X\n"
    )
    r = replay(tmp_path, ONLINE_RETAIL)
    assert [x.value["event_id"] for x in r] == ["a.csv#0", "c.csv#0", "c.csv#1"]
    assert (r.stats.rows_read, r.stats.late_events, r.stats.per_file["b.csv"].rows) == (3, 1, 0)
