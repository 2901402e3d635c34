"""The failure matrix: every failure the fake upstream can produce, through every adapter, on both
routes, streamed or not, with a healthy second provider and alone (docs/reliability.md).

Each case checks one of three promises:

1. The first provider fails before any content and a second one is healthy: the second answers
   (200, ``x-modelbroker-provider``), and app.log has one line per attempt, the failure first.
2. The only provider fails before any content: 502 (504 past the deadline, 429 when it was
   rate-limited) in the OpenAI error shape with ``attempts``, never a 500, one line per attempt.
3. A stream fails after content was sent: the client has the content, then an explicit error
   event and no ``[DONE]`` (no ``done`` on /generate), and the one line is ``partial``.

The gateways are shared by the module, one per adapter and topology: ``retries: 0`` (retrying is
tests/reliability/test_retries.py's) and a ``failure_threshold`` no case reaches, so the health one
case leaves behind changes nothing for the next. app.log is read while the gateway runs: after
each case a marker request goes through the same gateway, and once its line is written, so is
every line the case could leave (the log keeps the order the lines were made in).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from modelbroker._routing.tokens import count_tokens, preload
from modelbroker.fake_upstream.formats import split
from modelbroker.plugins import file_log

from ._support import config, wait_until

PROMPT = "hello big world"
TIMEOUT_S = 0.25  # the failing provider's read timeout: slow first bytes and stalls pass it
SLOW_S = 1.0  # how long a slow upstream waits before its first byte
DEADLINE_S = "0.12"  # x-modelbroker-timeout for the deadline cases, below TIMEOUT_S
CLIENT_TIMEOUT_S = 5.0  # no client call of this module waits longer
MAX_CASE_S = 3.0
CHUNKS, CUT_AFTER = 4, 2  # a stream broken after content: 2 of its 4 deltas are sent
RELIABILITY = {"retries": 0, "failure_threshold": 1000}


@dataclass(frozen=True)
class Adapter:
    """One adapter type on the fake upstream: the models of its failing and its healthy provider."""

    type: str
    first: str
    second: str

    def entry(self, upstream, name: str, model: str, **fields) -> dict:
        return {"name": name, "type": self.type, "endpoint": upstream.endpoint(self.type), "model": model,
                "api_key": "k-failure-matrix", "cost_per_1k_tokens": 0.001, **fields}

    @property
    def first_id(self) -> str:
        return f"first/{self.first}"

    @property
    def second_id(self) -> str:
        return f"second/{self.second}"


ADAPTERS = [
    Adapter("openai", "mx-openai-1", "mx-openai-2"),
    Adapter("anthropic", "mx-claude-1", "mx-claude-2"),
    Adapter("gemini", "mx-gem-1", "mx-gem-2"),
]


@dataclass(frozen=True)
class Failure:
    """A behaviour of the fake upstream and what the gateway must make of it."""

    behavior: dict
    kind: str  # the error_kind of the failed attempt (app.log, error.attempts)
    status: int | None = None  # its upstream status
    alone: int = 502  # what the client gets when no provider is left
    code: str = "all_providers_failed"
    headers: dict = field(default_factory=dict)  # request headers
    upstream_calls: tuple[int, ...] = (1,)  # calls the failing model may get for one attempt


def status(code: int) -> Failure:
    return Failure({"kind": "status", "status": code}, "status", code)


RATE_LIMITED = Failure({"kind": "status", "status": 429}, "status", 429, alone=429, code="rate_limited")
#: A request the upstream read and dropped is never sent again below the router (core/_upstream/http1.py).
DROP = Failure({"kind": "drop"}, "connection", upstream_calls=(1,))
SLOW = Failure({"kind": "slow_first_byte", "delay_s": SLOW_S}, "timeout")
DEADLINE = Failure({"kind": "slow_first_byte", "delay_s": SLOW_S}, "timeout", alone=504, code="deadline_exceeded",
                   headers={"x-modelbroker-timeout": DEADLINE_S})
#: Where the deadline finds the attempt: waiting for the head, or (a stream) for its first content.
DEADLINES = [
    ("whole-slow_first_byte", (False, DEADLINE.behavior)),
    ("stream-slow_first_byte", (True, DEADLINE.behavior)),
    ("stream-stall_before_content", (True, {"kind": "stream_stall", "cut_after": 0})),
]
#: What an answer with nothing in it is: OpenAI's ``choices: []`` is malformed, Gemini's blocked
#: prompt a 400 the prompt is to blame for, answered as such when no provider is left.
#: (Anthropic's ``content: []`` is a valid, empty answer: test_an_empty_anthropic_message_is_an_empty_answer.)
EMPTY = {"openai": Failure({"kind": "empty_choices"}, "malformed"),
         "gemini": Failure({"kind": "empty_choices"}, "status", 400, alone=400, code="prompt_blocked")}

BEFORE_CONTENT = {
    "500": status(500),
    "503": status(503),
    "429": RATE_LIMITED,
    "malformed": Failure({"kind": "malformed"}, "malformed"),
    "empty_choices": None,  # per adapter: EMPTY
    "drop": DROP,
    "reset_mid_body": Failure({"kind": "reset_mid_body"}, "connection"),
    "slow_first_byte": SLOW,
}
STREAM_BEFORE_CONTENT = {
    **BEFORE_CONTENT,
    "cut_before_content": Failure({"kind": "stream_cut", "cut_after": 0}, "connection"),
    "stall_before_content": Failure({"kind": "stream_stall", "cut_after": 0}, "timeout"),
    "error_event_before_content": Failure({"kind": "stream_error_event", "cut_after": 0}, "error_event"),
}
AFTER_CONTENT = {
    "stream_cut": {"kind": "stream_cut"},
    "stream_stall": {"kind": "stream_stall"},
    "stream_error_event": {"kind": "stream_error_event"},
}
ROUTES = ["chat", "generate"]


def before_content_cases() -> list:
    """(adapter, route, stream, failure) for every failure before content, ids like ``gemini-chat-stream-drop``."""
    cases = []
    for adapter in ADAPTERS:
        for route in ROUTES:
            for stream, table in ((False, BEFORE_CONTENT), (True, STREAM_BEFORE_CONTENT)):
                for name, failure in table.items():
                    failure = failure or EMPTY.get(adapter.type)
                    if failure is None:
                        continue
                    label = f"{adapter.type}-{route}-{'stream' if stream else 'whole'}-{name}"
                    cases.append(pytest.param(adapter, route, stream, failure, id=label))
    return cases


def each(*tables) -> list:
    """Every combination of the (id, value) tables, with the ids joined by ``-``."""
    combos = [([], [])]
    for table in tables:
        combos = [(ids + [label], values + [value]) for ids, values in combos for label, value in table]
    return [pytest.param(*values, id="-".join(ids)) for ids, values in combos]


ADAPTER_TABLE = [(a.type, a) for a in ADAPTERS]
ROUTE_TABLE = [(r, r) for r in ROUTES]
STREAM_TABLE = [("whole", False), ("stream", True)]
TOPOLOGY_TABLE = [("alone", True), ("with-second", False)]


# --- the shared gateways ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateways(module_gateway, fake_upstream_server):
    """``gateways(adapter, alone) -> RunningGateway``: provider ``first`` (the one made to fail, with
    a short read timeout), then, unless ``alone``, ``second`` of the same type; started once each.

    app.log is flushed every 20 ms instead of 200 ms, so that reading it while the gateway runs
    costs the cases little.
    """
    started = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(file_log, "FLUSH_INTERVAL_S", 0.02)

        def get(adapter: Adapter, alone: bool):
            key = (adapter.type, alone)
            if key not in started:
                up = fake_upstream_server
                providers = [adapter.entry(up, "first", adapter.first, priority=1, timeout_s=TIMEOUT_S)]
                if not alone:
                    providers.append(adapter.entry(up, "second", adapter.second, priority=2, timeout_s=5))
                started[key] = module_gateway(config(*providers, **RELIABILITY))
            return started[key]

        yield get


@pytest.fixture(scope="module")
def http():
    """One client for the module: every call bounded by CLIENT_TIMEOUT_S."""
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:
        yield client


@pytest.fixture(autouse=True, scope="module")
def _exact_token_counts():
    """The gateway loads tiktoken lazily; load it now so that estimated counts compared here are exact."""
    preload()


# --- asking, and reading the answer ---------------------------------------------------------------


def reply(model: str) -> str:
    """The fake upstream's whole answer to PROMPT."""
    return f"Fake reply from {model}: {PROMPT}"


@dataclass
class Answer:
    """A response read to its end: status, headers, the JSON body or the SSE events, and the time it took."""

    status: int
    headers: httpx.Headers
    body: dict | None
    events: list  # the data of each event: a dict, or the text "[DONE]"
    elapsed_s: float

    @property
    def text(self) -> str:
        """The answer's text: the message, the content deltas, or /generate's response or deltas."""
        if self.body is not None:
            if "choices" in self.body:
                return self.body["choices"][0]["message"]["content"] or ""
            return self.body["response"]
        parts = []
        for event in self.events:
            if isinstance(event, dict) and "delta" in event:
                parts.append(event["delta"])
            elif isinstance(event, dict) and event.get("choices"):
                parts.append(event["choices"][0]["delta"].get("content") or "")
        return "".join(parts)


def ask(http: httpx.Client, gw, route: str, stream: bool, rid: str, headers: dict | None = None) -> Answer:
    """POST PROMPT to ``route`` (``chat`` or ``generate``) and read the whole response."""
    if route == "chat":
        path, body = "/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": PROMPT}]}
    else:
        path, body = "/generate", {"prompt": PROMPT}
    began = time.monotonic()
    with http.stream("POST", gw.url + path, json={**body, "stream": stream},
                     headers={"x-request-id": rid, **(headers or {})}) as response:
        raw = response.read()
    elapsed = time.monotonic() - began
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[len("data: "):] for line in raw.decode().splitlines() if line.startswith("data: ")]
        events = [item if item == "[DONE]" else json.loads(item) for item in data]
        return Answer(response.status_code, response.headers, None, events, elapsed)
    return Answer(response.status_code, response.headers, json.loads(raw), [], elapsed)


def new_id() -> str:
    return f"mx-{uuid.uuid4().hex[:16]}"


def written_lines(path: Path) -> list[dict]:
    """app.log's complete lines so far (a line being written has no newline yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.endswith("\n") and line.strip()]


def logged(gw, upstream, http: httpx.Client, rid: str) -> list[dict]:
    """The app.log lines of ``rid``, in order.

    The fake upstream is reset and a marker request sent; once the marker's line is written,
    every line ``rid`` could leave is written too. No provider may be left in flight.
    """
    upstream.reset()
    marker = new_id()
    answer = http.post(gw.url + "/generate", json={"prompt": "marker"}, headers={"x-request-id": marker})
    assert answer.status_code == 200, answer.text
    assert wait_until(lambda: any(line["request_id"] == marker for line in written_lines(gw.log_file)), timeout=3)
    providers = http.get(gw.url + "/health").json()["providers"]
    assert [(p["id"], p["in_flight"]) for p in providers] == [(p["id"], 0) for p in providers]
    lines = [line for line in written_lines(gw.log_file) if line["request_id"] == rid]
    for line in lines:
        assert line["success"] or line["error"], line  # a failed attempt says what failed
    return lines


def attempts_of(lines: list[dict]) -> list[tuple]:
    """(attempt, provider_id, success, error_kind, status) of each line."""
    return [(line["attempt"], line["provider_id"], line["success"], line.get("error_kind"), line.get("status"))
            for line in lines]


def tokens_of(line: dict) -> tuple:
    return line["prompt_tokens"], line["completion_tokens"], line["total_tokens"], line.get("tokens_estimated", False)


def assert_error_shape(answer: Answer, rid: str, adapter: Adapter, failure: Failure) -> None:
    """An error in OpenAI's shape that lists the one attempt; never a stream, never a 500."""
    assert answer.status == failure.alone, answer.body or answer.events
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["x-request-id"] == rid
    assert answer.headers["x-should-retry"] == "false"
    error = answer.body["error"]
    assert {"message", "type", "code", "attempts"} <= set(error), error
    assert error["code"] == failure.code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    attempts = [(a["provider"], a["ok"], a["error"], a.get("status")) for a in error["attempts"]]
    assert attempts == [(adapter.first_id, False, failure.kind, failure.status)]
    if failure.alone == 429:
        assert answer.headers["retry-after"] == "1"  # the upstream gave no Retry-After


def assert_complete(answer: Answer, route: str, stream: bool, provider_id: str, model: str, attempts: int) -> None:
    """A 200 with the whole answer of ``model``; a stream ends with ``[DONE]`` (or /generate's summary)."""
    assert answer.status == 200, answer.body or answer.events
    assert answer.headers["x-modelbroker-provider"] == provider_id
    assert answer.headers["x-modelbroker-attempts"] == str(attempts)
    assert answer.text == reply(model)
    if not stream:
        if route == "generate":
            assert (answer.body["provider"], answer.body["attempts"]) == (provider_id, attempts)
        return
    errors = [e for e in answer.events if isinstance(e, dict) and "error" in e]
    assert errors == []
    if route == "chat":
        assert answer.events[-1] == "[DONE]" and answer.events.count("[DONE]") == 1
        chunks = answer.events[:-1]
        assert {chunk["model"] for chunk in chunks} == {model}  # nothing of a failed attempt is relayed
        assert sum(1 for chunk in chunks if chunk["choices"] and "role" in chunk["choices"][0]["delta"]) == 1
        assert all(chunk["choices"] for chunk in chunks)  # no usage chunk: the client asked for none
    else:
        last = answer.events[-1]
        assert (last["done"], last["provider"], last["attempts"]) == (True, provider_id, attempts)


# --- 1. the first provider fails before any content: the second answers ------------------------------


@pytest.mark.parametrize("adapter, route, stream, failure", before_content_cases())
def test_failure_before_content_falls_back_to_the_second(gateways, upstream, http, adapter, route, stream, failure):
    gw = gateways(adapter, alone=False)
    upstream.set_behavior(adapter.first, failure.behavior)
    rid = new_id()
    answer = ask(http, gw, route, stream, rid)
    assert answer.elapsed_s < MAX_CASE_S
    assert_complete(answer, route, stream, adapter.second_id, adapter.second, attempts=2)
    assert upstream.calls[adapter.first] in failure.upstream_calls
    assert upstream.calls[adapter.second] == 1
    lines = logged(gw, upstream, http, rid)
    assert attempts_of(lines) == [
        (1, adapter.first_id, False, failure.kind, failure.status),
        (2, adapter.second_id, True, None, None),
    ]
    assert tokens_of(lines[1]) == (3, 7, 10, False)  # the upstream's own usage


# --- 2. the only provider fails before any content: an error that lists the attempt ------------------


@pytest.mark.parametrize("adapter, route, stream, failure", before_content_cases())
def test_failure_before_content_alone_is_an_error_with_the_attempt(gateways, upstream, http, adapter, route, stream,
                                                                   failure):
    gw = gateways(adapter, alone=True)
    upstream.set_behavior(adapter.first, failure.behavior)
    rid = new_id()
    answer = ask(http, gw, route, stream, rid)
    assert answer.elapsed_s < MAX_CASE_S
    assert_error_shape(answer, rid, adapter, failure)
    assert upstream.calls[adapter.first] in failure.upstream_calls
    assert attempts_of(logged(gw, upstream, http, rid)) == [(1, adapter.first_id, False, failure.kind, failure.status)]


# --- the deadline: 504 when the provider that hangs is the last; else the second answers in time ------------


@pytest.mark.parametrize("adapter, route, where", each(ADAPTER_TABLE, ROUTE_TABLE, DEADLINES))
def test_a_deadline_passed_on_the_only_provider_is_a_504(gateways, upstream, http, adapter, route, where):
    stream, behavior = where
    gw = gateways(adapter, alone=True)
    upstream.set_behavior(adapter.first, behavior)
    rid = new_id()
    answer = ask(http, gw, route, stream, rid, headers=DEADLINE.headers)
    assert answer.elapsed_s < float(DEADLINE_S) + 0.5
    assert_error_shape(answer, rid, adapter, DEADLINE)
    assert (upstream.calls[adapter.first], upstream.calls[adapter.second]) == (1, 0)
    assert attempts_of(logged(gw, upstream, http, rid)) == [(1, adapter.first_id, False, "timeout", None)]


@pytest.mark.parametrize("adapter, route, where", each(ADAPTER_TABLE, ROUTE_TABLE, DEADLINES))
def test_a_hung_first_provider_leaves_the_second_time_before_the_deadline(gateways, upstream, http, adapter, route,
                                                                        where):
    """The first attempt may use half the time left (docs/reliability.md, 'Timeouts fall back first')."""
    stream, behavior = where
    gw = gateways(adapter, alone=False)
    upstream.set_behavior(adapter.first, behavior)
    rid = new_id()
    answer = ask(http, gw, route, stream, rid, headers={"x-modelbroker-timeout": "0.45"})
    assert answer.elapsed_s < 0.45 + 0.5
    assert_complete(answer, route, stream, adapter.second_id, adapter.second, attempts=2)
    assert (upstream.calls[adapter.first], upstream.calls[adapter.second]) == (1, 1)
    assert attempts_of(logged(gw, upstream, http, rid)) == [
        (1, adapter.first_id, False, "timeout", None), (2, adapter.second_id, True, None, None)]


# --- 3. a stream fails after content: the content, then an error event, no [DONE] ---------------------


@pytest.mark.parametrize("adapter, route, behavior, alone", each(ADAPTER_TABLE, ROUTE_TABLE,
                                                                  list(AFTER_CONTENT.items()), TOPOLOGY_TABLE))
def test_failure_after_content_ends_the_stream_with_an_error_event(gateways, upstream, http, adapter, route,
                                                                   behavior, alone):
    gw = gateways(adapter, alone=alone)
    upstream.set_behavior(adapter.first, {**behavior, "chunks": CHUNKS, "cut_after": CUT_AFTER})
    rid = new_id()
    answer = ask(http, gw, route, True, rid)
    assert answer.elapsed_s < MAX_CASE_S
    assert answer.status == 200
    assert answer.headers["x-modelbroker-provider"] == adapter.first_id
    sent = "".join(split(reply(adapter.first), CHUNKS)[:CUT_AFTER])
    assert answer.text == sent
    *relayed, last = answer.events
    assert "[DONE]" not in answer.events
    assert not any(isinstance(e, dict) and ("error" in e or e.get("done")) for e in relayed)
    assert set(last) == {"error"}
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert (last["error"]["type"], last["error"]["code"]) == ("upstream_error", "stream_interrupted")
    assert upstream.calls[adapter.first] == 1
    assert upstream.calls[adapter.second] == 0  # no fallback once content was sent
    [line] = logged(gw, upstream, http, rid)
    assert attempts_of([line]) == [(1, adapter.first_id, False, "partial", None)]
    assert tokens_of(line) == (count_tokens(PROMPT), count_tokens(sent), count_tokens(PROMPT) + count_tokens(sent),
                               True)  # the upstream's usage never came: counted from what was sent


# --- Anthropic's empty message --------------------------------------------------------------------------


ANTHROPIC = ADAPTERS[1]


@pytest.mark.parametrize("route, stream", each(ROUTE_TABLE, STREAM_TABLE))
def test_an_empty_anthropic_message_is_an_empty_answer(gateways, upstream, http, route, stream):
    """``content: []`` is a message Anthropic may send (nothing to add, say): answered, not failed over."""
    gw = gateways(ANTHROPIC, alone=False)
    upstream.set_behavior(ANTHROPIC.first, "empty_choices")
    rid = new_id()
    answer = ask(http, gw, route, stream, rid)
    assert answer.status == 200
    assert answer.headers["x-modelbroker-provider"] == ANTHROPIC.first_id
    assert answer.text == ""
    assert upstream.calls[ANTHROPIC.second] == 0
    assert attempts_of(logged(gw, upstream, http, rid)) == [(1, ANTHROPIC.first_id, True, None, None)]
