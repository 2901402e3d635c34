"""The ledger's settings, read once from the process settings (``MODELBROKER_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelbroker.plugins.storage.location import database_url, log_directory, sqlite_path
from modelbroker.plugins.storage.urls import safe_url

SPILL_FILE = "ledger-spill.jsonl"


@dataclass(frozen=True, slots=True)
class LedgerOptions:
    """Where the ledger writes, and how much it holds back while the database is away.

    ``max_queue`` records wait in memory; past that they go to ``spill_file``.
    A batch is written every ``flush_interval_s``, or as soon as ``batch_size``
    records are waiting.
    """

    database_url: str
    spill_file: Path
    max_queue: int = 100_000
    batch_size: int = 500
    flush_interval_s: float = 0.5

    @classmethod
    def from_settings(cls, settings) -> LedgerOptions:
        url = database_url(settings)
        spill = Path(settings.ledger_spill_file) if settings.ledger_spill_file else default_spill_file(
            url, settings.log_file)
        return cls(
            database_url=url,
            spill_file=spill,
            max_queue=max(1, settings.ledger_max_queue),
            batch_size=max(1, settings.ledger_batch_size),
            flush_interval_s=max(0.01, settings.ledger_flush_interval_s),
        )

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for logs and error messages."""
        return safe_url(self.database_url)


def default_spill_file(database_url: str, log_file: str) -> Path:
    """``ledger-spill.jsonl`` beside an SQLite database, else beside app.log."""
    path = sqlite_path(database_url)
    folder = path.parent if path is not None else log_directory(log_file)
    return folder / SPILL_FILE
