"""Logger ``file_log``: one JSON line per attempt (and per cache hit) in app.log (``MODELBROKER_LOG_FILE``).

Lines are collected on the event loop (a list append) and written by a
background task through a worker thread, in batches, so a slow disk never
blocks a request. Everything is flushed at shutdown. Prompts and responses are
left out unless ``plugins: file_log: {include_prompts: true, include_responses: true}``.

Before each batch the worker thread looks at the path (one ``os.stat``): if the file
there is no longer the one open (logrotate moved it, or it was deleted), it opens the
path again, so the batch goes to the new app.log. Lines written before the move are in
the moved file; none is lost. SIGHUP stays the gateway's reload: no signal is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, field_validator

from modelbroker import hookimpl

NAME = "file_log"
FLUSH_INTERVAL_S = 0.2
log = logging.getLogger("modelbroker")


class FileLogSettings(BaseModel):
    """``plugins: file_log:``: what else a line holds."""

    model_config = ConfigDict(extra="forbid")

    include_prompts: bool = False
    include_responses: bool = False

    @field_validator("include_prompts", "include_responses", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        """``${VAR}`` of a variable set to nothing gives "": off, as an unset flag is."""
        return False if isinstance(value, str) and not value.strip() else value


@hookimpl
def register_settings(register):
    register(NAME, FileLogSettings)


@hookimpl
def on_startup(pm, settings, config):
    """Register a writer for this gateway when a log file is set."""
    if not settings.log_file:
        return None
    options = config.plugins.settings_for(NAME)
    writer = FileLogWriter(Path(settings.log_file), include_prompts=options.include_prompts,
                           include_responses=options.include_responses)
    pm.register(writer, name=f"{NAME}.writer")
    return writer.start()


class FileLogWriter:
    """The per-gateway state of the file logger: a buffer, a file, a flushing task."""

    def __init__(self, path: Path, *, include_prompts: bool, include_responses: bool) -> None:
        self.path = path
        self.include_prompts = include_prompts
        self.include_responses = include_responses
        self.plain = not (include_prompts or include_responses)  # lines hold no prompt or response
        self._buffer: list[bytes] = []
        self._file: AppendedFile | None = None
        self._task: asyncio.Task | None = None
        self._writing = asyncio.Lock()  # held by the flusher while a batch is out of the buffer
        self._second = -1
        self._second_text = ""

    async def start(self) -> None:
        try:
            self._file = await asyncio.to_thread(AppendedFile.open, self.path)
        except OSError as exc:
            raise OSError(f"cannot open the call log {self.path} for appending ({exc.strerror or exc}): "
                          "set MODELBROKER_LOG_FILE to a file you can write, or to nothing to turn it off") from None
        self._task = asyncio.create_task(self._flush_forever(), name="modelbroker-file-log")

    @hookimpl
    def on_result(self, request, result, record):
        if (self.plain and record.cached_tokens is None and record.reasoning_tokens is None
                and not record.tokens_estimated):
            # Nearly every line: one dict literal, in the key order of the steps below (measurably
            # cheaper than the steps; docs/performance.md, 'Measurements behind the code').
            line = {
                "time": self._time_text(record.time), "request_id": record.request_id, "attempt": record.attempt,
                "surface": record.surface, "provider": record.provider, "provider_id": record.provider_id, "model": record.model,
                "latency_ms": round(record.latency_ms, 2), "success": True, "model_used": record.model_used,
                "overhead_ms": round(record.overhead_ms, 3), "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens, "total_tokens": record.total_tokens,
                "cost": record.cost,
            }
            self._buffer.append(orjson.dumps(line) + b"\n")
            return
        line = self._common(request, record)
        line.update(success=True, model_used=record.model_used, overhead_ms=round(record.overhead_ms, 3))
        self._add_usage(line, record)
        line["cost"] = record.cost
        if self.include_responses:
            line["response"] = result.text
        self._buffer.append(orjson.dumps(line) + b"\n")

    @hookimpl
    def on_stored_answer(self, request, stored, record):
        """A request answered from a stored answer (the cache): no attempt, the cost it saved."""
        line = self._common(request, record)
        line.update(success=True, model_used=record.model_used, overhead_ms=round(record.overhead_ms, 3))
        self._add_usage(line, record)
        line.update(cost=record.cost, cache_hit=True, saved_cost=record.saved_cost)
        if self.include_responses:
            line["response"] = stored.completion.text
        self._buffer.append(orjson.dumps(line) + b"\n")

    @hookimpl
    def on_failure(self, request, record):
        line = self._common(request, record)
        line["success"] = False
        self._add_usage(line, record)
        line.update(cost=record.cost, error_kind=record.error_kind, status=record.status, error=record.error)
        self._buffer.append(orjson.dumps(line) + b"\n")

    @staticmethod
    def _add_usage(line: dict[str, Any], record) -> None:
        """Token counts, with cached and reasoning tokens apart and estimates marked."""
        line.update(prompt_tokens=record.prompt_tokens, completion_tokens=record.completion_tokens,
                    total_tokens=record.total_tokens)
        if record.cached_tokens is not None:
            line["cached_tokens"] = record.cached_tokens
        if record.reasoning_tokens is not None:
            line["reasoning_tokens"] = record.reasoning_tokens
        if record.tokens_estimated:
            line["tokens_estimated"] = True

    @hookimpl
    async def on_shutdown(self):
        if self._task is not None:
            async with self._writing:  # never cancel a write in flight: its batch would be lost
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush()
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
            self._file = None

    def _common(self, request, record) -> dict[str, Any]:
        line: dict[str, Any] = {
            "time": self._time_text(record.time),
            "request_id": record.request_id,
            "attempt": record.attempt,
            "surface": record.surface,
            "provider": record.provider,
            "provider_id": record.provider_id,
            "model": record.model,
            "latency_ms": round(record.latency_ms, 2),
        }
        if self.include_prompts:
            line["prompt"] = request.prompt_text()
        return line

    def _time_text(self, now: float) -> str:
        """``now`` as ISO 8601 in UTC to the millisecond (``2026-11-27T16:28:43.637+00:00``); the
        text up to the second is made once a second (``isoformat`` costs a microsecond a line)."""
        fraction, second = math.modf(now)
        micros = round(fraction * 1e6)  # as datetime.fromtimestamp rounds
        if micros >= 1_000_000:
            second, micros = second + 1, micros - 1_000_000
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{micros // 1000:03d}+00:00"

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            async with self._writing:
                try:
                    await self._flush()
                except OSError:
                    log.exception("file_log: cannot write %s; lines are kept and retried", self.path)

    async def _flush(self) -> None:
        if not self._buffer or self._file is None:
            return
        batch, self._buffer = self._buffer, []
        try:
            await asyncio.to_thread(self._file.write, b"".join(batch))
        except OSError:
            self._buffer[:0] = batch
            raise


class AppendedFile:
    """A file open for appending that follows its path: ``write`` opens the path again when
    the file there is not the one open (moved or deleted, as log rotation does). Used by one
    thread at a time (the flusher's batches go one after another)."""

    def __init__(self, path: Path, file: Any) -> None:
        self.path = path
        self.file = file
        status = os.fstat(file.fileno())
        self.identity = (status.st_dev, status.st_ino)

    @classmethod
    def open(cls, path: Path) -> AppendedFile:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, path.open("ab"))

    def write(self, data: bytes) -> None:
        if not self._still_at_path():
            self._reopen()
        self.file.write(data)
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def _still_at_path(self) -> bool:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (status.st_dev, status.st_ino) == self.identity

    def _reopen(self) -> None:
        """Open the path (raises OSError, the open file kept, if it cannot be), then close the old file."""
        fresh = AppendedFile.open(self.path)
        self.file.close()
        self.file, self.identity = fresh.file, fresh.identity
        log.info("file_log: %s was moved or deleted (rotated?); writing to a new file there", self.path)
