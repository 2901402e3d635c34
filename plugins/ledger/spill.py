"""The spill file: records that did not fit in memory while the database was away.

JSON lines, appended under an exclusive lock (``flock``), since every gateway
process on a machine may share the file. To load it, a process first claims it:
under the lock it renames the file to ``<name>.<random>.claimed``, so later
appends start a new file; then it reads the claimed file in chunks, writes each
to the database, and deletes the file once all are in. A claimed file left by a
process that died is claimed again by the next loader. Loading a record twice is
harmless: the ledger ignores a duplicate (request_uid, attempt).

Every method blocks: call them in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from modelbroker.plugins.ledger.records import Record, from_line, to_line

try:
    import fcntl
except ImportError:  # Windows: one process per spill file, no lock
    fcntl = None

log = logging.getLogger("modelbroker")


class SpillFile:
    """``path`` and the claimed files beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, records: Iterable[Record]) -> int:
        """Append the records durably (fsync); returns how many. Raises OSError."""
        lines = [to_line(r) for r in records]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            with self.path.open("ab") as file, _locked(file):
                if _is_current(file, self.path):  # not renamed by a loader while we waited
                    file.write(b"".join(lines))
                    file.flush()
                    os.fsync(file.fileno())
                    return len(lines)

    def pending(self) -> bool:
        """Whether there is anything to load."""
        return self.path.exists() or any(self._claimed_files())

    def claim(self) -> list[Path]:
        """Take the spill file and any abandoned claimed file for loading; returns their new paths."""
        claimed: list[Path] = []
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as file, _locked(file):
            if _is_current(file, self.path):
                if os.fstat(file.fileno()).st_size == 0:
                    self.path.unlink()
                else:
                    claimed.append(self._rename(self.path))
        for stale in self._claimed_files():
            if stale not in claimed:
                with contextlib.suppress(FileNotFoundError):  # another loader took it first
                    claimed.append(self._rename(stale))
        return claimed

    def read_chunk(self, file: BinaryIO, size: int) -> list[Record]:
        """Up to ``size`` records from an open claimed file ([] at its end).

        A line that does not parse (a crash in the middle of a write) is kept in
        ``<name>.bad`` and logged, never silently dropped.
        """
        records: list[Record] = []
        while len(records) < size and (line := file.readline()):
            if not line.strip():
                continue
            try:
                records.append(from_line(line))
            except (ValueError, KeyError, TypeError) as exc:
                bad = self.path.with_name(self.path.name + ".bad")
                with bad.open("ab") as out:
                    out.write(line if line.endswith(b"\n") else line + b"\n")
                log.error("ledger: a line of %s does not parse (%s); kept in %s", file.name, exc, bad)
        return records

    def _claimed_files(self) -> list[Path]:
        return sorted(self.path.parent.glob(self.path.name + ".*.claimed"))

    def _rename(self, source: Path) -> Path:
        target = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex[:12]}.claimed")
        os.replace(source, target)
        return target


@contextlib.contextmanager
def _locked(file: BinaryIO):
    if fcntl is None:
        yield
        return
    fcntl.flock(file.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def _is_current(file: BinaryIO, path: Path) -> bool:
    """Whether the open ``file`` is still the one at ``path``."""
    try:
        return os.path.samestat(os.fstat(file.fileno()), os.stat(path))
    except FileNotFoundError:
        return False
