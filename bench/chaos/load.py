"""The load of a chaos run: httpx clients posting a mix of requests, some leaving on purpose.

Each request carries its own ``x-request-id`` (``chaos-<n>``), so the report can find its
lines in app.log and its rows in the ledger. The mix: chat completions, whole and
streamed (most of the traffic), ``/v1/messages``, ``/v1/responses`` with ``store: false``
and ``/generate``, each whole and streamed. A stream is complete only with its surface's
last event; one that answered 200 and ended without it was cut after content reached the
client (a provider that broke mid-stream: no 5xx, but counted).

A client that leaves on purpose (``disconnect_rate``) reads a stream's first bytes and
closes it, or gives up on a whole answer after ``IMPATIENT_S``; such a request is no failure.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import ssl
import time
from dataclasses import dataclass, field

import httpx
import orjson

#: (name, path, streamed, share of the traffic)
KINDS = (
    ("chat", "/v1/chat/completions", False, 30),
    ("chat stream", "/v1/chat/completions", True, 25),
    ("messages", "/v1/messages", False, 7),
    ("messages stream", "/v1/messages", True, 6),
    ("responses", "/v1/responses", False, 7),
    ("responses stream", "/v1/responses", True, 6),
    ("generate", "/generate", False, 12),
    ("generate stream", "/generate", True, 7),
)
#: The bytes a complete stream of each surface has near its end.
STREAM_END = {"/v1/chat/completions": b"data: [DONE]", "/v1/messages": b"message_stop",
              "/v1/responses": b"response.completed", "/generate": b'"done":true'}
IMPATIENT_S = 0.5
#: Longest a client waits for one answer: past the gateway's deadline, so the gateway answers first.
CLIENT_TIMEOUT_S = 45.0


@dataclass(slots=True)
class Outcome:
    """What one request got, as the client saw it."""

    request_id: str
    kind: str
    concurrency: int
    started_s: float  # since the run began
    latency_s: float
    sent_at: float = 0.0  # wall clock (time.time()), to hold against app.log's times
    status: int | None = None  # None: no answer at all (a connection error, a client timeout)
    ok: bool = False
    disconnected: bool = False  # the client left on purpose
    cut: bool = False  # a 200 stream that ended without its last event
    attempts: int | None = None  # x-modelbroker-attempts
    error: str | None = None


@dataclass
class Load:
    """The shared state of the load: where to send, what happened, how often clients leave."""

    base_url: str
    seed: int
    disconnect_rate: float = 0.04
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    lags: list[float] = field(default_factory=list)  # how late this process's event loop woke, seconds
    stopped: bool = False  # set when the gateway has died: nothing more to learn

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._ids = itertools.count(1)
        self._kinds = [kind for kind in KINDS for _ in range(kind[3])]

    def body(self, path: str, stream: bool, request_id: str) -> dict:
        prompt = f"Chaos request {request_id}: answer in one short sentence."
        if path == "/v1/chat/completions":
            body = {"model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 32}
        elif path == "/v1/messages":
            body = {"model": "auto", "max_tokens": 32, "messages": [{"role": "user", "content": prompt}]}
        elif path == "/v1/responses":
            body = {"model": "auto", "input": prompt, "max_output_tokens": 32, "store": False}
        else:
            body = {"prompt": prompt, "max_tokens": 32}
        if stream:
            body["stream"] = True
        return body

    async def one(self, client: httpx.AsyncClient, concurrency: int) -> Outcome:
        """Send one request of a random kind and read its answer (or leave early, on purpose)."""
        name, path, stream, _ = self.rng.choice(self._kinds)
        request_id = f"chaos-{next(self._ids)}"
        leave = self.rng.random() < self.disconnect_rate
        started = time.monotonic()
        outcome = Outcome(request_id, name, concurrency, started - self.started, 0.0, time.time())
        content = orjson.dumps(self.body(path, stream, request_id))
        headers = {"content-type": "application/json", "x-request-id": request_id}
        timeout = IMPATIENT_S if leave and not stream else CLIENT_TIMEOUT_S
        try:
            async with client.stream("POST", path, content=content, headers=headers,
                                     timeout=httpx.Timeout(timeout, connect=5.0)) as answer:
                outcome.status = answer.status_code
                outcome.attempts = _int(answer.headers.get("x-modelbroker-attempts"))
                await self._read(answer, outcome, path, stream, leave)
        except httpx.TimeoutException as exc:
            if leave and not stream:
                outcome.disconnected = True
            else:
                outcome.error = f"client timeout: {type(exc).__name__}"
        except httpx.HTTPError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.latency_s = time.monotonic() - started
        self.outcomes.append(outcome)
        return outcome

    async def _read(self, answer: httpx.Response, outcome: Outcome, path: str, stream: bool, leave: bool) -> None:
        if answer.status_code != 200 or not stream:
            body = await answer.aread()
            if answer.status_code == 200:
                outcome.ok = _is_object(body)
                outcome.error = None if outcome.ok else f"200 with a body that is not a JSON object: {body[:200]!r}"
            else:
                outcome.error = error_text(answer.status_code, body)
            return
        tail = b""
        async for piece in answer.aiter_bytes():
            if leave:
                outcome.disconnected = True
                return  # leaving the block closes the connection mid-stream
            tail = (tail + piece)[-4096:]
        outcome.ok = STREAM_END[path] in tail
        outcome.cut = not outcome.ok


def error_text(status: int, body: bytes) -> str:
    """``status code: message`` from an error body of any surface's shape."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return f"{status}: {body[:200]!r}"
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return f"{status}: {str(data)[:200]}"
    code = error.get("code") or error.get("type")
    return f"{status} {code}: {str(error.get('message'))[:300]}"


def _is_object(body: bytes) -> bool:
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


async def worker(load: Load, concurrency: int, until: float, tls: ssl.SSLContext) -> None:
    """Requests one after another until ``until`` (monotonic), each bounded by its timeout, on a
    client of its own with one connection, as one user's. (One pool shared by 64 clients made
    requests wait in it for seconds before they were sent, and the latencies were the pool's.)
    An idle connection is dropped before uvicorn's keep-alive timeout (5 s) can close it under
    a request just sent on it: that race loses the request before the gateway sees it.
    ``tls`` is shared: each client making its own costs ~50 ms, and 64 of them held the first
    requests for seconds."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=load.base_url, limits=limits, verify=tls) as client:
        while time.monotonic() < until and not load.stopped:
            await load.one(client, concurrency)


async def watch_lag(load: Load, interval: float = 0.1) -> None:
    """How late the load's own event loop wakes: a starved client delays its requests, and
    the latencies it measures are then partly its own."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(interval)
        load.lags.append(time.monotonic() - before - interval)


async def run_phases(load: Load, phases: list[tuple[int, float]]) -> None:
    """``phases``: (concurrency, seconds), one after another. A phase's clients finish the
    request they are in when it ends, while the next phase's clients start."""
    watcher = asyncio.create_task(watch_lag(load))
    tls = ssl.create_default_context()
    tasks: list[asyncio.Task] = []
    for concurrency, seconds in phases:
        until = time.monotonic() + seconds
        tasks += [asyncio.create_task(worker(load, concurrency, until, tls)) for _ in range(concurrency)]
        await asyncio.sleep(max(0.0, until - time.monotonic()))
    done, pending = await asyncio.wait(tasks, timeout=CLIENT_TIMEOUT_S + 15)
    for task in [*pending, watcher]:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            raise task.exception()
