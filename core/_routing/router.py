"""The router: order the providers, try them one by one, report every attempt.

    order = strategy.select_provider(...)        # the strategy registered under the name
    for provider in order:
        adapter.call_provider(...)               # the adapter registered for provider.type
            -> on_result and answer | on_failure and next

The router knows no provider and no strategy by name: it looks the names up in the
registry that the plugins filled (``_plugins/registry.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from modelbroker._config.providers import GatewayConfig, ProviderConfig
from modelbroker._plugins.hookcall import HookCalls, PluginError
from modelbroker._plugins.registry import Registry
from modelbroker._routing import policy
from modelbroker._routing.errors import (
    AllProvidersBusy,
    AllProvidersFailed,
    APIError,
    AttemptSummary,
    NoProviderAvailable,
    UnknownStrategy,
)
from modelbroker._routing.health import HealthTracker
from modelbroker._routing.pricing import cost_of, estimate_tokens
from modelbroker._routing.records import AttemptReporter
from modelbroker._routing.streaming import COUNTS_CANCELS, StreamAttempt, StreamEnd, single_chunk_stream
from modelbroker._routing.types import ChatRequest, Completion, ErrorKind, ProviderError, StreamChunk
from modelbroker._upstream.client import ATTEMPT_HEADERS, UpstreamHTTP

log = logging.getLogger("modelbroker")


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

    def relay(self) -> AsyncIterator[StreamChunk | StreamEnd]:
        """A streamed answer: its chunks as they come, then one ``StreamEnd`` (the completion,
        or the error that cut the stream). Read it inside ``contextlib.aclosing``."""
        return self.stream.relay()


class Router:
    """Routes requests over the providers: order, attempts, retries, fallback, deadline.

    docs/reliability.md describes the policy; ``ReliabilityConfig`` holds its numbers.
    """

    def __init__(self, hooks: HookCalls, registry: Registry, client: httpx.AsyncClient, config: GatewayConfig,
                 health: HealthTracker, http: UpstreamHTTP) -> None:
        self.hooks = hooks
        self.report = AttemptReporter(hooks)
        self.registry = registry
        self.client = client
        self.http = http
        self.config = config
        self.default_strategy = config.strategy
        self.policy = config.reliability
        self.health = health
        #: Looked up once: with no plugin implementing on_attempt, an attempt makes no call for it.
        self.hears_attempts = hooks.has("on_attempt")

    def order(self, request: ChatRequest, providers: list[ProviderConfig]) -> list[ProviderConfig]:
        """The providers to try for ``request``, best first, as its strategy says."""
        name = request.strategy or self.default_strategy
        strategy = self.registry.strategies.get(name)
        if strategy is None:
            raise UnknownStrategy(name)
        return order_by(strategy, request, providers, self.health, self.config)

    def usable(self, request: ChatRequest, providers: list[ProviderConfig]) -> list[ProviderConfig]:
        """The providers that may take a request now; if all are cooling down, the one that
        recovers first. Raises AllProvidersBusy when all are at their own limits."""
        tokens = estimate_tokens(request.prompt_text()) if any(p.tpm for p in providers) else 0
        ready = [p for p in providers if self.health.available(p, tokens)]
        if ready:
            return ready
        resting = [p for p in providers if self.health.within_limits(p, tokens)]
        if not resting:
            raise AllProvidersBusy("every provider is at its max_concurrency, rpm or tpm limit")
        return [min(resting, key=self.health.cooling_ends)]

    async def route(self, request: ChatRequest, providers: list[ProviderConfig]) -> Routed:
        """Try the ordered providers until one answers, within the request's deadline.

        For ``request.stream`` a provider has answered once its stream has content
        (``Routed.stream``); until then a failure still falls back.
        """
        deadline = request.deadline or (time.monotonic() + self.policy.request_timeout_s)
        usable = self.usable(request, providers)
        queue = self.order(request, usable)
        if not queue:
            raise NoProviderAvailable("the strategy left no provider to try")
        # Only when every provider was resting is one that is not available now tried.
        forced = len(usable) == 1 and not self.health.available(usable[0])
        tokens = estimate_tokens(request.prompt_text()) if any(p.tpm for p in queue) else 0
        run = _Run(request, deadline, tokens)
        while queue and len(run.attempts) < self.policy.max_attempts:
            provider = queue.pop(0)
            if run.attempts and not forced and not self.health.available(provider, tokens):
                # The order was fixed when the request arrived; since then this provider may
                # have reached a limit, started cooling down, or begun its half-open trial.
                continue
            answer = await self._try_provider(run, provider, queue)
            if answer is not None:
                return answer
        raise AllProvidersFailed(run.attempts, deadline=run.remaining() <= 0, retry_after=run.rate_limited_for())

    async def _try_provider(self, run: _Run, provider: ProviderConfig,
                            queue: list[ProviderConfig]) -> Routed | None:
        """Attempts at one provider, retrying transient failures; None to go on to the next."""
        retries = provider.retries if provider.retries is not None else self.policy.retries
        while len(run.attempts) < self.policy.max_attempts:
            started = time.perf_counter()
            try:
                answer = await self._attempt_in_time(run, provider, started, queue)
            except ProviderError as error:
                run.failed(provider, error, started)
                pause = self._retry_pause(run, provider, error, retries, queue)
                if pause is None:
                    return None
                retries -= 1
                slept = time.perf_counter()
                await asyncio.sleep(pause)
                # A deliberate wait, not the gateway's overhead: as long as it lasted, not ``pause``,
                # which uvloop's millisecond timers may end up to a millisecond early or late.
                run.waited_ms += (time.perf_counter() - slept) * 1000
                if not self.health.may_retry(provider, run.tokens):
                    return None  # it filled up (or began a trial) while this request waited
                continue
            run.succeeded(provider, started)
            if isinstance(answer, StreamAttempt):
                return Routed(provider, None, run.attempts, stream=answer)
            return Routed(provider, answer, run.attempts)
        return None

    def _retry_pause(self, run: _Run, provider: ProviderConfig, error: ProviderError,
                     retries: int, queue: list[ProviderConfig]) -> float | None:
        """Seconds to wait before trying ``provider`` again, or None to move on.

        Narrows ``queue`` to larger context windows after a context-length error.
        """
        if policy.context_too_long(error):
            queue[:] = [p for p in queue if _larger_context(p, provider)]
            return None
        if not policy.is_transient(error) or retries <= 0:
            return None
        if policy.falls_back_first(error) and any(self.health.available(p, run.tokens) for p in queue):
            return None  # a hung or unreachable provider: another one is the better bet at once
        if error.status == 429:
            if any(self.health.available(p) for p in queue):
                return None  # another provider takes it at once
            wait = error.retry_after
            if wait is not None:
                if wait > self.policy.max_retry_after_wait_s:
                    return None  # never sit on a long Retry-After
                return wait if wait < run.remaining() else None
            # no Retry-After: an ordinary transient failure, retried after a backoff
        if not self.health.available(provider):
            return None  # it has just started cooling down
        retry = (self.policy.retries if provider.retries is None else provider.retries) - retries + 1
        pause = policy.backoff_s(self.policy, retry)
        return pause if pause < run.remaining() else None

    async def _attempt_in_time(self, run: _Run, provider: ProviderConfig, started: float,
                               queue: list[ProviderConfig]):
        """One attempt, cut off at the request's deadline (which ends the request), or sooner at
        the attempt's own limit (``attempt_limit``: a timeout that falls back)."""
        remaining = run.remaining()
        if remaining <= 0:
            raise AllProvidersFailed(run.attempts, deadline=True)
        number = len(run.attempts) + 1
        limit, which = attempt_limit(provider, run.request, remaining, self._others_remain(run, queue))
        self.health.begin(provider, (id(run.request), number))
        try:
            return await within(limit, self._attempt(provider, run, number, started))
        except asyncio.TimeoutError:
            if which is None:
                run.expired = True
                error = ProviderError(ErrorKind.TIMEOUT, "the request deadline passed during this attempt")
            else:
                error = cut_off(which, limit)
            self._report_failure(provider, run.request, error, number, started)
            raise error from None
        except asyncio.CancelledError:
            error = ProviderError(ErrorKind.CANCELLED, "the client went away")
            self._report_failure(provider, run.request, error, number, started)
            raise

    def _others_remain(self, run: _Run, queue: list[ProviderConfig]) -> bool:
        """Another provider could still take the request after this attempt."""
        return len(run.attempts) + 1 < self.policy.max_attempts and any(
            self.health.available(p, run.tokens) for p in queue)

    async def _attempt(
        self, provider: ProviderConfig, run: _Run, number: int, started: float,
    ) -> Completion | StreamAttempt:
        """One call; every plugin hears how it went, exactly once (for a stream, when it ends)."""
        request, waited_ms = run.request, run.waited_ms
        called = time.perf_counter()
        if self.hears_attempts:
            answer = await self._call_with_headers(provider, request, number, started)
        else:
            answer = await self._call_reporting(provider, request, number, started)
        if request.stream:
            if isinstance(answer, Completion):  # an adapter that cannot stream answers whole
                answer = single_chunk_stream(answer)
            stream = StreamAttempt(self.report, provider, request, number, started, answer, run.deadline)
            # Until the adapter gives its iterator, it was connecting and waiting for the
            # upstream's head: the upstream's time, not the gateway's.
            stream.upstream_ms = (time.perf_counter() - called) * 1000
            await stream.open()
            stream.overhead_ms = overhead_ms(request, waited_ms + stream.upstream_ms)
            return stream
        answer.cost = cost_of(provider, answer.usage)
        answer.overhead_ms = overhead_ms(request, waited_ms + answer.upstream_ms)
        self.report.result(provider, request, answer, (time.perf_counter() - started) * 1000, number)
        return answer

    async def _call_with_headers(
        self, provider: ProviderConfig, request: ChatRequest, number: int, started: float
    ) -> Any:
        """``_call_reporting``, with the headers the ``on_attempt`` hooks give added to the
        attempt's upstream calls (``ATTEMPT_HEADERS``, read by the gateway's clients)."""
        added: dict[str, str] = {}
        for plugin, headers in self.hooks.each("on_attempt", contain=True, provider=provider, request=request,
                                               attempt=number):
            if isinstance(headers, Mapping):
                added.update(headers)
            else:
                log.warning("plugin %r answered on_attempt with a %s, not a mapping of headers; the attempt goes "
                            "on without it", plugin, type(headers).__name__)
        token = ATTEMPT_HEADERS.set(added or None)
        try:
            return await self._call_reporting(provider, request, number, started)
        finally:
            ATTEMPT_HEADERS.reset(token)

    async def _call_reporting(
        self, provider: ProviderConfig, request: ChatRequest, number: int, started: float
    ) -> Any:
        """``_call``, reporting a failure to every plugin before re-raising it.

        Cancellation (the client left, or the deadline passed) is reported by the caller.
        """
        try:
            return await self._call(provider, request)
        except ProviderError as error:
            self._report_failure(provider, request, error, number, started)
            raise

    async def _call(self, provider: ProviderConfig, request: ChatRequest) -> Any:
        """The adapter's answer: a Completion, or for a stream an async iterator of chunks."""
        adapter = self.registry.adapters.get(provider.type)
        if adapter is None:
            raise ProviderError(ErrorKind.PLUGIN, f"no installed adapter handles type {provider.type!r}")
        try:
            answer = adapter.call({"provider": provider, "request": request, "http": self.http,
                                   "client": self.client, "config": self.config})
            if inspect.isawaitable(answer):
                answer = await answer
        except (ProviderError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise ProviderError(ErrorKind.PLUGIN, str(PluginError(adapter.plugin, "call_provider", exc))) from exc
        if isinstance(answer, Completion) or (request.stream and hasattr(answer, "__anext__")):
            return answer
        if hasattr(answer, "aclose"):  # a stream nobody asked for: let its connection go
            await answer.aclose()
        expected = "a Completion or an async iterator of StreamChunk" if request.stream else "a Completion"
        raise ProviderError(
            ErrorKind.PLUGIN, f"plugin {adapter.plugin!r} answered call_provider with a {type(answer).__name__}; "
            f"expected {expected}",
        )

    def _report_failure(
        self, provider: ProviderConfig, request: ChatRequest, error: ProviderError,
        number: int, started: float,
    ) -> None:
        self.report.failure(provider, request, error, (time.perf_counter() - started) * 1000, number)


def order_by(strategy, request: ChatRequest, providers: list[ProviderConfig], health, config) -> list[ProviderConfig]:
    """``strategy``'s order for ``request``; a strategy that raises, or answers something other
    than a list, is a bug of its plugin (PluginError, answered 500 naming it)."""
    try:
        order = strategy.call({"request": request, "providers": providers, "health": health, "config": config})
    except APIError:
        raise
    except Exception as exc:
        raise PluginError(strategy.plugin, "select_provider", exc) from exc
    if not isinstance(order, (list, tuple)):
        problem = TypeError(f"strategy {strategy.name!r} answered a {type(order).__name__}; "
                            "select_provider must return a list of providers")
        raise PluginError(strategy.plugin, "select_provider", problem)
    return list(order)


def attempt_limit(provider: ProviderConfig, request: ChatRequest, remaining: float,
                  others_remain: bool) -> tuple[float, str | None]:
    """Seconds one attempt may take, and which limit that is: None for the request's deadline,
    ``"share"`` or ``"first_token"`` for a limit that falls back (``cut_off``).

    While another provider could still take the request, an attempt may use at most half of
    the time left, so that a hung provider leaves the next one time to answer
    (docs/reliability.md, 'Timeouts fall back first'). A streamed attempt must bring its
    first content within ``first_token_timeout_s``: until then nothing has reached the
    client, and another provider can still take over.
    """
    limit, which = remaining, None
    if others_remain:
        limit, which = remaining / 2, "share"
    if request.stream:
        first = provider.first_token_timeout_s or provider.timeout_s
        if first < limit:
            limit, which = first, "first_token"
    return limit, which


def cut_off(which: str, limit: float) -> ProviderError:
    """The failure of an attempt that reached its own ``limit`` (``attempt_limit``)."""
    if which == "first_token":
        return ProviderError(ErrorKind.TIMEOUT, f"no content within first_token_timeout_s ({limit:g} s)")
    return ProviderError(ErrorKind.TIMEOUT, f"no answer in {limit:.3g} s, half of the time left before the "
                                            "request's deadline, which the other providers keep")


T = TypeVar("T")


class _Run:
    """The bookkeeping of one request's attempts."""

    def __init__(self, request: ChatRequest, deadline: float, tokens: int = 0) -> None:
        self.request = request
        self.deadline = deadline
        self.tokens = tokens  # the prompt's estimate, for providers with a tpm limit
        self.attempts: list[AttemptSummary] = []
        self.waited_ms = 0.0  # failed attempts and backoff pauses: time not spent working
        self.retry_afters: list[float | None] = []
        # Set when the deadline cut an attempt off. The event loop's timer may fire a
        # little before time.monotonic() reaches the deadline (uvloop keeps milliseconds).
        self.expired = False

    def remaining(self) -> float:
        if self.expired:
            return 0.0
        return self.deadline - time.monotonic()

    def failed(self, provider: ProviderConfig, error: ProviderError, started: float) -> None:
        self.attempts.append(_failed(provider, error, started))
        self.waited_ms += self.attempts[-1].elapsed_ms
        # An exhausted quota is no rate limit: waiting will not help, so it sets no Retry-After.
        self.retry_afters.append(error.retry_after if policy.rate_limited(error) else -1.0)

    def succeeded(self, provider: ProviderConfig, started: float) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.attempts.append(AttemptSummary(provider.id, provider.model, True, elapsed_ms))

    def rate_limited_for(self) -> float | None:
        """If every attempt was a 429, the shortest Retry-After (1 s if none was given)."""
        if not self.retry_afters or any(r is not None and r < 0 for r in self.retry_afters):
            return None
        return min(r if r is not None else 1.0 for r in self.retry_afters)


def _larger_context(candidate: ProviderConfig, failed: ProviderConfig) -> bool:
    if candidate.context_window is None:
        return failed.context_window is None
    return failed.context_window is None or candidate.context_window > failed.context_window


async def within(seconds: float, work: Awaitable[T]) -> T:
    """``await work``, cut off after ``seconds`` (TimeoutError); no task is made for it.

    What ``asyncio.timeout`` does, with one timer and no context object: it runs once
    per attempt, and asyncio's version was a measurable part of an attempt's cost
    (docs/performance.md, 'Measurements behind the code'). A cancellation from elsewhere
    (the client left) that arrives as well stays a cancellation.
    """
    loop = asyncio.get_running_loop()  # once: on Python 3.11 each lookup is a getpid() system call
    task = asyncio.current_task(loop)
    cancelling = task.cancelling() if COUNTS_CANCELS else 0
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = loop.call_later(seconds, expire)
    try:
        return await work
    except asyncio.CancelledError:
        if expired and (not COUNTS_CANCELS or task.uncancel() <= cancelling):
            raise asyncio.TimeoutError() from None
        raise
    finally:
        timer.cancel()


def overhead_ms(request: ChatRequest, upstream_ms: float) -> float:
    """The gateway's own time on ``request`` so far: wall time since it arrived, less ``upstream_ms``
    (failed attempts, backoff pauses and this attempt's upstream call, each as measured; never
    negative, should an adapter overstate its own ``upstream_ms``)."""
    if not request.received_at:
        return 0.0
    return max(0.0, (time.perf_counter() - request.received_at) * 1000 - upstream_ms)


def _failed(provider: ProviderConfig, error: ProviderError, started: float) -> AttemptSummary:
    return AttemptSummary(
        provider.id, provider.model, False, (time.perf_counter() - started) * 1000,
        kind=error.kind.value, status=error.status, message=without_endpoint(error.message, provider), code=error.code,
        detail=error.detail, error_type=error.error_type, param=error.param,
        request_fault=error.kind == ErrorKind.STATUS and policy.is_request_fault(error),
    )


def without_endpoint(message: str, provider: ProviderConfig) -> str:
    """``message`` with the provider's endpoint (its URL, origin and host) left out: the client
    is told which provider failed, by id, and how, not where the operator's upstreams are.
    app.log and the ledger keep the whole message."""
    parts = urllib.parse.urlsplit(provider.endpoint)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = ""
    host = parts.hostname or ""
    for where in (provider.endpoint, f"{parts.scheme}://{host}:{port}", f"{parts.scheme}://{parts.netloc}",
                  f"{host}:{port}", parts.netloc, host):
        if where and where in message:
            message = message.replace(where, "the provider's endpoint")
    return message
