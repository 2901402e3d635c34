"""The ledger of one gateway: its database and writer, and the hooks that feed them."""

from __future__ import annotations

import asyncio

from modelbroker import hookimpl
from modelbroker.plugins.ledger.options import LedgerOptions
from modelbroker.plugins.ledger.records import row_of
from modelbroker.plugins.ledger.schema import migrate
from modelbroker.plugins.ledger.spill import SpillFile
from modelbroker.plugins.ledger.writer import LedgerWriter
from modelbroker.plugins.storage.database import DatabaseURLError
from modelbroker.plugins.storage.location import sqlite_path
from modelbroker.plugins.storage.migrations import SchemaTooNew
from modelbroker.plugins.storage.shared import shared_database

#: The name the per-gateway ``LedgerStore`` is registered under in the plugin manager.
STORE_NAME = "ledger.store"
#: Seconds startup waits for the database; past that the gateway starts and the ledger catches up.
STARTUP_TIMEOUT_S = 10.0


class LedgerStore:
    """Registered in the plugin manager by ``on_startup`` (as ``ledger.store``): one per gateway."""

    def __init__(self, options: LedgerOptions) -> None:
        self.options = options
        self.db = shared_database(options.database_url)
        self.writer = LedgerWriter(self.db, SpillFile(options.spill_file), options)

    async def start(self) -> None:
        """Create or migrate the schema, then start writing. An unreachable database does not stop
        the gateway: records wait, and the schema is migrated before the first write."""
        path = sqlite_path(self.options.database_url)
        if path is not None:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        if await asyncio.to_thread(self.options.spill_file.is_dir):
            raise OSError(f"the ledger's spill file {self.options.spill_file} is a directory: set "
                          "MODELBROKER_LEDGER_SPILL_FILE to the path of a file")
        try:
            await asyncio.wait_for(migrate(self.db), STARTUP_TIMEOUT_S)
            self.writer.migrated = True
        except (SchemaTooNew, DatabaseURLError):  # no retry can help: a setting or a version to change
            await self.db.close()
            raise
        except Exception as exc:  # unreachable, refused, timed out: the writer retries
            self.writer.failed_at_startup(exc)
        self.writer.start()

    @hookimpl
    def on_result(self, record):
        self.writer.add(row_of(record))

    @hookimpl
    def on_stored_answer(self, record):
        self.writer.add(row_of(record))

    @hookimpl
    def on_failure(self, record):
        self.writer.add(row_of(record))

    @hookimpl
    def on_rejected(self, record):
        self.writer.add(row_of(record))

    @hookimpl
    async def on_shutdown(self):
        await self.writer.stop()
        await self.db.close()
