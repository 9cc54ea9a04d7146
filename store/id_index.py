"""The event ids the duplicate rule can still match, on local disk with bounded memory.

The stream rejects an event whose id is already stored on the same event date, for as long
as that date can still take events: the allowed lateness (3 days by default). At 25,000
events/s that is 6.5 billion ids; held in Python sets they cost 103 bytes each and the
driver ran out of memory within hours (docs/decisions.md, decision 59). Here they live in
RocksDB, one column family per event date (a date that leaves the lateness window is
dropped whole), with a fixed block cache and fixed write buffers: memory stays flat while
the disk holds the window.

The index is a cache of bronze, never the only copy. It records the last batch whose ids it
holds (``upto``) in the same atomic write as the ids, so after a crash it is behind bronze
by at most the batch that was being written, and :func:`store.state.fill_ids` brings it up
to date from the ``events`` table.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, cast

from rocksdict import (
    BlockBasedOptions,
    Cache,
    DBCompressionType,
    Options,
    Rdict,
    WriteBatch,
    WriteBufferManager,
)

PREFIX = "ids-"
UPTO = b"upto"
CACHE_MB = 32  # blocks read by lookups; bloom filters and indexes live here too
WRITE_BUFFER_MB = 16  # per event date, at most 64 MiB over all of them


def _options() -> Options:
    table = BlockBasedOptions()
    table.set_block_cache(Cache(CACHE_MB << 20))
    table.set_bloom_filter(10, False)  # ~1% of misses read a block; most lookups are misses
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_block_based_table_factory(table)
    opts.set_write_buffer_size(WRITE_BUFFER_MB << 20)
    opts.set_max_write_buffer_number(2)
    opts.set_write_buffer_manager(WriteBufferManager(4 * WRITE_BUFFER_MB << 20, False))
    opts.set_compression_type(DBCompressionType.none())  # random ids do not compress
    return opts


class IdIndex:
    """Event ids per event date, and the last batch they are complete up to."""

    # The indexes open in this process, by path: a query started again in the same process
    # (RocksDB allows one opener) takes over the one its stopped predecessor held.
    _live: ClassVar[weakref.WeakValueDictionary[Path, IdIndex]] = weakref.WeakValueDictionary()

    @classmethod
    def open(cls, path: Path | str) -> IdIndex:
        """The index at ``path``, the instance already open in this process if there is one."""
        path = Path(path).resolve()
        index = cls._live.get(path)
        if index is not None and not (path / "CURRENT").exists():
            # Its folder was deleted under it (a checkpoint removed to start over): what it
            # held is gone, and closing cannot write its last log.
            with contextlib.suppress(Exception):
                index.close()
        if index is None or index.closed:
            index = cls._live[path] = cls(path)
        return index

    def __init__(self, path: Path | str | None = None) -> None:
        """Open (or create) the index at ``path``; None: a temporary one, removed with it."""
        if path is None:
            path = tempfile.mkdtemp(prefix="churn-ids-")
            weakref.finalize(self, shutil.rmtree, path, True)
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._opts = _options()
        self.closed = False
        try:
            self._db = Rdict(str(self.path), self._opts)
        except Exception as exc:  # rocksdict raises a bare Exception
            if "lock" in str(exc).lower():
                raise RuntimeError(
                    f"the event-id index {self.path} is in use by another process: is a "
                    "stream on the same checkpoint already running?"
                ) from exc
            raise
        names = Rdict.list_cf(str(self.path), self._opts)
        self._days = {date.fromisoformat(n[len(PREFIX) :]) for n in names if n.startswith(PREFIX)}
        self._open: dict[date, tuple[Any, Rdict]] = {}  # (write handle, read view) per date

    @property
    def upto(self) -> int | None:
        """The batch the ids are complete up to (None: an empty index)."""
        raw = self._db.get(UPTO)
        return None if raw is None else int.from_bytes(raw, "little", signed=True)

    def days(self) -> list[date]:
        return sorted(self._days)

    def _family(self, day: date) -> tuple[Any, Rdict]:
        if day not in self._open:
            name = f"{PREFIX}{day.isoformat()}"
            if day not in self._days:
                self._db.create_column_family(name, self._opts)
                self._days.add(day)
            self._open[day] = (
                self._db.get_column_family_handle(name),
                self._db.get_column_family(name),
            )
        return self._open[day]

    def contains(self, day: date, ids: Sequence[str]) -> list[bool]:
        """For each id, whether it is held on ``day``."""
        if day not in self._days:
            return [False] * len(ids)
        view = self._family(day)[1]
        found = cast(list[bytes | None], view[[i.encode() for i in ids]])  # one multi-get
        return [v is not None for v in found]

    def add(self, batch_id: int, ids_by_day: Mapping[date, Iterable[str]]) -> None:
        """Hold these ids, and mark the index complete up to ``batch_id``: one atomic write."""
        batch = WriteBatch(raw_mode=True)
        for day, ids in ids_by_day.items():
            handle = self._family(day)[0]
            for i in ids:
                batch.put(i.encode(), b"", handle)
        batch.put(UPTO, batch_id.to_bytes(8, "little", signed=True))
        self._db.write(batch)

    def drop_before(self, day: date) -> None:
        """Forget every date before ``day``."""
        for old in [d for d in self._days if d < day]:
            self._open.pop(old, None)
            self._days.discard(old)
            self._db.drop_column_family(f"{PREFIX}{old.isoformat()}")

    def clear(self) -> None:
        """Forget everything, ``upto`` included."""
        self.drop_before(date.max)
        self._db.delete(UPTO)

    def close(self) -> None:
        self._open.clear()  # the handles keep the database open
        if not self.closed:
            self.closed = True  # even when closing fails: the instance is not used again
            self._db.close()
