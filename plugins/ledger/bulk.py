"""A batch of records as few statements as possible: the SQL written once, each row a tuple.

A row is one ``itemgetter`` call per record and the time as the database stores it
(text on SQLite, the datetime itself on PostgreSQL). A duplicate (request_uid,
attempt) is ignored, so a batch written twice is harmless.

On SQLite the whole batch is one hand-over to the database's thread: the rows are
made there (the Python a batch costs, mostly formatting times, stays off the event
loop), and the transaction is begun, filled and committed there. Each hand-over, and
each statement (sqlite3 lets go of the GIL while SQLite works), makes that thread take
the GIL back, and while the event loop is busy that waits for Python's switch
interval: a batch written from the loop statement by statement (four hand-overs, a
statement per 40 rows and one per leftover row) took longer under full load than the
new rows took to come in, and the queue kept growing (docs/performance.md,
'Measurements behind the code').
One statement inserts ``SQLiteDatabase.rows_per_statement`` rows (64); what is left
goes in the powers of two below it (500 = 7 x 64 + 32 + 16 + 4: ten statements), so
sqlite3's statement cache keeps at most seven of them. PostgreSQL (asyncpg) sends an
``executemany`` as one pipelined exchange already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING

from modelbroker.plugins.ledger.records import Record
from modelbroker.plugins.ledger.schema import RECORD_COLUMNS
from modelbroker.plugins.storage.database import Database

if TYPE_CHECKING:
    import sqlite3

#: ``time`` first, so a row is the bound time and then the other columns as the record holds them.
_OTHER_COLUMNS = tuple(name for name in RECORD_COLUMNS if name != "time")


@cache
def insert_ignoring_duplicates(rows: int = 1) -> str:
    """The INSERT of ``rows`` rows (positional parameters, row after row)."""
    row = f"({', '.join('?' * len(RECORD_COLUMNS))})"
    return (f"INSERT INTO attempts (time, {', '.join(_OTHER_COLUMNS)}) "
            f"VALUES {', '.join([row] * rows)} "
            "ON CONFLICT (request_uid, attempt) DO NOTHING")


class BulkInsert:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.bind_time = db.bind_time
        self.others_of = itemgetter(*_OTHER_COLUMNS)

    def rows(self, batch: list[Record]) -> Iterator[tuple]:
        """The batch as positional rows for ``insert_ignoring_duplicates()``, made as they are read."""
        bind_time, others_of = self.bind_time, self.others_of
        return ((bind_time(record["time"]), *others_of(record)) for record in batch)

    def row_groups(self, batch: list[Record], largest: int) -> Iterator[tuple[int, tuple]]:
        """The batch as (rows, parameters) for ``insert_ignoring_duplicates(rows)``: groups of
        ``largest`` rows (a power of two), then the rest in descending powers of two."""
        start, size = 0, largest
        while start < len(batch):
            while start + size > len(batch):
                size //= 2
            yield size, tuple(chain.from_iterable(self.rows(batch[start:start + size])))
            start += size

    async def write(self, batch: list[Record], *, background: bool = False,
                    hurry: Callable[[], bool] | None = None) -> int:
        """Insert ``batch`` in one transaction; returns how many of its records went in.

        ``background``: at a low priority, where the database has a thread for it (SQLite),
        and then only the beginning of the batch once ``hurry()`` (asked from that thread
        between statements) is true: the caller writes the rest at the usual priority."""
        if self.db.dialect == "sqlite":
            stop_early = hurry if background else None
            return await self.db.write_whole(lambda conn: self._insert_sqlite(conn, batch, stop_early),
                                             background=background)
        async with self.db.writing() as conn:
            await conn.executemany(insert_ignoring_duplicates(), self.rows(batch))
        return len(batch)

    def _insert_sqlite(self, conn: sqlite3.Connection, batch: list[Record], hurry: Callable[[], bool] | None) -> int:
        """In SQLite's thread, inside the transaction."""
        done = 0
        for size, params in self.row_groups(batch, self.db.rows_per_statement):
            if done and hurry is not None and hurry():
                break
            conn.execute(insert_ignoring_duplicates(size), params)
            done += size
        return done
