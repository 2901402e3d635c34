"""Answers given from a store: a ``lookup`` plugin's answer, served with no attempt.

After ``admit`` and before any provider is chosen, the core asks ``lookup``. A plugin
that kept an answer to the same request gives it back as a ``Stored``; the core then
answers with it as if the provider had (a whole answer, or for a stream its chunks
replayed), at no cost, and tells the plugins with ``on_stored_answer``. The core does
not know what the plugin keeps or how it matches requests.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from modelbroker._config.providers import ProviderConfig
from modelbroker._plugins.hookcall import PluginError
from modelbroker._routing.errors import APIError
from modelbroker._routing.streaming import StreamEnd, single_chunk_stream
from modelbroker._routing.types import ChatRequest, Completion, StreamChunk

log = logging.getLogger("modelbroker")


@dataclass(slots=True)
class Stored:
    """An answer a plugin kept, given back by ``lookup`` to answer a request with no attempt.

    ``provider`` is the provider that made the answer (named in the headers and the
    record). ``completion`` is the answer, its ``cost`` what it cost when it was made: the
    cost the stored answer saves. ``chunks``, for a streamed request, are the chunks to
    replay in order (a whole ``completion`` is replayed as one chunk when they are None).
    """

    provider: ProviderConfig
    completion: Completion
    chunks: list[StreamChunk] | None = None


class Replay:
    """A stored answer's stream, in the shape a surface reads (``Routed.relay()``)."""

    __slots__ = ("stored", "completion", "overhead_ms")

    def __init__(self, stored: Stored, completion: Completion) -> None:
        self.stored = stored
        self.completion = completion
        self.overhead_ms = completion.overhead_ms

    async def relay(self) -> AsyncIterator[StreamChunk | StreamEnd]:
        if self.stored.chunks is not None:
            for chunk in self.stored.chunks:
                yield chunk
        else:
            async for chunk in single_chunk_stream(self.stored.completion):
                yield chunk
        yield StreamEnd(completion=self.completion)


async def look_up(hooks, request: ChatRequest, headers, config) -> Stored | None:
    """The first ``lookup`` answer for ``request``, awaited; None for none. A plugin that
    fails or answers something else is logged and the request is routed as usual."""
    try:
        plugin, answer = hooks.first("lookup", request=request, principal=request.principal, headers=headers,
                                     config=config)
    except PluginError as exc:
        log.warning("%s; the request is routed as usual", exc)
        return None
    if inspect.isawaitable(answer):
        try:
            answer = await answer
        except APIError:
            raise
        except Exception as exc:  # noqa: BLE001 - a store that fails is a miss, never a failed request
            log.warning("plugin %r failed in lookup: %s: %s; the request is routed as usual", plugin,
                        type(exc).__name__, exc)
            return None
    if answer is None or isinstance(answer, Stored):
        return answer
    log.warning("plugin %r answered lookup with a %s, not a Stored; the request is routed as usual",
                plugin, type(answer).__name__)
    return None


def served(report, request: ChatRequest, stored: Stored):
    """The ``Routed`` answer of ``request`` from ``stored``: no attempt, cost 0; reported at once."""
    from modelbroker._routing.router import Routed

    elapsed_ms = (time.perf_counter() - request.received_at) * 1000 if request.received_at else 0.0
    completion = dataclasses.replace(stored.completion, cost=0.0, upstream_ms=0.0, overhead_ms=elapsed_ms)
    report.stored(stored.provider, request, stored, elapsed_ms)
    if request.stream:
        return Routed(stored.provider, None, [], stream=Replay(stored, completion))
    return Routed(stored.provider, completion, [])
