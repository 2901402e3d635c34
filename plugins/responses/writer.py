"""The background task of the stored responses: batches written, expired rows purged.

Every ``batch_size`` responses are written as soon as they wait, in one transaction with
the new expiry of the conversations they continue; fewer wait until ``flush_interval_s``
has passed since the last write of everything. Under load the batches stay full: a
writer that went on writing whatever had come in meanwhile wrote a few rows a
transaction, and each commit rewrote the same half-filled pages (docs/performance.md).

When the database fails, the responses stay in memory (they are still found there) and
the writer retries with backoff, logging once when the outage starts and once when it
ends; past ``max_pending`` responses or ``max_pending_bytes`` of their JSON the oldest are
dropped, with an error in the log. Expired rows are deleted at startup and every
``purge_interval_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import islice
from typing import TYPE_CHECKING, Any

from modelbroker.plugins.responses import tables
from modelbroker.plugins.storage.database import DatabaseURLError, describe
from modelbroker.plugins.storage.migrations import SchemaTooNew

if TYPE_CHECKING:
    from modelbroker.plugins.responses.store import ResponseStore, StoredResponse

log = logging.getLogger("modelbroker")

#: Seconds startup waits for the database; past that the gateway starts and the writer catches up.
STARTUP_TIMEOUT_S = 10.0
#: Seconds the writer may spend at shutdown writing what is left.
SHUTDOWN_WRITE_S = 10.0


class BoundTimes(dict):
    """Seconds since the epoch -> the database's value for that time, the latest few kept.

    A batch's responses were made within seconds of each other, and their times are whole
    seconds (``created_at``, and ``expires_at`` rounded up): nearly every row finds both
    of its times here instead of formatting them again."""

    KEPT = 256

    def __init__(self, bind_time: Callable[[datetime], Any]) -> None:
        super().__init__()
        self.bind_time = bind_time

    def __missing__(self, seconds: float) -> Any:
        if len(self) >= self.KEPT:
            self.clear()
        bound = self[seconds] = self.bind_time(datetime.fromtimestamp(seconds, timezone.utc))
        return bound


class ResponseWriter:
    """Moves the store's pending responses to the database."""

    flush_interval_s = 0.2
    batch_size = 200
    max_pending = 10_000
    max_pending_bytes = 64 << 20
    retry_initial_s = 0.5
    retry_max_s = 5.0

    def __init__(self, store: ResponseStore, purge_interval_s: float) -> None:
        self.store = store
        self.db = store.db
        self.purge_interval_s = purge_interval_s
        #: Rows already written (or about to be) that a newer response keeps alive: id -> new expiry.
        self.extensions: dict[str, float] = {}
        self.busy = asyncio.Lock()  # one writer at a time: the task, stop() or a delete
        self.outage: str | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.next_purge = 0.0
        self.dropped = 0
        self.flushed_at = time.monotonic()  # the last write of everything that waited
        self.times = BoundTimes(self.db.bind_time)
        self._migrated = False
        self._migrating = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None

    # --- on the event loop ----------------------------------------------------------------

    def batch_waits(self) -> None:
        """A whole batch waits, or more: past ``max_pending`` responses or ``max_pending_bytes``
        the oldest are dropped."""
        store = self.store
        pending = store.pending
        while pending and (len(pending) > self.max_pending or store.pending_bytes > self.max_pending_bytes):
            self.dropped += 1
            if self.dropped == 1:
                log.error("stored responses: %d (%.1f MiB) wait to be written to %s; the oldest are dropped from "
                          "now on, and cannot be continued with previous_response_id", len(pending),
                          store.pending_bytes / 2**20, self.db.url.safe)
            store.forget_pending(next(iter(pending)))
        self._wake.set()

    def extend(self, response_id: str, until: float) -> None:
        self.extensions[response_id] = max(until, self.extensions.get(response_id, 0.0))

    async def migrated(self) -> None:
        """The table exists (made on first need, once: startup may have found the database away)."""
        if self._migrated:
            return
        async with self._migrating:
            if not self._migrated:
                await tables.migrate(self.db)
                self._migrated = True

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await asyncio.wait_for(self.migrated(), STARTUP_TIMEOUT_S)
        except (SchemaTooNew, DatabaseURLError):  # no retry can help: a version or a setting to change
            await self.db.close()
            raise
        except Exception as exc:  # noqa: BLE001 - unreachable or slow: the task retries
            self._failed(exc, at_startup=True)
        self._task = asyncio.create_task(self._run(), name="modelbroker-responses")

    async def stop(self, timeout: float = SHUTDOWN_WRITE_S) -> None:
        """Write what is left, for up to ``timeout`` seconds; say what could not be."""
        give_up = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
        async with self.busy:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._write_all(), max(0.0, give_up - time.monotonic()))
        if self.store.pending:
            log.error("stored responses: %d could not be written to %s (%s); they cannot be retrieved or continued "
                      "after this restart", len(self.store.pending), self.db.url.safe, self.outage or "no time left")

    # --- the task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            if self._stopping:
                return
            try:
                async with self.busy:
                    await self._cycle()
            except Exception:  # a bug here must not stop the writer for good
                log.exception("stored responses: the writer failed; it goes on")

    async def _cycle(self) -> None:
        if self.outage is not None and time.monotonic() < self.retry_at:
            return
        if time.monotonic() >= self.next_purge and not await self._purge():
            return
        await self._write_all(full_only=time.monotonic() - self.flushed_at < self.flush_interval_s)

    async def _write_all(self, *, full_only: bool = False) -> bool:
        """Write the pending responses and extensions, a batch per transaction (``full_only``:
        only whole batches, the rest waits for the next flush); False at a failure."""
        owed = 0  # what waited when a flush began: written even as a short batch
        if not full_only:
            self.flushed_at = time.monotonic()
            owed = len(self.store.pending) or (1 if self.extensions else 0)
        while len(self.store.pending) >= self.batch_size or (owed > 0 and (self.store.pending or self.extensions)):
            batch = list(islice(self.store.pending.values(), self.batch_size))
            owed -= max(len(batch), 1)
            extensions, self.extensions = self.extensions, {}
            try:
                await self.migrated()
                await self._write(batch, extensions)
            except Exception as exc:  # noqa: BLE001 - kept in memory, retried
                for response_id, until in extensions.items():
                    self.extend(response_id, until)
                self._failed(exc)
                return False
            self.store.written(batch)
            self._recovered()
        return True

    async def _write(self, batch: list[StoredResponse], extensions: dict[str, float]) -> None:
        """One transaction: ``batch`` inserted, ``extensions`` applied.

        The rows are made here, on the event loop, not in SQLite's thread: Python work there
        waits for the GIL while the loop runs, and the switching cost about as much again
        as the work (docs/performance.md)."""
        times = self.times
        rows = [stored.row(times) for stored in batch]
        until = times[max(extensions.values())] if extensions else None
        if self.db.dialect == "sqlite":  # one hand-over
            inserts = tables.sqlite_inserts(rows, self.db.rows_per_statement)
            await self.db.write_whole(lambda conn: tables.write_sqlite(conn, inserts, list(extensions), until))
            return
        async with self.db.writing() as conn:
            if rows:
                await tables.insert(conn, rows)
            if extensions:
                await tables.extend(conn, list(extensions), until)

    async def _purge(self) -> bool:
        """Delete expired rows (and forget expired responses in memory); False if the database failed."""
        now = time.time()
        for response_id in [key for key, stored in self.store.pending.items() if stored.expires_at <= now]:
            self.store.forget_pending(response_id)
        self.store.recent.forget_expired(now)
        try:
            await self.migrated()
            async with self.db.writing() as conn:
                purged = await tables.purge(conn, datetime.fromtimestamp(now, timezone.utc))
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return False
        self.next_purge = time.monotonic() + self.purge_interval_s
        if purged:
            log.info("stored responses: %d expired ones deleted", purged)
        self._recovered()
        return True

    # --- outages ----------------------------------------------------------------------------

    def _failed(self, exc: BaseException, *, at_startup: bool = False) -> None:
        self.failures += 1
        self.retry_at = time.monotonic() + min(self.retry_max_s, self.retry_initial_s * 2 ** (self.failures - 1))
        if self.outage is not None:
            return
        self.outage = describe(exc) if str(exc) else f"{type(exc).__name__}: no answer in time"
        what = "cannot reach %s at startup (%s); the gateway starts anyway." if at_startup else \
            "cannot write to %s (%s)."
        log.error("stored responses: " + what + " New responses wait in memory (up to %d, or %d MiB), where they "
                  "are found, and are written once the database is back", self.db.url.safe, self.outage,
                  self.max_pending, self.max_pending_bytes >> 20)

    def _recovered(self) -> None:
        if self.outage is None:
            return
        log.warning("stored responses: %s is back; %d responses wait to be written", self.db.url.safe,
                    len(self.store.pending))
        self.outage, self.failures, self.dropped = None, 0, 0
