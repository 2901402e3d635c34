"""A batch of records as few statements as possible: the SQL written once, each row a tuple.

A row is one ``itemgetter`` call per record and the time as the database stores it
(text on SQLite, the datetime itself on PostgreSQL). The rows are made by generators:
SQLite consumes them in its own thread, so the ~3 ms of Python a batch of 500 costs
there (mostly formatting times) stays off the event loop. A duplicate (request_uid,
attempt) is ignored, so a batch written twice is harmless.

On SQLite, one statement inserts ``ROWS_PER_STATEMENT`` rows: ``executemany`` of a
one-row statement steps the statement once a row, and releases and takes back the
GIL each time, which the event loop's thread then waits on. The rows left over
(fewer than 40) go one a statement: a statement for each count would be prepared
and kept by sqlite3's statement cache, up to 39 of them, each sizeable. PostgreSQL
(asyncpg) sends an ``executemany`` as one pipelined exchange already.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from itertools import chain
from operator import itemgetter

from plugins.ledger.database import Connection, Database
from plugins.ledger.records import Record
from plugins.ledger.schema import RECORD_COLUMNS

#: ``time`` first, so a row is the bound time and then the other columns as the record holds them.
_OTHER_COLUMNS = tuple(name for name in RECORD_COLUMNS if name != "time")
#: Rows per SQLite statement: 40 x 24 columns stays under 999 parameters, the limit of SQLite
#: before 3.32 (later versions allow 32,766).
ROWS_PER_STATEMENT = 40


@cache
def insert_ignoring_duplicates(rows: int = 1) -> str:
    """The INSERT of ``rows`` rows (positional parameters, row after row)."""
    row = f"({', '.join('?' * len(RECORD_COLUMNS))})"
    return (f"INSERT INTO attempts (time, {', '.join(_OTHER_COLUMNS)}) "
            f"VALUES {', '.join([row] * rows)} "
            "ON CONFLICT (request_uid, attempt) DO NOTHING")


class BulkInsert:
    def __init__(self, db: Database) -> None:
        self.bind_time = db.bind_time
        self.others_of = itemgetter(*_OTHER_COLUMNS)

    def rows(self, batch: list[Record]) -> Iterator[tuple]:
        """The batch as positional rows for ``insert_ignoring_duplicates()``, made as they are read."""
        bind_time, others_of = self.bind_time, self.others_of
        return ((bind_time(record["time"]), *others_of(record)) for record in batch)

    def row_groups(self, batch: list[Record], size: int) -> Iterator[tuple]:
        """The batch as groups of ``size`` rows, each one tuple for ``insert_ignoring_duplicates(size)``."""
        for start in range(0, len(batch), size):
            yield tuple(chain.from_iterable(self.rows(batch[start:start + size])))

    async def execute(self, conn: Connection, batch: list[Record]) -> None:
        if conn.dialect != "sqlite":
            await conn.executemany(insert_ignoring_duplicates(), self.rows(batch))
            return
        whole = len(batch) - len(batch) % ROWS_PER_STATEMENT
        if whole:
            await conn.executemany(insert_ignoring_duplicates(ROWS_PER_STATEMENT),
                                   self.row_groups(batch[:whole], ROWS_PER_STATEMENT))
        if whole < len(batch):
            await conn.executemany(insert_ignoring_duplicates(), self.rows(batch[whole:]))
