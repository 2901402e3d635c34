"""plugins/storage/database.py and its two implementations: what the ledger and the keys rely on."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

from modelbroker.plugins.storage.database import DatabaseError, UniqueViolation, open_database

from .conftest import admin, dsn
from .helpers import run, with_db


def test_placeholders_parameters_and_times_mean_the_same_on_both(database_url):
    moment = datetime(2025, 1, 31, 23, 59, 58, 5, tzinfo=timezone(timedelta(hours=-3)))

    async def work(db):
        async with db.writing() as conn:
            await conn.execute("CREATE TABLE t (name TEXT, at TIMESTAMP WITH TIME ZONE, n INTEGER)"
                               if db.dialect == "postgresql" else "CREATE TABLE t (name TEXT, at DATETIME, n INTEGER)")
            await conn.executemany("INSERT INTO t (name, at, n) VALUES (?, ?, ?)",
                                   ((f"r{i}", db.bind_time(moment + timedelta(hours=i)), i) for i in range(3)))
            changed = await conn.execute("UPDATE t SET n = n + 10 WHERE n >= ?", (1,))
        async with db.reading() as conn:
            rows = await conn.fetch("SELECT name, at, n FROM t WHERE at >= ? ORDER BY n", (moment + timedelta(hours=1),))
            missing = await conn.fetchval("SELECT n FROM t WHERE name = ?", ("nobody",))
            return changed, [(r["name"], db.read_time(r["at"]), r[2]) for r in rows], missing

    changed, rows, missing = run(with_db(database_url, work))
    assert changed == 2 and missing is None
    assert rows == [("r1", moment + timedelta(hours=1), 11), ("r2", moment + timedelta(hours=2), 12)]
    assert rows[0][1].tzinfo == timezone.utc


def test_sqlite_binds_none_and_bools_through_registered_adapters(sqlite_url):
    """None and bool skip sqlite3's failed adapter lookup (see sqlite_db), and still bind as NULL, 1, 0."""
    assert sqlite3.adapters.get((type(None), sqlite3.PrepareProtocol)) is not None
    assert sqlite3.adapters.get((bool, sqlite3.PrepareProtocol)) is int

    async def work(db):
        async with db.writing() as conn:
            await conn.execute("CREATE TABLE flags (ok BOOLEAN, why TEXT)")
            await conn.executemany("INSERT INTO flags (ok, why) VALUES (?, ?)", [(True, None), (False, "no")])
        async with db.reading() as conn:
            return [tuple(r) for r in await conn.fetch("SELECT typeof(ok), ok, typeof(why) FROM flags ORDER BY ok")]

    assert run(with_db(sqlite_url, work)) == [("integer", 0, "text"), ("integer", 1, "null")]


def test_a_failed_block_rolls_back_and_errors_are_ours(database_url):
    async def work(db):
        async with db.writing() as conn:
            await conn.execute("CREATE TABLE u (k TEXT PRIMARY KEY)")
            await conn.execute("INSERT INTO u VALUES (?)", ("a",))
        with pytest.raises(UniqueViolation):
            async with db.writing() as conn:
                await conn.execute("INSERT INTO u VALUES (?)", ("b",))
                await conn.execute("INSERT INTO u VALUES (?)", ("a",))
        with pytest.raises(DatabaseError, match="no_such_table|no such table|does not exist"):
            async with db.reading() as conn:
                await conn.fetch("SELECT * FROM no_such_table")
        async with db.reading() as conn:
            return [row[0] for row in await conn.fetch("SELECT k FROM u ORDER BY k")]

    assert run(with_db(database_url, work)) == ["a"]  # "b" went with the failed transaction


def test_sqlite_reads_do_not_wait_behind_a_write_in_progress(sqlite_url):
    async def work(db):
        async with db.writing() as conn:
            await conn.execute("CREATE TABLE v (n INTEGER)")
            await conn.execute("INSERT INTO v VALUES (1)")
        release = asyncio.Event()

        async def slow_writer():
            async with db.writing() as conn:
                await conn.execute("INSERT INTO v VALUES (2)")
                await release.wait()  # holds the write transaction open

        async def read():
            async with db.reading() as conn:  # would wait for `release` if reads shared the writer's lane
                return await conn.fetchval("SELECT count(*) FROM v")

        writer = asyncio.create_task(slow_writer())
        await asyncio.sleep(0.05)
        try:
            return await asyncio.wait_for(read(), 5)
        finally:
            release.set()
            await writer

    assert run(with_db(sqlite_url, work)) == 1  # the uncommitted row is not seen


def test_sqlite_write_whole_commits_or_rolls_back_and_takes_turns_with_writing(sqlite_url):
    """``write_whole`` runs a transaction in one hand-over; it waits for a ``writing()`` block
    in progress on the same lane instead of beginning inside it."""
    async def work(db):
        async with db.writing() as conn:
            await conn.execute("CREATE TABLE w (n INTEGER PRIMARY KEY)")
        release = asyncio.Event()

        async def slow_writer():
            async with db.writing() as conn:
                await conn.execute("INSERT INTO w VALUES (1)")
                await release.wait()

        writer = asyncio.create_task(slow_writer())
        await asyncio.sleep(0.05)
        whole = asyncio.create_task(db.write_whole(lambda conn: conn.execute("INSERT INTO w VALUES (2)").rowcount))
        await asyncio.sleep(0.05)
        assert not whole.done()  # waiting for its turn
        release.set()
        await writer
        assert await whole == 1

        def fails_halfway(conn):
            conn.execute("INSERT INTO w VALUES (3)")
            conn.execute("INSERT INTO w VALUES (1)")  # a duplicate key

        with pytest.raises(UniqueViolation):
            await db.write_whole(fails_halfway)
        async with db.reading() as conn:
            return [row[0] for row in await conn.fetch("SELECT n FROM w ORDER BY n")]

    assert run(with_db(sqlite_url, work)) == [1, 2]  # 3 rolled back with the failed transaction


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own nice value is Linux's")
def test_sqlite_background_work_runs_at_a_low_priority_and_never_beside_other_work(sqlite_url):
    """The background twin runs at BACKGROUND_NICE; a call waits for the work handed over
    before it, even when that work's caller was cancelled (one connection, one thread at a time)."""
    from modelbroker.plugins.storage.sqlite_db import BACKGROUND_NICE

    def nice(conn):
        return os.getpriority(os.PRIO_PROCESS, 0)  # on Linux: the calling thread's

    async def work(db):
        async with db.writing() as conn:
            await conn.execute("CREATE TABLE x (n INTEGER)")
        low = await db.write_whole(nice, background=True)
        normal = await db.write_whole(nice)
        entered, leave = threading.Event(), threading.Event()

        def slow(conn):
            entered.set()
            leave.wait(5)
            conn.execute("INSERT INTO x VALUES (1)")

        first = asyncio.create_task(db.write_whole(slow, background=True))
        await asyncio.to_thread(entered.wait, 5)
        first.cancel()  # the thread goes on with it
        second = asyncio.create_task(db.write_whole(lambda conn: conn.execute("INSERT INTO x VALUES (2)").rowcount))
        await asyncio.sleep(0.1)
        waited = not second.done()
        leave.set()
        assert await second == 1
        async with db.reading() as conn:
            rows = [row[0] for row in await conn.fetch("SELECT n FROM x ORDER BY rowid")]
        return low, normal, waited, rows

    low, normal, waited, rows = run(with_db(sqlite_url, work))
    ours = os.getpriority(os.PRIO_PROCESS, 0)  # the test's own thread: what a normal thread inherits
    assert (low, normal) == (max(BACKGROUND_NICE, ours), ours)
    assert waited and rows == [1, 2]


def test_two_processes_opening_a_new_sqlite_file_at_once_both_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"

    async def open_and_write(name):
        db = open_database(url)
        try:
            async with db.writing() as conn:
                await conn.execute("CREATE TABLE IF NOT EXISTS w (name TEXT)")
                await conn.execute("INSERT INTO w VALUES (?)", (name,))
        finally:
            await db.close()

    async def race():
        await asyncio.gather(*(open_and_write(f"db{i}") for i in range(4)))

    for _ in range(5):  # the WAL switch race showed in ~1 of 10 fresh files
        (tmp_path / "new.db").unlink(missing_ok=True)
        run(race())
        assert sqlite3.connect(tmp_path / "new.db").execute("SELECT count(*) FROM w").fetchone()[0] == 4


def test_a_postgres_connection_the_server_dropped_is_replaced_without_an_error(postgres):
    async def work(db):
        async with db.writing() as conn:
            await conn.execute("CREATE TABLE x (n INTEGER)")
        await admin(postgres.server_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{postgres.name}' AND pid <> pg_backend_pid()")
        await asyncio.sleep(0.2)
        async with db.writing() as conn:  # the pooled connection is dead: another one is used
            await conn.execute("INSERT INTO x VALUES (?)", (7,))
        async with db.reading() as conn:
            return await conn.fetchval("SELECT sum(n) FROM x")

    assert run(with_db(postgres.url, work)) == 7


def test_a_postgres_connection_found_dropped_by_the_check_itself_is_replaced_without_an_error(postgres):
    """The server's close reaches the loop only during the ``SELECT 1`` check (as under load, or
    right after a restart): asyncpg has already given the connection back to its pool by then."""
    def drop_connections_while_the_loop_waits():
        kill = threading.Thread(target=lambda: run(admin(
            postgres.server_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{postgres.name}' AND pid <> pg_backend_pid()")))
        kill.start()
        kill.join()

    async def work(db):
        async with db.writing() as conn:
            await conn.execute("CREATE TABLE x (n INTEGER)")
        drop_connections_while_the_loop_waits()
        async with db.writing() as conn:
            await conn.execute("INSERT INTO x VALUES (?)", (7,))
        async with db.reading() as conn:
            return await conn.fetchval("SELECT sum(n) FROM x")

    assert run(with_db(postgres.url, work)) == 7


class _PooledConnection:
    """Stands in for an asyncpg pooled connection: its ``SELECT 1`` raises ``error``, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.terminated = False

    async def fetchval(self, sql):
        if self.error is not None:
            raise self.error
        return 1

    def terminate(self):
        self.terminated = True

    def transaction(self, readonly=False):
        return _Transaction()

    async def execute(self, sql, *params):
        return "INSERT 0 1"


class _Transaction:
    async def start(self):
        pass

    async def commit(self):
        pass

    async def rollback(self):
        pass


class _Pool:
    def __init__(self, *connections, release_error: BaseException | None = None):
        self.connections = list(connections)
        self.released = []
        self.release_error = release_error

    async def acquire(self, timeout=None):
        return self.connections.pop(0)

    async def release(self, connection):
        self.released.append(connection)
        if self.release_error is not None:
            raise self.release_error


def test_a_postgres_connection_left_mid_operation_is_replaced_not_raised():
    """The server ended a session in the middle of a pipelined insert (``pg_ctl stop -m fast``
    under the chaos run): asyncpg gave the connection back to its pool still waiting for the
    end of the failed operation, and the next transaction's check got InternalClientError
    ("cannot switch to state 12; another operation (2) is in progress"), which escaped as it
    was. The race is too narrow to make on a real server in a test; the pool stands in."""
    asyncpg = pytest.importorskip("asyncpg")
    from modelbroker.plugins.storage.postgres_db import PostgresDatabase
    from modelbroker.plugins.storage.urls import DatabaseURL

    db = PostgresDatabase(DatabaseURL.parse("postgresql://u@127.0.0.1:9/db"), connect_timeout_s=1, command_timeout_s=1)
    stuck = _PooledConnection(asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is "
                                                          "in progress"))
    fresh = _PooledConnection()
    pool = _Pool(stuck, fresh)
    assert run(db._checked_out(pool)) is fresh
    assert stuck.terminated and pool.released == [stuck]


def test_a_postgres_connection_that_cannot_be_given_back_does_not_undo_a_committed_write():
    """asyncpg resets a connection given back to its pool; when the reset fails (the server
    ended the session meanwhile), it terminates the connection and raises. The transaction
    had committed: the writer must not take the batch for failed."""
    asyncpg = pytest.importorskip("asyncpg")
    from modelbroker.plugins.storage.postgres_db import PostgresDatabase
    from modelbroker.plugins.storage.urls import DatabaseURL

    db = PostgresDatabase(DatabaseURL.parse("postgresql://u@127.0.0.1:9/db"), connect_timeout_s=1, command_timeout_s=1)
    db._pool = _Pool(_PooledConnection(), release_error=asyncpg.ConnectionDoesNotExistError("connection was closed"))

    async def write():
        async with db.writing() as conn:
            return await conn.execute("INSERT INTO x VALUES (?)", (1,))

    assert run(write()) == 1


def test_an_unreachable_postgres_is_a_database_error_without_the_password():
    url = "postgresql://u:hunter2@127.0.0.1:9/db"  # the discard port: nothing listens

    async def work(db):
        async with db.reading() as conn:
            await conn.fetchval("SELECT 1")

    with pytest.raises(DatabaseError) as caught:
        run(with_db(url, work))
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(open_database(url))
    assert dsn(url) == "postgresql://u:hunter2@127.0.0.1:9/db"


def test_a_transaction_discarded_with_its_loop_closes_without_awaiting(sqlite_url):
    """A loop that stops with a transaction open (a gateway thread ended without shutdown): when the
    coroutine is closed, as garbage collection does, the block must not await a rollback."""
    db = open_database(sqlite_url)
    loop = asyncio.new_event_loop()

    async def stuck():
        async with db.reading() as conn:
            await conn.fetchval("SELECT 1")
            await asyncio.Event().wait()  # never set

    coro = stuck()
    task = loop.create_task(coro)
    loop.run_until_complete(asyncio.sleep(0.2))
    loop.close()
    task._log_destroy_pending = False  # abandoned on purpose: no "Task was destroyed" warning
    coro.close()  # raised "coroutine ignored GeneratorExit" when the rollback was awaited


def test_sqlite_times_are_stored_as_the_text_earlier_versions_wrote():
    """``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, as SQLAlchemy wrote them: old and new rows compare alike."""
    from modelbroker.plugins.storage.sqlite_db import bind_time

    east = timezone(timedelta(hours=5, minutes=30))
    for moment in (datetime(2025, 1, 31, 23, 59, 58, 5, tzinfo=timezone.utc),
                   datetime(2025, 2, 1, 5, 29, 58, 5, tzinfo=east),
                   datetime(999, 12, 31, 0, 0, 0),  # naive: taken as UTC
                   datetime(2026, 11, 27, 16, 28, 43, 0, tzinfo=timezone.utc)):
        utc = moment.astimezone(timezone.utc) if moment.tzinfo else moment
        assert bind_time(moment) == utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    assert bind_time(datetime(2025, 2, 1, 5, 29, 58, 5, tzinfo=east)) == "2025-01-31 23:59:58.000005"


def test_an_sqlite_file_that_cannot_be_opened_is_named_with_what_to_check(tmp_path):
    """SQLite says only 'unable to open database file'."""
    (tmp_path / "a-file").write_text("not a folder")
    path = tmp_path / "a-file" / "ledger.db"

    async def read(db):
        async with db.reading() as conn:
            await conn.fetch("SELECT 1")

    with pytest.raises(DatabaseError) as refused:
        run(with_db(f"sqlite:///{path}", read))
    assert str(refused.value) == (f"OperationalError: unable to open database file: {path} (can this process "
                                  "create and write files in its folder? MODELBROKER_DATABASE_URL names it)")
