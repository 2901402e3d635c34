"""A batch of records as one executemany: the statement written once, each row a tuple.

A row is one ``itemgetter`` call per record and the time as the database stores it
(text on SQLite, the datetime itself on PostgreSQL). The rows are a generator: SQLite
consumes it in its own thread, so the ~3 ms of Python a batch of 500 costs there
(mostly formatting times) stays off the event loop. A duplicate (request_uid,
attempt) is ignored, so a batch written twice is harmless.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import itemgetter

from plugins.ledger.database import Connection, Database
from plugins.ledger.records import Record
from plugins.ledger.schema import RECORD_COLUMNS

#: ``time`` first, so a row is the bound time and then the other columns as the record holds them.
_OTHER_COLUMNS = tuple(name for name in RECORD_COLUMNS if name != "time")
INSERT_IGNORING_DUPLICATES = (
    f"INSERT INTO attempts (time, {', '.join(_OTHER_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(RECORD_COLUMNS))}) "
    "ON CONFLICT (request_uid, attempt) DO NOTHING"
)


class BulkInsert:
    def __init__(self, db: Database) -> None:
        self.bind_time = db.bind_time
        self.others_of = itemgetter(*_OTHER_COLUMNS)

    def rows(self, batch: list[Record]) -> Iterator[tuple]:
        """The batch as positional rows for ``INSERT_IGNORING_DUPLICATES``, made as they are read."""
        bind_time, others_of = self.bind_time, self.others_of
        return ((bind_time(record["time"]), *others_of(record)) for record in batch)

    async def execute(self, conn: Connection, batch: list[Record]) -> None:
        await conn.executemany(INSERT_IGNORING_DUPLICATES, self.rows(batch))
