"""SQLite through the standard library's ``sqlite3``, on threads of its own.

Two lanes per database object, one for writes and one for reads, each a connection
opened on first use in a worker thread of its own; every statement runs there, so
the event loop never waits on the disk. Within a lane, transactions take turns (an
asyncio lock); across lanes WAL lets a read (``/usage``) run beside a write. A lane
may also run work in a second thread at a low priority (``background``: the ledger's
batches), never at the same time as the first.

The file is in WAL mode with ``synchronous=NORMAL`` and a busy timeout, so several
processes on one machine can share it; write transactions start with
``BEGIN IMMEDIATE``, so one that reads, then writes (a migration) waits for the
lock instead of failing halfway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, TypeVar

from modelbroker.plugins.storage.database import UniqueViolation, error_from
from modelbroker.plugins.storage.urls import DatabaseURL

T = TypeVar("T")

#: The nice value of a lane's background thread, which writes the ledger's batches while
#: the writer keeps up (``plugins/ledger/writer.py``). The gateway usually has one core
#: to itself, and the database thread shares it with the event loop: at nice 0 a batch
#: (most of its CPU in SQLite with the GIL let go) held off requests arriving meanwhile,
#: and at c=1 the gateway's p99 was well above the one with the ledger off
#: (``bench.profile -c 1``); at 19 the event loop's thread takes the core back as soon as
#: it has work, and the p99 came close to the ledger-off one (docs/performance.md,
#: 'Measurements behind the code'). (A nice value cannot be lowered again without
#: privileges, hence a second thread for a writer that has fallen behind.)
BACKGROUND_NICE = 19

# sqlite3 "adapts" every parameter that is not exactly an int, float, str or bytearray: for
# None and bool it looks up an adapter, finds none, and formats an AttributeError that it
# then drops, for every such value. A ledger row has eight, and with these adapters it is
# measurably cheaper to insert (docs/performance.md, 'Measurements behind the code'). They
# give what sqlite3 binds anyway (NULL, an integer), for every user of sqlite3 in the
# process, so nothing else changes.
sqlite3.register_adapter(type(None), lambda value: None)
sqlite3.register_adapter(bool, int)

#: Timestamps are stored as the text SQLAlchemy wrote (``%Y-%m-%d %H:%M:%S.%f``, UTC), so files
#: from earlier versions compare alike.


def bind_time(moment: datetime) -> str:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC (a naive datetime is taken as UTC).

    Formatted with ``%`` rather than ``isoformat``, which goes through C's printf and is
    measurably slower; this runs once for every ledger row (docs/performance.md,
    'Measurements behind the code')."""
    if moment.tzinfo is not None and moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, moment.microsecond)


def _bind(params: Sequence[Any]) -> Sequence[Any]:
    if any(isinstance(value, datetime) for value in params):
        return tuple(bind_time(v) if isinstance(v, datetime) else v for v in params)
    return params


class SQLiteDatabase:
    dialect = "sqlite"
    #: Rows in one multi-row INSERT (``plugins/ledger/bulk.py``), a power of two: 64 x 24
    #: columns = 1,536 parameters, which SQLite allows from 3.32 on (32,766; 999 before).
    #: Past a modest number of rows a statement an insert costs about the same per row; a
    #: larger statement saves GIL hand-overs and costs its size in sqlite3's statement cache
    #: (docs/performance.md, 'Measurements behind the code').
    rows_per_statement = 64 if sqlite3.sqlite_version_info >= (3, 32) else 32

    def __init__(self, url: DatabaseURL, *, busy_timeout_s: float) -> None:
        self.url = url
        self.busy_timeout_s = busy_timeout_s
        self._writes = _Lane(self._connect, "write")
        # WAL lets a reader run beside the writer, so /usage never waits behind a batch (or
        # behind another process's write lock). In memory, a second connection would be a
        # second, empty database: there, reads take the writer's lane.
        self._reads = self._writes if url.path is None else _Lane(self._connect, "read")

    def __repr__(self) -> str:
        return f"SQLiteDatabase({self.url.safe!r})"

    bind_time = staticmethod(bind_time)

    @staticmethod
    def read_time(value: Any) -> datetime | None:
        if value is None:
            return None
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)

    def reading(self) -> contextlib.AbstractAsyncContextManager[SQLiteConnection]:
        return self._reads.transaction("BEGIN")

    def writing(self) -> contextlib.AbstractAsyncContextManager[SQLiteConnection]:
        return self._writes.transaction("BEGIN IMMEDIATE")

    async def write_whole(self, work: Callable[[sqlite3.Connection], T], *, background: bool = False) -> T:
        """``work(connection)`` as one write transaction, begun, run and committed in the
        database's thread in one hand-over (``writing()`` hands over once a statement);
        ``background``: in its twin at ``BACKGROUND_NICE``."""
        return await self._writes.whole("BEGIN IMMEDIATE", work, background=background)

    def _connect(self) -> sqlite3.Connection:
        path = ":memory:" if self.url.path is None else str(self.url.path)
        try:
            conn = sqlite3.connect(path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
        except sqlite3.OperationalError as exc:  # SQLite's own words name neither the file nor the cause
            raise sqlite3.OperationalError(
                f"{exc}: {path} (can this process create and write files in its folder? "
                "MODELBROKER_DATABASE_URL names it)") from None
        conn.row_factory = sqlite3.Row
        try:
            self._use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL, waiting for the lock that takes: SQLite does not apply the busy
        timeout to it, so two processes opening a new file at once would fail one of them."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    async def close(self) -> None:
        await self._writes.close()
        await self._reads.close()


class _Lane:
    """One connection, opened on first use in a thread of its own; its transactions take turns."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._name = name
        self._thread: ThreadPoolExecutor | None = None
        self._background: ThreadPoolExecutor | None = None  # the same, at a low priority
        self._last: Future | None = None  # the latest work handed to either thread
        self._conn: sqlite3.Connection | None = None
        self._turn = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def transaction(self, begin: str) -> AsyncIterator[SQLiteConnection]:
        async with self._turn:
            await self.run(lambda conn: conn.execute(begin))
            try:
                yield SQLiteConnection(self)
            except GeneratorExit:  # the coroutine is being discarded (its loop is gone): nothing may be awaited
                raise
            except BaseException:
                await asyncio.shield(self.run(_rollback))
                raise
            try:
                await self.run(lambda conn: conn.execute("COMMIT"))
            except BaseException:  # busy, or cancelled: the transaction must not stay open
                await asyncio.shield(self.run(_rollback))
                raise

    async def whole(self, begin: str, work: Callable[[sqlite3.Connection], T], *, background: bool = False) -> T:
        """``work(connection)`` between ``begin`` and COMMIT (ROLLBACK if it raises), in one ``run``.

        Cancelled while the thread works, the transaction still ends there, committed or
        rolled back; the next ``run`` waits for it."""
        def in_transaction(conn: sqlite3.Connection) -> T:
            conn.execute(begin)
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return result

        async with self._turn:
            return await self.run(in_transaction, background=background)

    async def run(self, work: Callable[[sqlite3.Connection], T], *, background: bool = False) -> T:
        """``work(connection)`` in the lane's thread (``background``: its low-priority twin);
        driver errors become DatabaseError. The connection serves one thread at a time: a
        call first waits for the work handed over before it, even if whoever handed that
        over was cancelled meanwhile (the thread finishes it all the same)."""
        await self._last_done()
        job = self._executor(background).submit(self._call, work)
        self._last = job
        return await asyncio.wrap_future(job)

    async def _last_done(self) -> None:
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait([asyncio.wrap_future(last)])

    def _executor(self, background: bool) -> ThreadPoolExecutor:
        if background:
            if self._background is None:
                self._background = ThreadPoolExecutor(
                    1, thread_name_prefix=f"modelbroker-sqlite-{self._name}-background", initializer=lower_priority)
            return self._background
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"modelbroker-sqlite-{self._name}")
        return self._thread

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._conn is None:
                self._conn = self._connect()
            return work(self._conn)
        except sqlite3.IntegrityError as exc:
            if getattr(exc, "sqlite_errorname", "") in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
                raise UniqueViolation(str(error_from(exc))) from None
            raise error_from(exc) from None
        except sqlite3.Error as exc:
            raise error_from(exc) from None

    async def close(self) -> None:
        async with self._turn:
            threads = [thread for thread in (self._thread, self._background) if thread is not None]
            if not threads:
                return
            await self._last_done()
            self._thread = self._background = None
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(threads[0], conn.close)
            for thread in threads:
                thread.shutdown(wait=False)


def lower_priority() -> None:
    """The calling thread's nice value to ``BACKGROUND_NICE`` (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class SQLiteConnection:
    dialect = "sqlite"

    def __init__(self, lane: _Lane) -> None:
        self._lane = lane

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        params = _bind(params)
        return await self._lane.run(lambda conn: conn.execute(sql, params).rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """``rows`` may be a generator: it is then consumed in the database's thread, off the event loop."""
        await self._lane.run(lambda conn: conn.executemany(sql, rows))

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        params = _bind(params)
        return await self._lane.run(lambda conn: conn.execute(sql, params).fetchall())

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        params = _bind(params)

        def first(conn: sqlite3.Connection) -> Any:
            row = conn.execute(sql, params).fetchone()
            return None if row is None else row[0]

        return await self._lane.run(first)

    async def has_table(self, name: str) -> bool:
        return bool(await self.fetchval("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                                        (name,)))


__all__ = ["SQLiteConnection", "SQLiteDatabase"]
