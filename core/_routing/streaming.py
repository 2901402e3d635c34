"""A streamed attempt: hold back chunks until content, relay the rest, report exactly once.

Fallback is possible until the first chunk with content has gone to the
client; ``StreamAttempt.open`` reads up to that chunk, so an upstream that
fails early still falls back. After that, ``StreamAttempt.relay`` passes each
chunk on as it arrives; an upstream failure then ends the stream with an
explicit error (``StreamEnd.error``), and the attempt is recorded as
``partial``. A client that goes away closes the upstream call, recorded as
``cancelled``. Whatever happens, ``on_result`` or ``on_failure`` runs once.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.pricing import cost_of
from modelbroker._routing.records import AttemptReporter
from modelbroker._routing.tokens import count_tokens
from modelbroker._routing.types import ChatRequest, Completion, ErrorKind, ProviderError, StreamChunk, Usage


@dataclass(slots=True)
class StreamEnd:
    """The last item of a relay: the completion on success, or the error that cut it."""

    completion: Completion | None = None
    error: ProviderError | None = None


class StreamAttempt:
    """One streamed attempt at one provider, from the upstream's first chunk to its end."""

    def __init__(
        self, report: AttemptReporter, provider: ProviderConfig, request: ChatRequest,
        number: int, started: float, chunks: AsyncIterator[StreamChunk], deadline: float = 0.0,
    ) -> None:
        self.report = report
        self.provider = provider
        self.request = request
        self.number = number
        self.started = started
        self.chunks = chunks
        self.held: list[StreamChunk] = []
        #: Every chunk, for ``on_result``'s ``chunks``, when some plugin reads them.
        self.kept: list[StreamChunk] | None = [] if report.keeps_chunks else None
        self.text: list[str] = []
        self.usage: Usage | None = None
        self.model = provider.model
        self.upstream_ms = 0.0
        #: The gateway's own time until the first content was ready (set by the router).
        self.overhead_ms = 0.0
        self.reported = False
        #: ``time.monotonic()`` by which the stream must end (0: none), and the longest
        #: pause between chunks once content has gone to the client.
        self.deadline = deadline
        self.idle_s = provider.stream_idle_timeout_s

    async def open(self) -> None:
        """Read and hold chunks until one carries content or the stream ends.

        Raises ProviderError (the attempt already reported and closed) if the
        upstream fails before any content.
        """
        try:
            while (chunk := await self._next()) is not None:
                self.held.append(chunk)
                if chunk.has_content:
                    return
        except ProviderError as error:
            self.fail(error)
            await self.close()
            raise
        except asyncio.CancelledError:  # reported by the router, as cancelled or deadline
            self.reported = True
            await self.close()
            raise

    async def relay(self) -> AsyncIterator[StreamChunk | StreamEnd]:
        """Yield the held chunks, then the rest as they arrive, then one StreamEnd."""
        watchdog = None
        try:
            for chunk in self.held:
                yield chunk
            self.held = []
            watchdog = Watchdog(self.idle_s, self.deadline)
            try:
                while (chunk := await watchdog.wait(self._next())) is not None:
                    yield chunk
            except ProviderError as error:
                partial = ProviderError(
                    ErrorKind.PARTIAL, f"the stream broke after content was sent: {error}",
                    status=error.status, usage=self._usage(),
                )
                self.fail(partial)
                yield StreamEnd(error=partial)
                return
            yield StreamEnd(completion=self.succeed())
        finally:
            if watchdog is not None:
                watchdog.close()
            if not self.reported:
                self.fail(ProviderError(ErrorKind.CANCELLED, "the client went away", usage=self._usage()))
            await self.close()

    async def close(self) -> None:
        aclose = getattr(self.chunks, "aclose", None)
        if aclose is not None:
            await aclose()

    def succeed(self) -> Completion:
        completion = Completion(
            text="".join(self.text), model=self.model, usage=self._usage(),
            upstream_ms=self.upstream_ms, overhead_ms=self.overhead_ms,
        )
        completion.cost = cost_of(self.provider, completion.usage)
        self.reported = True
        self.report.result(self.provider, self.request, completion, self._elapsed_ms(), self.number, self.kept)
        return completion

    def fail(self, error: ProviderError) -> None:
        if self.reported:
            return
        self.reported = True
        if error.usage is not None:
            error.cost = cost_of(self.provider, error.usage)
        self.report.failure(self.provider, self.request, error, self._elapsed_ms(), self.number)

    async def _next(self) -> StreamChunk | None:
        """The upstream's next chunk (None at its end), with text, usage and model noted."""
        waited = time.perf_counter()
        try:
            chunk = await anext(self.chunks)
        except StopAsyncIteration:
            return None
        except (ProviderError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise ProviderError(
                ErrorKind.PLUGIN, f"the adapter for type {self.provider.type!r} failed while streaming: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        finally:
            self.upstream_ms += (time.perf_counter() - waited) * 1000
        if self.kept is not None:
            self.kept.append(chunk)
        if chunk.text:
            self.text.append(chunk.text)
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.model:
            self.model = chunk.model
        return chunk

    def _usage(self) -> Usage:
        """The upstream's reported usage, else a tiktoken count marked as estimated."""
        if self.usage is not None:
            return self.usage
        prompt = count_tokens(self.request.prompt_text())
        completion = count_tokens("".join(self.text))
        return Usage(prompt, completion, prompt + completion, estimated=True)

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


class Watchdog:
    """Ends a relayed stream that pauses longer than ``idle_s`` between two chunks, or that
    runs past the request's ``deadline``: ``wait`` then raises ProviderError (timeout).

    One timer for the stream, not one per chunk: ``wait`` only notes when it began to wait,
    and the timer, when it fires, checks whether the wait has lasted too long and otherwise
    sets itself again for when it would. Chunks come every few milliseconds; a timer made
    and cancelled around each of them was a measurable part of a streamed request's cost.
    """

    __slots__ = ("idle_s", "deadline", "loop", "task", "waiting_since", "timer", "expired", "cancelling")

    def __init__(self, idle_s: float, deadline: float) -> None:
        self.idle_s = idle_s
        self.deadline = deadline or float("inf")
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task(self.loop)
        self.waiting_since: float | None = None
        self.expired: str | None = None
        self.cancelling = 0
        self.timer: asyncio.TimerHandle | None = None
        self._arm(monotonic())

    async def wait(self, next_chunk: Awaitable[T]) -> T:
        """``await next_chunk``, unless the stream has been idle or running too long."""
        now = monotonic()
        if now >= self.deadline:
            next_chunk.close()
            raise ProviderError(ErrorKind.TIMEOUT, DEADLINE_PASSED)
        self.waiting_since = now
        try:
            return await next_chunk
        except asyncio.CancelledError:
            if self.expired is not None and (not COUNTS_CANCELS or self.task.uncancel() <= self.cancelling):
                raise ProviderError(ErrorKind.TIMEOUT, self.expired) from None
            raise
        finally:
            self.waiting_since = None

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _arm(self, now: float) -> None:
        since = self.waiting_since if self.waiting_since is not None else now
        self.timer = self.loop.call_at(min(self.deadline, since + self.idle_s), self._check)

    def _check(self) -> None:
        now = monotonic()
        since = self.waiting_since
        if since is not None and self.expired is None:
            if now >= self.deadline:
                self.expired = DEADLINE_PASSED
            elif now - since >= self.idle_s:
                self.expired = f"no chunk for stream_idle_timeout_s ({self.idle_s:g} s)"
            if self.expired is not None:
                self.timer = None
                if COUNTS_CANCELS:  # a cancellation from elsewhere that comes too stays one
                    self.cancelling = self.task.cancelling()
                self.task.cancel()
                return
        if now >= self.deadline:  # not waiting on the upstream: the next wait ends the stream
            self.timer = None
            return
        self._arm(now)


#: The clock of the request's deadline, and of the event loop's timers.
monotonic = time.monotonic
DEADLINE_PASSED = "the request deadline passed during the stream"
#: Python 3.11+ counts a task's pending cancellations (Task.cancelling/uncancel).
COUNTS_CANCELS = sys.version_info >= (3, 11)
T = TypeVar("T")


async def single_chunk_stream(completion: Completion) -> AsyncIterator[StreamChunk]:
    """A whole completion as a one-chunk stream, for adapters (or upstreams) that cannot stream.

    The finish reason and any tool calls come from the completion's ``raw`` answer.
    """
    choice = ((completion.raw or {}).get("choices") or [{}])[0]
    message = choice.get("message") or {}
    delta = {"role": "assistant", "content": completion.text}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    finish = choice.get("finish_reason") or "stop"
    head = {
        "id": (completion.raw or {}).get("id", "chatcmpl-modelbroker"),
        "object": "chat.completion.chunk",
        "created": (completion.raw or {}).get("created", 0),
        "model": completion.model,
    }
    yield StreamChunk(
        raw={**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]},
        text=completion.text, has_content=True, model=completion.model, finish_reason=finish,
    )
    usage = completion.usage
    yield StreamChunk(
        raw={**head, "choices": [], "usage": {
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }},
        usage=usage,
    )
