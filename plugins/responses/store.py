"""Stored responses: kept in memory at once, written to the database in the background.

``add`` runs on the event loop for every response with ``store`` not false, and only
puts it in memory: a request never waits for the disk. A background task writes what
waits in batches (``writer.py``), purges expired rows at startup and then periodically,
and everything left is written at shutdown. A response is found by the very next
request, before its batch is written: the ones waiting to be written and the most
recently used are looked up in memory first, the database only for older ones.

A conversation's responses are kept until ``retention_days`` after its latest response:
continuing one extends the lifetime of those before it, so a long conversation never
loses its beginning while it goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from modelbroker import hookimpl
from modelbroker.plugins.responses import tables
from modelbroker.plugins.responses.writer import ResponseWriter
from modelbroker.plugins.storage.database import Database, describe

#: The name the per-gateway ``ResponseStore`` is registered under in the plugin manager.
STORE_NAME = "responses.store"
#: Bytes of JSON kept in memory of the responses already written, the most recently used
#: (about a thousand of a short exchange; a few dozen of long ones).
RECENT_BYTES = 1 << 20
#: Seconds a read from the database may take before the request is answered 503.
READ_TIMEOUT_S = 5.0
#: A continued conversation's earlier rows are written a new expiry only when theirs falls
#: this share of the retention short of it: an active conversation does not rewrite its
#: whole history on every turn.
EXTEND_SLACK = 0.01


def kept_json(value: Any) -> bytes:
    """``value`` as JSON, in bytes of their own size: for JSON kept in memory for a while.

    orjson's ``dumps`` returns bytes in the buffer it wrote into, sized for the worst case and
    never shrunk: 4 KiB for a few bytes of JSON, about 13 times the length of a long string
    (orjson 3.13). A thousand kept inputs of 50 bytes held 4 MiB that way."""
    return memoryview(orjson.dumps(value)).tobytes()


@dataclass(slots=True)
class StoredResponse:
    """One stored response: its own input items and the Response object, as JSON, and its links.

    Kept as JSON, not as dicts: the answer, the database row and a retrieve all use the same
    bytes (serialized once), and the thousand responses kept in memory take a few times
    less room than their dicts would. A continued conversation reads the dicts back
    (``input``, ``response``), about 2 µs a response of this size.
    """

    id: str
    previous_id: str | None
    owner: str | None
    created_at: float  # seconds since the epoch
    expires_at: float
    input_json: bytes
    response_json: bytes
    #: The bytes of its JSON, which is most of the memory it holds (counted once: the pending
    #: and the recent responses add it up as responses come and go).
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.input_json) + len(self.response_json)

    @classmethod
    def of(cls, response_id: str, previous_id: str | None, owner: str | None, expires_at: float,
           input: list[dict[str, Any]], response: dict[str, Any], response_json: bytes | None = None) -> StoredResponse:
        """From the request's input items and the Response object (``response_json``, if it is
        already serialized)."""
        return cls(response_id, previous_id, owner, response["created_at"], expires_at, kept_json(input),
                   response_json if response_json is not None else kept_json(response))

    @property
    def input(self) -> list[dict[str, Any]]:
        return orjson.loads(self.input_json)

    @property
    def response(self) -> dict[str, Any]:
        return orjson.loads(self.response_json)

    def row(self, times: Mapping[float, Any]) -> tuple[Any, ...]:
        """The table's row; ``times`` maps seconds since the epoch to the database's value."""
        return (self.id, self.previous_id, self.owner, times[self.created_at], times[self.expires_at],
                self.input_json.decode(), self.response_json.decode())

    def visible_to(self, owner: str | None) -> bool:
        """A response made for a client key is that key's alone (404 to anyone else)."""
        return self.owner is None or self.owner == owner


class RecentResponses:
    """Responses already written (or read back), the most recently used last, up to
    ``max_bytes`` of their JSON: the next turn of a conversation finds the turns before it
    here instead of in the database. Bounded by size, not by count: a thousand long
    responses would hold hundreds of MiB."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._kept: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self) -> Iterator[str]:
        return iter(self._kept)

    def get(self, response_id: str) -> StoredResponse | None:
        """The response, now the most recently used, if it is kept."""
        found = self._kept.get(response_id)
        if found is not None:
            self._kept.move_to_end(response_id)
        return found

    def put(self, stored: StoredResponse) -> None:
        """Keep ``stored`` as the most recently used (``trim`` then forgets the oldest)."""
        self.put_all((stored,))

    def put_all(self, batch: Iterable[StoredResponse]) -> None:
        """``put`` each of ``batch``, in order (a written batch: one call, not one a response)."""
        kept, added = self._kept, 0
        for stored in batch:
            old = kept.pop(stored.id, None)
            if old is not None:
                added -= old.size
            kept[stored.id] = stored
            added += stored.size
        self.bytes += added

    def forget(self, response_id: str) -> None:
        old = self._kept.pop(response_id, None)
        if old is not None:
            self.bytes -= old.size

    def forget_expired(self, now: float) -> None:
        for response_id in [key for key, stored in self._kept.items() if stored.expires_at <= now]:
            self.forget(response_id)

    def trim(self) -> None:
        """Forget the least recently used until the rest fit in ``max_bytes``."""
        kept = self._kept
        while self.bytes > self.max_bytes and kept:
            self.bytes -= kept.popitem(last=False)[1].size


class StoreUnavailable(Exception):
    """The database cannot be read now; the message says why (one line, no secret)."""


class ResponseStore:
    """Registered in the plugin manager by the surface's ``on_startup``: one per gateway."""

    def __init__(self, db: Database, *, sqlite_file: Path | None = None, purge_interval_s: float = 3600.0) -> None:
        self.db = db
        self.sqlite_file = sqlite_file
        #: Not yet written, in the order made, and the bytes of their JSON.
        self.pending: dict[str, StoredResponse] = {}
        self.pending_bytes = 0
        #: Written (or read back), the most recently used last.
        self.recent = RecentResponses(RECENT_BYTES)
        self.writer = ResponseWriter(self, purge_interval_s)

    async def start(self) -> None:
        if self.sqlite_file is not None:
            await asyncio.to_thread(self.sqlite_file.parent.mkdir, parents=True, exist_ok=True)
        await self.writer.start()

    @hookimpl
    async def on_shutdown(self) -> None:
        """Write what waits, then close the database."""
        await self.writer.stop()
        await self.db.close()

    # --- on the event loop, for every stored response -----------------------------------

    def add(self, stored: StoredResponse, ancestors: list[StoredResponse]) -> None:
        """Keep ``stored``, and its conversation as long as it (never blocks, never raises)."""
        pending = self.pending
        pending[stored.id] = stored
        self.pending_bytes += stored.size
        if ancestors:
            slack = (stored.expires_at - time.time()) * EXTEND_SLACK
            for ancestor in ancestors:
                if ancestor.expires_at < stored.expires_at - slack:
                    ancestor.expires_at = stored.expires_at
                    self.writer.extend(ancestor.id, stored.expires_at)
        # The writer is woken when a batch fills (it then writes every whole batch waiting), or
        # when too much waits: not again for each response that comes in while it writes.
        writer, waiting = self.writer, len(pending)
        if (waiting == writer.batch_size or waiting > writer.max_pending
                or self.pending_bytes > writer.max_pending_bytes):
            writer.batch_waits()

    def written(self, batch: list[StoredResponse]) -> None:
        """A batch is in the database: from the pending ones to the recent ones (new there:
        a response read back from the database is never among the pending ones)."""
        pending, moved, freed = self.pending, [], 0
        for stored in batch:
            if pending.pop(stored.id, None) is not None:
                moved.append(stored)
                freed += stored.size
        self.pending_bytes -= freed
        self.recent.put_all(moved)
        self.recent.trim()

    def forget_pending(self, response_id: str) -> None:
        stored = self.pending.pop(response_id, None)
        if stored is not None:
            self.pending_bytes -= stored.size

    def _remember(self, stored: StoredResponse) -> None:
        self.recent.put(stored)
        self.recent.trim()

    def _in_memory(self, response_id: str) -> StoredResponse | None:
        found = self.pending.get(response_id)
        return found if found is not None else self.recent.get(response_id)

    # --- lookups ------------------------------------------------------------------------

    async def get(self, response_id: str, owner: str | None) -> StoredResponse | None:
        """The stored response, if it exists, has not expired and ``owner`` may see it."""
        now = time.time()
        found = self._in_memory(response_id)
        if found is None:
            row = await self._read(tables.one, response_id)
            found = self._from_row(row) if row is not None else None
        if found is None or found.expires_at <= now or not found.visible_to(owner):
            return None
        return found

    async def conversation(self, response_id: str, owner: str | None) -> list[StoredResponse] | None:
        """The stored response and every one it continues, oldest first; None if it is unknown,
        expired, or not ``owner``'s. Raises StoreUnavailable if the database must be read and cannot."""
        now = time.time()
        found: list[StoredResponse] = []
        current: str | None = response_id
        while current is not None and (stored := self._in_memory(current)) is not None:
            if stored.expires_at <= now:
                break
            found.append(stored)
            current = stored.previous_id
        if current is not None and (not found or found[-1].expires_at > now):
            found.extend(self._from_row(row) for row in await self._read(tables.chain, current))
        if not found or found[0].id != response_id or not found[0].visible_to(owner):
            return None
        found.reverse()
        return found

    async def delete(self, response_id: str, owner: str | None) -> bool:
        """Forget a stored response; False if there was none ``owner`` may see."""
        if await self.get(response_id, owner) is None:
            return False
        async with self.writer.busy:  # not while a batch holding it is being written
            self.forget_pending(response_id)
            self.recent.forget(response_id)
            await self._run(lambda conn, now: tables.delete(conn, response_id), writing=True)
        return True

    async def _read(self, query, response_id: str) -> Any:
        return await self._run(lambda conn, now: query(conn, response_id, now))

    async def _run(self, work, *, writing: bool = False) -> Any:
        """``work(conn, now)`` in a transaction; StoreUnavailable if the database fails or is slow."""
        now = datetime.now(timezone.utc)

        async def run() -> Any:
            await self.writer.migrated()
            async with self.db.writing() if writing else self.db.reading() as conn:
                return await work(conn, now)

        try:
            return await asyncio.wait_for(run(), READ_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, timed out: answered 503
            raise StoreUnavailable(describe(exc) if str(exc) else f"{type(exc).__name__}: no answer in time") from None

    def _from_row(self, row: Any) -> StoredResponse:
        """A row read back, kept among the recent ones (the next turn reads it from memory)."""
        stored = StoredResponse(
            id=row["id"], previous_id=row["previous_response_id"], owner=row["owner"],
            created_at=self.db.read_time(row["created_at"]).timestamp(),
            expires_at=self.db.read_time(row["expires_at"]).timestamp(),
            input_json=row["input"].encode(), response_json=row["response"].encode())
        if stored.id not in self.pending:
            self._remember(stored)
        return stored
