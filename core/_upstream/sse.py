"""Server-sent events from an upstream: the ``data:`` payload of each event, and its JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from modelbroker._routing.types import ErrorKind, ProviderError
from modelbroker._upstream.errors import redact


def sse_data(stream) -> AsyncIterator[str]:
    """The ``data:`` payload of each server-sent event of ``stream`` (a ``modelbroker._upstream.client.UpstreamStream``,
    or any object whose ``lines()`` gives the body's lines), each once its blank line is in."""
    events = getattr(stream, "events", None)
    return events() if events is not None else _data_of_lines(stream)


async def _data_of_lines(stream) -> AsyncIterator[str]:
    collect = EventData()
    async for line in stream.lines():
        payload = collect.line(line)
        if payload is not None:
            yield payload
    payload = collect.end()
    if payload is not None:
        yield payload


class EventData:
    """Collects the ``data:`` lines of server-sent events, fed one line (without its ending) at a time."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: list[str] = []

    def line(self, line: bytes) -> str | None:
        """Take one line; the event's payload if this (blank) line ends one."""
        if line.startswith(b"data:"):
            self._data.append(line[5:].lstrip(b" ").decode("utf-8", "replace"))
            return None
        return self.end() if not line else None

    def end(self) -> str | None:
        """The payload of the event under way, if it has data (at a blank line, or the stream's end)."""
        if not self._data:
            return None
        payload = "\n".join(self._data)
        self._data = []
        return payload


def parse_event(data: str, secret: str | None = None) -> dict:
    """One event's JSON object; anything else raises ProviderError(malformed)."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict):
        raise ProviderError(ErrorKind.MALFORMED,
                            f"a stream event is not a JSON object (starts {redact(data[:4096], secret)[:80]!r})")
    return event
