"""PostgreSQL through asyncpg: a small pool, opened on first use.

Statements are written with ``?`` placeholders, as for SQLite, and numbered here
(``$1, $2``) once per statement text. The pool replaces a connection whose socket
it saw close (a server restart); one that died without a word (a firewall's idle
timeout) fails the ``SELECT 1`` each transaction starts with and is replaced too,
so neither costs a failed batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import Any

import asyncpg

from modelbroker.plugins.storage.database import DatabaseError, DatabaseURLError, UniqueViolation, error_from
from modelbroker.plugins.storage.urls import UNPARSED, DatabaseURL

POOL_SIZE = 4
#: What a connection's death looks like: the pool hands out another one. InternalClientError is a
#: connection left mid-operation by a server that ended the session (asyncpg may give it back to
#: its pool before it learns of the close): as unusable as a dead one.
_DROPPED = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.InternalClientError, OSError)


@functools.lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2, ...`` (our statements hold no ``?`` elsewhere)."""
    count = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


def _translated(exc: BaseException) -> DatabaseError:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return UniqueViolation(str(error_from(exc)))
    return error_from(exc)


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: DatabaseURL, *, connect_timeout_s: float, command_timeout_s: float) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.url.safe!r})"

    @staticmethod
    def bind_time(moment: datetime) -> datetime:
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)

    @staticmethod
    def read_time(value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)

    def reading(self) -> contextlib.AbstractAsyncContextManager[PostgresConnection]:
        return self._transaction(readonly=True)

    def writing(self) -> contextlib.AbstractAsyncContextManager[PostgresConnection]:
        return self._transaction(readonly=False)

    @contextlib.asynccontextmanager
    async def _transaction(self, readonly: bool) -> AsyncIterator[PostgresConnection]:
        try:
            pool = await self._open()
            raw = await self._checked_out(pool)
        except DatabaseError:
            raise
        except (asyncpg.PostgresError, *_DROPPED, asyncio.TimeoutError) as exc:
            raise _translated(exc) from None
        except ValueError:  # asyncpg's message quotes the part of the URL it could not read
            raise DatabaseURLError(UNPARSED) from None
        discarded = False
        try:
            transaction = raw.transaction(readonly=readonly)
            await transaction.start()
            try:
                yield PostgresConnection(raw)
            except GeneratorExit:  # the coroutine is being discarded (its loop is gone): nothing may be awaited
                discarded = True
                raise
            except BaseException:
                with contextlib.suppress(Exception):
                    await transaction.rollback()
                raise
            await transaction.commit()
        except (asyncpg.PostgresError, *_DROPPED, asyncio.TimeoutError) as exc:
            raise _translated(exc) from None
        finally:
            if not discarded:
                # asyncpg terminates a connection it cannot reset and raises; the work was committed
                # or has failed already, and that error (if any) is the one to tell.
                with contextlib.suppress(Exception):
                    await pool.release(raw)

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                if not self.url.parses:  # asyncpg would read it one way (or fail), urllib another
                    raise DatabaseURLError(UNPARSED)
                self._pool = await asyncpg.create_pool(
                    self.url.dsn, min_size=0, max_size=POOL_SIZE, timeout=self.connect_timeout_s,
                    command_timeout=self.command_timeout_s,
                )
            return self._pool

    async def _checked_out(self, pool: asyncpg.Pool) -> asyncpg.Connection:
        """A pooled connection that answers; one the server dropped is closed and replaced once."""
        raw = await pool.acquire(timeout=self.connect_timeout_s)
        try:
            await raw.fetchval("SELECT 1")
            return raw
        except _DROPPED:
            # When the close reached asyncpg during the check, it has already given the connection
            # back to the pool, and the proxy refuses every call, terminate() included.
            with contextlib.suppress(asyncpg.InterfaceError):
                raw.terminate()
            await pool.release(raw)
        return await pool.acquire(timeout=self.connect_timeout_s)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), self.connect_timeout_s)
            pool.terminate()


class PostgresConnection:
    dialect = "postgresql"

    def __init__(self, raw: asyncpg.Connection) -> None:
        self._raw = raw

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            status = await self._raw.execute(numbered(sql), *params)
        except (asyncpg.PostgresError, *_DROPPED, asyncio.TimeoutError) as exc:
            raise _translated(exc) from None
        last = status.rpartition(" ")[2]  # "UPDATE 1", "INSERT 0 1"
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            await self._raw.executemany(numbered(sql), rows)
        except (asyncpg.PostgresError, *_DROPPED, asyncio.TimeoutError) as exc:
            raise _translated(exc) from None

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[asyncpg.Record]:
        try:
            return await self._raw.fetch(numbered(sql), *params)
        except (asyncpg.PostgresError, *_DROPPED, asyncio.TimeoutError) as exc:
            raise _translated(exc) from None

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return await self._raw.fetchval(numbered(sql), *params)
        except (asyncpg.PostgresError, *_DROPPED, asyncio.TimeoutError) as exc:
            raise _translated(exc) from None

    async def has_table(self, name: str) -> bool:
        return await self.fetchval("SELECT to_regclass(?) IS NOT NULL", (name,))
