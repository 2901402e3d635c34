"""The failure matrix (test_failure_matrix.py) through the other transport: every failure before
content, and every failure after it, of an OpenAI-compatible upstream, with
``MODELBROKER_UPSTREAM_TRANSPORT=aiohttp``. Both transports keep the same promises."""

from __future__ import annotations

import pytest

from modelbroker.plugins import file_log

from ._support import config
from .test_failure_matrix import (
    ADAPTERS,
    AFTER_CONTENT,
    CHUNKS,
    CUT_AFTER,
    MAX_CASE_S,
    RELIABILITY,
    ROUTE_TABLE,
    TIMEOUT_S,
    TOPOLOGY_TABLE,
    ask,
    assert_complete,
    assert_error_shape,
    attempts_of,
    before_content_cases,
    each,
    logged,
    new_id,
    reply,
    split,
)

OPENAI = ADAPTERS[0]
CASES = [case for case in before_content_cases() if case.values[0] is OPENAI]


@pytest.fixture(scope="module")
def gateways(module_gateway, fake_upstream_server):
    """As test_failure_matrix.py's, the gateways' upstream calls going through aiohttp."""
    started = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(file_log, "FLUSH_INTERVAL_S", 0.02)

        def get(alone: bool):
            if alone not in started:
                up = fake_upstream_server
                providers = [OPENAI.entry(up, "first", OPENAI.first, priority=1, timeout_s=TIMEOUT_S)]
                if not alone:
                    providers.append(OPENAI.entry(up, "second", OPENAI.second, priority=2, timeout_s=5))
                started[alone] = module_gateway(config(*providers, **RELIABILITY), upstream_transport="aiohttp")
            return started[alone]

        yield get


@pytest.fixture(scope="module")
def http():
    import httpx

    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.mark.parametrize("adapter, route, stream, failure", CASES)
def test_failure_before_content_falls_back_to_the_second(gateways, upstream, http, adapter, route, stream, failure):
    gw = gateways(alone=False)
    assert gw.gateway.http.transport == "aiohttp"
    upstream.set_behavior(adapter.first, failure.behavior)
    rid = new_id()
    answer = ask(http, gw, route, stream, rid)
    assert answer.elapsed_s < MAX_CASE_S
    assert_complete(answer, route, stream, adapter.second_id, adapter.second, attempts=2)
    assert upstream.calls[adapter.first] in failure.upstream_calls
    assert attempts_of(logged(gw, upstream, http, rid)) == [
        (1, adapter.first_id, False, failure.kind, failure.status),
        (2, adapter.second_id, True, None, None),
    ]


@pytest.mark.parametrize("adapter, route, stream, failure", CASES)
def test_failure_before_content_alone_is_an_error_with_the_attempt(gateways, upstream, http, adapter, route, stream,
                                                                   failure):
    gw = gateways(alone=True)
    upstream.set_behavior(adapter.first, failure.behavior)
    rid = new_id()
    answer = ask(http, gw, route, stream, rid)
    assert_error_shape(answer, rid, adapter, failure)
    assert attempts_of(logged(gw, upstream, http, rid)) == [(1, adapter.first_id, False, failure.kind, failure.status)]


@pytest.mark.parametrize("route, behavior, alone", each(ROUTE_TABLE, list(AFTER_CONTENT.items()), TOPOLOGY_TABLE))
def test_failure_after_content_ends_the_stream_with_an_error_event(gateways, upstream, http, route, behavior, alone):
    gw = gateways(alone=alone)
    upstream.set_behavior(OPENAI.first, {**behavior, "chunks": CHUNKS, "cut_after": CUT_AFTER})
    rid = new_id()
    answer = ask(http, gw, route, True, rid)
    assert answer.status == 200
    assert answer.text == "".join(split(reply(OPENAI.first), CHUNKS)[:CUT_AFTER])
    assert "[DONE]" not in answer.events
    assert answer.events[-1]["error"]["code"] == "stream_interrupted"
    assert attempts_of(logged(gw, upstream, http, rid)) == [(1, OPENAI.first_id, False, "partial", None)]
