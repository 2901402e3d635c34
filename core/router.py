"""The router: order the providers, try them one by one, report every attempt.

    order = select_provider(...)
    for provider in order:
        call_provider(...) -> on_result and answer | on_failure and next

The router knows no provider and no strategy by name: the hooks decide.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from core.config import ProviderConfig
from core.hookcall import HookCalls, PluginError
from core.pricing import cost_of
from core.streaming import StreamAttempt, single_chunk_stream
from core.types import ChatRequest, Completion, ErrorKind, ProviderError


@dataclass(slots=True)
class AttemptSummary:
    """One attempt as the client is told about it (never with a secret)."""

    provider: str
    model: str
    ok: bool
    elapsed_ms: float
    kind: str | None = None
    status: int | None = None
    message: str | None = None

    def public(self) -> dict:
        return {k: v for k, v in (
            ("provider", self.provider), ("model", self.model), ("ok", self.ok),
            ("error", self.kind), ("status", self.status), ("message", self.message),
            ("elapsed_ms", round(self.elapsed_ms, 1)),
        ) if v is not None}


@dataclass(slots=True)
class Routed:
    """The answer to a request: who answered, what, and the attempts it took.

    ``completion`` for a whole answer; ``stream`` for a streamed one, whose
    first content is held ready to send.
    """

    provider: ProviderConfig
    completion: Completion | None
    attempts: list[AttemptSummary]
    stream: StreamAttempt | None = None


class NoProviderAvailable(Exception):
    """No provider can take the request at all (none configured, all disabled, none matches)."""


class UnknownStrategy(Exception):
    """No installed strategy plugin answered for the strategy name."""


class AllProvidersFailed(Exception):
    """Every provider in the order was tried and failed."""

    def __init__(self, attempts: list[AttemptSummary]) -> None:
        super().__init__(f"all {len(attempts)} attempts failed")
        self.attempts = attempts


class Router:
    """Routes requests over a fixed set of providers with a fixed set of hooks."""

    def __init__(self, hooks: HookCalls, client: httpx.AsyncClient, default_strategy: str) -> None:
        self.hooks = hooks
        self.client = client
        self.default_strategy = default_strategy

    def order(self, request: ChatRequest, providers: list[ProviderConfig]) -> list[ProviderConfig]:
        """The providers to try for ``request``, best first, as the strategy plugin says."""
        strategy = request.strategy or self.default_strategy
        _, order = self.hooks.first(
            "select_provider", request=request, providers=providers, strategy=strategy
        )
        if order is None:
            raise UnknownStrategy(strategy)
        return list(order)

    async def route(self, request: ChatRequest, providers: list[ProviderConfig]) -> Routed:
        """Try the ordered providers until one answers; raise AllProvidersFailed otherwise.

        For ``request.stream`` a provider has answered once its stream has content
        (``Routed.stream``); until then a failure still falls back.
        """
        order = self.order(request, providers)
        if not order:
            raise NoProviderAvailable("the strategy left no provider to try")
        attempts: list[AttemptSummary] = []
        waited_ms = 0.0  # time spent on failed attempts, all of it upstream's
        for number, provider in enumerate(order, 1):
            started = time.perf_counter()
            try:
                answer = await self._attempt(provider, request, number, started, waited_ms)
            except ProviderError as error:
                attempts.append(_failed(provider, error, started))
                waited_ms += attempts[-1].elapsed_ms
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000
            attempts.append(AttemptSummary(provider.id, provider.model, True, elapsed_ms))
            if isinstance(answer, StreamAttempt):
                return Routed(provider, None, attempts, stream=answer)
            return Routed(provider, answer, attempts)
        raise AllProvidersFailed(attempts)

    async def _attempt(
        self, provider: ProviderConfig, request: ChatRequest, number: int, started: float,
        waited_ms: float,
    ) -> Completion | StreamAttempt:
        """One call; every plugin hears how it went, exactly once (for a stream, when it ends)."""
        answer = await self._call_reporting(provider, request, number, started)
        if request.stream:
            if isinstance(answer, Completion):  # an adapter that cannot stream answers whole
                answer = single_chunk_stream(answer)
            stream = StreamAttempt(self.hooks, provider, request, number, started, answer)
            await stream.open()
            stream.overhead_ms = overhead_ms(request, waited_ms + stream.upstream_ms)
            return stream
        answer.cost = cost_of(provider, answer.usage)
        answer.overhead_ms = overhead_ms(request, waited_ms + answer.upstream_ms)
        self.hooks.notify(
            "on_result", provider=provider, request=request, result=answer,
            elapsed_ms=(time.perf_counter() - started) * 1000, attempt=number,
        )
        return answer

    async def _call_reporting(
        self, provider: ProviderConfig, request: ChatRequest, number: int, started: float
    ) -> Any:
        """``_call``, reporting a failure (or cancellation) to every plugin before re-raising."""
        try:
            return await self._call(provider, request)
        except ProviderError as error:
            self._report_failure(provider, request, error, number, started)
            raise
        except asyncio.CancelledError:
            error = ProviderError(ErrorKind.CANCELLED, "the client went away")
            self._report_failure(provider, request, error, number, started)
            raise

    async def _call(self, provider: ProviderConfig, request: ChatRequest) -> Any:
        """The adapter's answer: a Completion, or for a stream an async iterator of chunks."""
        try:
            plugin, pending = self.hooks.first(
                "call_provider", provider=provider, request=request, client=self.client
            )
        except PluginError as exc:
            raise ProviderError(ErrorKind.PLUGIN, str(exc)) from exc
        if pending is None:
            raise ProviderError(ErrorKind.PLUGIN, f"no installed adapter handles type {provider.type!r}")
        try:
            return await pending
        except (ProviderError, asyncio.CancelledError):
            raise
        except Exception as exc:
            message = f"plugin {plugin!r} failed in call_provider: {type(exc).__name__}: {exc}"
            raise ProviderError(ErrorKind.PLUGIN, message) from exc

    def _report_failure(
        self, provider: ProviderConfig, request: ChatRequest, error: ProviderError,
        number: int, started: float,
    ) -> None:
        self.hooks.notify(
            "on_failure", provider=provider, request=request, error=error,
            elapsed_ms=(time.perf_counter() - started) * 1000, attempt=number,
        )


def overhead_ms(request: ChatRequest, upstream_ms: float) -> float:
    """The gateway's own time on ``request`` so far: wall time since it arrived, less upstream waits."""
    if not request.received_at:
        return 0.0
    return max(0.0, (time.perf_counter() - request.received_at) * 1000 - upstream_ms)


def _failed(provider: ProviderConfig, error: ProviderError, started: float) -> AttemptSummary:
    return AttemptSummary(
        provider.id, provider.model, False, (time.perf_counter() - started) * 1000,
        kind=error.kind.value, status=error.status, message=error.message,
    )
