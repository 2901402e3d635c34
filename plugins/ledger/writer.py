"""The batched writer: records in on the event loop, batches out to the database in the background.

``add`` only appends to a bounded in-memory queue. A background task writes the
queue every ``flush_interval_s`` (sooner once ``batch_size`` records wait), one
executemany per batch in one transaction; a duplicate (request_uid, attempt) is
ignored, so a batch written twice is harmless.

When the database fails, the batch goes back to the queue and the writer retries
with backoff, logging once when the outage starts and once when it ends. Past
``max_queue`` records, the newest go to the spill file. The spill file is loaded
when the database is back, and at the next start. At shutdown the queue is
written, or, if the database is still away, spilled. A record is never dropped
without an error in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from modelbroker.plugins.ledger.bulk import BulkInsert
from modelbroker.plugins.ledger.options import LedgerOptions
from modelbroker.plugins.ledger.records import Record
from modelbroker.plugins.ledger.schema import migrate
from modelbroker.plugins.ledger.spill import SpillFile
from modelbroker.plugins.storage.database import Database, describe

log = logging.getLogger("modelbroker")

#: Seconds the writer may spend at shutdown writing what is left before it spills it.
SHUTDOWN_WRITE_S = 10.0


@dataclass(slots=True)
class Outage:
    """The database has been failing since ``since`` (monotonic); the next try is at ``retry_at``."""

    since: float
    error: str
    retry_at: float
    spilled_before: int
    failures: int = 1


class LedgerWriter:
    """The queue, the spill file and the task that moves records to the database."""

    retry_initial_s = 0.5
    retry_max_s = 5.0

    def __init__(self, db: Database, spill: SpillFile, options: LedgerOptions) -> None:
        self.db = db
        self.spill = spill
        self.options = options
        self.queue: deque[Record] = deque()
        self.overflow: list[Record] = []  # past max_queue: for the spill file
        self.migrated = False
        self.outage: Outage | None = None
        self.written = self.spilled = self.loaded = 0
        self._insert = BulkInsert(db)
        self._wake = asyncio.Event()
        self._busy = asyncio.Lock()  # one writer at a time: the task, flush() or stop()
        self._stopping = False
        self._load_wanted = True  # a spill file may be left from an earlier run
        self._spill_warned = False
        self._task: asyncio.Task | None = None

    # --- on the event loop, for every attempt ---------------------------------------

    def add(self, record: Record) -> None:
        """Queue a record; never blocks, never raises for a full queue."""
        if len(self.queue) < self.options.max_queue:
            self.queue.append(record)
            if len(self.queue) == self.options.batch_size:
                self._wake.set()
        else:
            self.overflow.append(record)
            if len(self.overflow) == self.options.batch_size:
                self._wake.set()

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="modelbroker-ledger")

    async def flush(self, timeout: float) -> None:
        """Write what is queued now, unless the database is away and not yet due for a retry.

        Gives up after ``timeout`` seconds (the writer may be busy loading a spill file);
        what was not written stays queued.
        """
        async def write() -> None:
            async with self._busy:
                if self._retry_due():
                    await self._write_queue()

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(write(), timeout)

    async def stop(self, timeout: float = SHUTDOWN_WRITE_S) -> None:
        """Write what is left (for up to ``timeout`` seconds in all); spill whatever could not be written."""
        give_up = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._task, timeout)  # cancelled past it; its batch is requeued
        async with self._busy:
            if self.outage is None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._write_queue(), max(0.0, give_up - time.monotonic()))
            await self._spill_rest()

    # --- the background task ------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.options.flush_interval_s)
            self._wake.clear()
            if self._stopping:
                return
            async with self._busy:
                try:
                    await self._cycle()
                except Exception:  # a bug here must not stop the ledger for good
                    log.exception("ledger: the writer failed; it goes on")

    async def _cycle(self) -> None:
        await self._spill_overflow()
        if not self._retry_due():
            return
        if await self._write_queue() and self._load_wanted:
            await self._load_spill()

    def _retry_due(self) -> bool:
        return self.outage is None or time.monotonic() >= self.outage.retry_at

    async def _write_queue(self) -> bool:
        """Write the queue in batches; False (the rest kept) at the first failure."""
        behind = False  # once behind, the rest of the queue goes at the usual priority
        while self.queue:
            batch = [self.queue.popleft() for _ in range(min(self.options.batch_size, len(self.queue)))]
            behind = behind or self._behind()
            try:
                written = await self._write(batch, background=not behind)
            except BaseException:  # cancelled: keep the batch
                self._requeue(batch)
                raise
            if written is None:
                self._requeue(batch)
                return False
            if written < len(batch):  # a background write cut short: the rest goes first, at once
                self._requeue(batch[written:])
                behind = True
        return True

    async def _write(self, batch: list[Record], *, background: bool = False) -> int | None:
        """One transaction; how many records it committed, None if it failed (a failure starts
        or extends an outage).

        While the writer keeps up (less than a batch waits behind this one), the queue is
        written at a low priority (``background``), so requests take the core first. Such a
        write stops after the statement under way once a whole batch waits again (an event
        loop that never idles would leave it crawling), and the rest of the queue goes at
        the usual priority."""
        try:
            if not self.migrated:
                await migrate(self.db)
                self.migrated = True
            written = await self._insert.write(batch, background=background, hurry=self._behind)
        except Exception as exc:
            self._failed(exc)
            return None
        self.written += written
        self._recovered()
        return written

    def _behind(self) -> bool:
        """A whole batch waits (asked from the database's thread too: a deque's length is safe to read)."""
        return len(self.queue) >= self.options.batch_size

    def _requeue(self, batch: list[Record]) -> None:
        self.queue.extendleft(reversed(batch))
        while len(self.queue) > self.options.max_queue:
            self.overflow.append(self.queue.pop())

    # --- outages ------------------------------------------------------------------------

    def failed_at_startup(self, exc: Exception) -> None:
        """The schema could not be migrated at startup: an outage from the start."""
        self._begin_outage(exc, "cannot reach %s at startup (%s); the gateway starts anyway. Records wait in "
                                "memory (up to %d), then in %s; the ledger migrates and writes once it is back")

    def _failed(self, exc: Exception) -> None:
        if self.outage is None:
            self._begin_outage(exc, "cannot write to %s (%s). Records wait in memory (up to %d), then in %s; "
                                    "retrying until the database is back")
            return
        self.outage.failures += 1
        pause = min(self.retry_max_s, self.retry_initial_s * 2 ** (self.outage.failures - 1))
        self.outage.retry_at = time.monotonic() + pause

    def _begin_outage(self, exc: Exception, message: str) -> None:
        now = time.monotonic()
        self.outage = Outage(since=now, error=describe(exc), retry_at=now + self.retry_initial_s,
                             spilled_before=self.spilled)
        log.error("ledger: " + message, self.options.safe_url, self.outage.error, self.options.max_queue,
                  self.spill.path)

    def _recovered(self) -> None:
        if self.outage is None:
            return
        log.warning("ledger: %s is back after %.1f s; %d records wait in memory, %d were spilled to %s and "
                    "are loaded now", self.options.safe_url, time.monotonic() - self.outage.since,
                    len(self.queue) + len(self.overflow), self.spilled - self.outage.spilled_before,
                    self.spill.path)
        self.outage = None
        self._load_wanted = True
        self._spill_warned = False

    # --- the spill file -----------------------------------------------------------------

    async def _spill_overflow(self) -> None:
        if not self.overflow:
            return
        batch, self.overflow = self.overflow, []
        try:
            await asyncio.to_thread(self.spill.append, batch)
        except OSError as exc:
            self.overflow[:0] = batch
            log.error("ledger: cannot write the spill file %s (%s); %d records are held in memory "
                      "(MODELBROKER_LEDGER_SPILL_FILE names the file)", self.spill.path, exc, len(self.overflow))
            return
        self.spilled += len(batch)
        self._load_wanted = True
        if not self._spill_warned:
            self._spill_warned = True
            log.warning("ledger: the memory queue is full (%d records, MODELBROKER_LEDGER_MAX_QUEUE); later ones "
                        "go to %s until the database catches up", self.options.max_queue, self.spill.path)

    async def _spill_rest(self) -> None:
        """At shutdown: everything not written goes to the spill file."""
        self.overflow[:0] = self.queue
        self.queue.clear()
        if not self.overflow:
            return
        count = len(self.overflow)
        await self._spill_overflow()
        if self.overflow:
            log.error("ledger: %d records could be neither written to %s nor spilled to %s; they are lost",
                      len(self.overflow), self.options.safe_url, self.spill.path)
        else:
            log.warning("ledger: %d records not yet written are kept in %s; they are loaded at the next start",
                        count, self.spill.path)

    async def _load_spill(self) -> None:
        """Write the spill file (and any abandoned claimed one) to the database, then delete it."""
        self._load_wanted = False
        for path in await asyncio.to_thread(self.spill.claim):
            if not await self._load_file(path):
                self._load_wanted = True  # the claimed file stays; tried again when the database is back
                return

    async def _load_file(self, path: Path) -> bool:
        count = 0
        file = await asyncio.to_thread(path.open, "rb")
        try:
            while not self._stopping:
                records = await asyncio.to_thread(self.spill.read_chunk, file, self.options.batch_size)
                if not records:
                    break
                written = await self._write(records, background=not self._behind())
                if written is None:
                    return False
                self._requeue(records[written:])  # a background write cut short: the queue has the rest
                if not await self._write_queue():
                    return False
                count += len(records)
            else:
                return False
        finally:
            await asyncio.to_thread(file.close)
        await asyncio.to_thread(path.unlink, True)
        self.loaded += count
        log.warning("ledger: loaded %d records from the spill file %s", count, path)
        return True
