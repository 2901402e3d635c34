"""One database object per URL for everything in a gateway that stores rows: the ledger,
the client keys and the stored responses.

Each used to open the database on its own, and the three wrote the same SQLite file
through three connections: three write threads taking the file's lock in turn, three
page caches, each emptied whenever another connection had written. Shared, their
transactions take turns on one connection in one thread, with one page cache that stays
warm (on PostgreSQL: one pool).

    db = shared_database(url)    # another handle on the same object while one is open
    ...
    await db.close()             # the last handle to close closes the database

A handle is bound to the event loop that opened it: a gateway started again on another
loop (a test, a reload of the whole app) gets a database of its own, since a database's
locks and futures belong to one loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from modelbroker.plugins.storage.database import Database, open_database

__all__ = ["SharedDatabase", "shared_database"]


class _Entry:
    __slots__ = ("url", "db", "loop", "handles")

    def __init__(self, url: str, db: Database, loop: asyncio.AbstractEventLoop | None) -> None:
        self.url = url
        self.db = db
        self.loop = loop
        self.handles = 0


#: URL -> the database open for it, with its loop and how many handles hold it.
_open: dict[str, _Entry] = {}


def shared_database(url: str) -> SharedDatabase:
    """A handle on the database ``url`` names, shared with every other handle opened for
    the same URL on the same event loop and not yet closed; raises what ``open_database``
    raises for a URL it cannot use."""
    loop = _running_loop()
    entry = _open.get(url)
    if entry is None or entry.loop is not loop:
        entry = _open[url] = _Entry(url, open_database(url), loop)
    entry.handles += 1
    return SharedDatabase(entry)


class SharedDatabase:
    """A ``Database`` (everything but ``close`` goes to the shared object) whose ``close``
    lets go of it, closing it if no other handle holds it."""

    def __init__(self, entry: _Entry) -> None:
        self._entry: _Entry | None = entry
        self._db = entry.db

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def __repr__(self) -> str:
        return repr(self._db)

    async def close(self) -> None:
        """Let go of the database (once: a second call does nothing); the last handle closes it."""
        entry, self._entry = self._entry, None
        if entry is None:
            return
        entry.handles -= 1
        if entry.handles > 0:
            return
        if _open.get(entry.url) is entry:
            del _open[entry.url]
        await entry.db.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
