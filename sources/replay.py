"""Replay a real event / transaction log (CSV or Parquet) as contract-v1 events.

Event time is preserved, so a 2010 log replays exactly like live traffic (docs/decisions.md,
P1). Rows the stream job will reject (no user, bad time, negative amount...) are
still yielded, never dropped here: the dead-letter path is where they are accounted for, and
`ReplayStats` says how many to expect there.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sources.contract import DEVICES, SCHEMA_VERSION, contract_errors

_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
# Float noise from quantity * unit_price (6 * 2.55 = 15.299999999999999) is rounded away;
# six places keep real sub-penny prices such as 0.001.
_AMOUNT_DECIMALS = 6


@dataclass(frozen=True)
class ReplayMapping:
    """Which column of the log holds which contract field (None: not in the log)."""

    user_id: str
    event_time: str
    event_type: str | None = None  # column; when None every row is default_event_type
    default_event_type: str = "purchase"
    event_type_map: Mapping[str, str] = field(default_factory=dict)  # log name -> contract
    event_id: str | None = None  # when None: "<file>#<row>", stable across replays
    amount: str | None = None  # when None: quantity * unit_price if both are given
    quantity: str | None = None
    unit_price: str | None = None
    product_id: str | None = None
    session_id: str | None = None
    device: str | None = None  # values outside web/ios/android become "other"
    currency: str | None = None  # column; falls back to default_currency
    default_currency: str | None = None
    time_format: str | None = None  # strptime format; None: ISO-8601. Naive times are UTC.
    refund_prefix: tuple[str, str] | None = None  # (column, prefix) marking refund rows
    negative_is_refund: bool = False  # a negative quantity or amount marks a refund

    def columns(self) -> list[str]:
        cols = [self.user_id, self.event_time, self.event_type, self.event_id, self.amount]
        cols += [self.quantity, self.unit_price, self.product_id, self.session_id]
        cols += [self.device, self.currency, self.refund_prefix and self.refund_prefix[0]]
        return list(dict.fromkeys(c for c in cols if c))


# The UCI Online Retail log (one row per invoice line; see docs/sources.md).
ONLINE_RETAIL = ReplayMapping(
    user_id="CustomerID",
    event_time="InvoiceDate",
    time_format="%Y-%m-%d %H:%M:%S",
    quantity="Quantity",
    unit_price="UnitPrice",
    product_id="StockCode",
    default_currency="GBP",
    refund_prefix=("InvoiceNo", "C"),
)


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """A Kafka record to produce: key is the user id, None when the row has no user."""

    key: str | None
    value: dict[str, Any]


@dataclass
class FileStats:
    rows: int = 0
    events: int = 0
    refunds: int = 0
    rows_without_user: int = 0
    rejected: int = 0  # events that break the contract (includes rows without user)


@dataclass
class ReplayStats:
    """Counts so a replay can be reconciled with the topic and the dead-letter path."""

    rows_read: int = 0
    events: int = 0
    refunds: int = 0
    rows_without_user: int = 0
    rejected: int = 0
    late_events: int = 0  # earlier than an event already yielded (files out of time order)
    per_file: dict[str, FileStats] = field(default_factory=dict)


class Replay(Iterator[ReplayRecord]):
    """Iterator over a log's records, file by file; `stats` counts each file as it is opened."""

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        mapping: ReplayMapping,
        files: list[tuple[Path, str]] | None = None,
    ):
        """``files``: (path, label) pairs already resolved (labels name default event ids)."""
        self.files = files if files is not None else resolve_files(source)
        self.mapping = mapping
        self.stats = ReplayStats()
        self._records = self._generate()

    def __next__(self) -> ReplayRecord:
        return next(self._records)

    def _generate(self) -> Iterator[ReplayRecord]:
        newest = np.iinfo(np.int64).min
        for path, label in self.files:
            fs = self.stats.per_file[label] = FileStats()
            cols = _convert(_read(path, self.mapping.columns()), self.mapping, label)
            ms = cols.pop("ms")
            # Rows are time-sorted within a file, so only earlier files can make one late.
            timed = ms[ms != _NAT]
            self.stats.late_events += int((timed < newest).sum())
            newest = max(newest, int(timed.max(initial=newest)))
            fs.rows = fs.events = len(ms)
            fs.refunds = int((cols["event_type"] == "refund").sum())
            fs.rows_without_user = int(cols.pop("no_user").sum())
            records = list(_records(cols))
            # The stream's own check (features/validate.py), so the count is what it rejects.
            fs.rejected = sum(bool(contract_errors(r.value, r.key)) for r in records)
            st = self.stats
            st.rows_read += fs.rows
            st.events += fs.events
            st.refunds += fs.refunds
            st.rows_without_user += fs.rows_without_user
            st.rejected += fs.rejected
            yield from records


_NAT = np.datetime64("NaT", "ms").astype(np.int64)


def replay(source: str | Path | Sequence[str | Path], mapping: ReplayMapping) -> Replay:
    """Replay `source` (file, directory, glob, or a list of them) as contract-v1 records."""
    return Replay(source, mapping)


def replay_online_retail(root: str | Path) -> Replay:
    """Replay the Online Retail daily files under `root`/by-day with the preset mapping."""
    return replay(Path(root) / "by-day", ONLINE_RETAIL)


def resolve_files(source: str | Path | Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(path, label) pairs: a directory's or glob's files sorted by name, lists in order."""
    if isinstance(source, Sequence) and not isinstance(source, str):
        return [f for s in source for f in resolve_files(s)]
    path = Path(source)
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES)]
        files = sorted(((p, p.relative_to(path).as_posix()) for p in found), key=lambda f: f[1])
    elif glob.has_magic(str(source)):
        files = [(Path(p), Path(p).name) for p in sorted(glob.glob(str(source), recursive=True))]
    else:
        files = [(path, path.name)] if path.is_file() else []
    if not files:
        raise FileNotFoundError(f"no CSV or Parquet files at {source}")
    return files


def missing_columns(path: Path, mapping: ReplayMapping) -> list[str]:
    """The mapping's columns that the file's header does not have."""
    if path.name.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        names = set(pq.read_schema(path).names)
    else:
        names = set(pd.read_csv(path, nrows=0).columns)
    return [c for c in mapping.columns() if c not in names]


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    if path.name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path, columns=columns)
    # Everything as text: ids keep leading zeros, and only empty cells are missing
    # (a stock code "NA" is a value, not a null).
    return pd.read_csv(path, usecols=columns, dtype=str, keep_default_na=False, na_values=[""])


def _ids(col: pd.Series) -> np.ndarray:
    """Identifiers as strings or None; float-typed ids (17850.0) lose their ".0"."""
    s = col.astype("string").str.strip()
    s = s.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True).mask(lambda x: x == "")
    return s.astype(object).where(s.notna(), None).to_numpy(dtype=object, copy=True)


def _num(col: pd.Series) -> np.ndarray:
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _convert(df: pd.DataFrame, m: ReplayMapping, label: str) -> dict[str, np.ndarray]:
    """Column-wise conversion to contract fields, rows sorted by event time (stable)."""
    n = len(df)
    t = pd.to_datetime(
        df[m.event_time], format=m.time_format or "ISO8601", utc=True, errors="coerce"
    )
    ms = t.dt.tz_convert(None).to_numpy().astype("datetime64[ms]")
    order = np.argsort(ms, kind="stable")  # NaT sorts last
    df, ms = df.iloc[order], ms[order]
    rows = order  # row number in the file, for default event ids

    if m.event_type:
        raw = df[m.event_type].astype("string").str.strip()
        etype = raw.map(lambda v: m.event_type_map.get(v, v), na_action="ignore")
        etype = etype.fillna(m.default_event_type).astype(object).to_numpy()
    else:
        etype = np.full(n, m.default_event_type, dtype=object)
    quantity = _num(df[m.quantity]) if m.quantity else np.full(n, np.nan)
    if m.amount:
        amount = _num(df[m.amount])
    elif m.quantity and m.unit_price:
        amount = quantity * _num(df[m.unit_price])
    else:
        amount = np.full(n, np.nan)
    refund = etype == "refund"
    if m.refund_prefix:
        col, prefix = m.refund_prefix
        refund |= df[col].astype("string").str.startswith(prefix).fillna(False).to_numpy(bool)
    if m.negative_is_refund:
        refund |= (quantity < 0) | (amount < 0)
    etype[refund] = "refund"
    # A refund's amount and quantity are magnitudes; other negatives pass through to be
    # rejected downstream (in Online Retail: stock write-offs and bad-debt adjustments).
    amount = np.round(np.where(refund, np.abs(amount), amount), _AMOUNT_DECIMALS)
    quantity = np.where(refund, np.abs(quantity), quantity)
    q_ok = np.isfinite(quantity) & (quantity == np.floor(quantity))

    user = _ids(df[m.user_id])
    no_user = pd.isna(user)
    currency = _ids(df[m.currency]) if m.currency else np.full(n, None, dtype=object)
    currency[pd.isna(currency)] = m.default_currency
    device = None
    if m.device:
        dev = df[m.device].astype("string").str.strip().str.lower()
        device = _ids(dev.mask(dev.notna() & ~dev.isin(DEVICES), "other"))
    event_id = (
        _ids(df[m.event_id])
        if m.event_id
        else np.array([f"{label}#{r}" for r in rows], dtype=object)
    )
    return {
        "ms": ms.astype(np.int64),
        "event_time": np.datetime_as_string(ms, unit="ms", timezone="UTC"),
        "event_id": event_id,
        "user_id": user,
        "event_type": etype,
        "amount": amount,
        "currency": currency,
        "quantity": np.where(q_ok, quantity, np.nan) if m.quantity else None,
        "product_id": _ids(df[m.product_id]) if m.product_id else None,
        "session_id": _ids(df[m.session_id]) if m.session_id else None,
        "device": device,
        "no_user": no_user,
    }


def _records(c: dict[str, Any]) -> Iterator[ReplayRecord]:
    """Build the record dicts; the only per-row Python loop."""

    n = len(c["event_type"])

    def col(name: str) -> list[Any]:
        v = c[name]
        return [None] * n if v is None else v.tolist()

    for eid, uid, et, ts, a, cur, q, pid, sid, dev in zip(
        c["event_id"], c["user_id"], c["event_type"], c["event_time"].tolist(),
        c["amount"].tolist(), c["currency"], col("quantity"), col("product_id"),
        col("session_id"), col("device"), strict=True,
    ):  # fmt: skip
        props: dict[str, Any] = {}
        if a == a:  # not NaN
            props["amount"] = a
            if cur is not None:
                props["currency"] = cur
        if q is not None and q == q:
            props["quantity"] = int(q)
        if pid is not None:
            props["product_id"] = pid
        if sid is not None:
            props["session_id"] = sid
        if dev is not None:
            props["device"] = dev
        value: dict[str, Any] = {"event_id": eid}
        if uid is not None:
            value["user_id"] = uid
        value["event_type"] = et
        if ts != "NaT":
            value["event_time"] = ts
        value["schema_version"] = SCHEMA_VERSION
        value["properties"] = props
        yield ReplayRecord(uid, value)
