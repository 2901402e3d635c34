"""Request bodies: the limit admits an image sent inline (MODELBROKER_MAX_BODY_BYTES, 20 MiB),
and the memory bodies in flight take together is bounded (MODELBROKER_MAX_BODIES_IN_FLIGHT_BYTES):
past it a request gets 503 with Retry-After, and the gateway keeps serving small requests.

The burst test runs ``modelbroker serve`` in a process of its own and reads its peak memory
from /proc; every client and wait in it is bounded by TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from modelbroker._config.messages import ConfigError
from modelbroker._config.settings import BODY_COPIES, Settings, load_settings

from ._support import config, wait_until

MIB = 1024 * 1024
CHAT = "/v1/chat/completions"
LIMIT = Settings.model_fields["max_body_bytes"].default
BUDGET = Settings.model_fields["max_bodies_in_flight_bytes"].default
TIMEOUT = 20.0
SMALL = {"model": "vision", "messages": [{"role": "user", "content": "hi"}]}


def image_request(size: int) -> bytes:
    """A chat request of exactly ``size`` bytes: a question and a PNG inline (base64 text)."""
    data = {"model": "vision", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}]}]}
    pad = size - len(json.dumps(data).encode())
    data["messages"][0]["content"][1]["image_url"]["url"] += "iVBORw0K" * (pad // 8) + "A" * (pad % 8)
    body = json.dumps(data).encode()
    assert len(body) == size
    return body


def post(gw, content: bytes, path: str = CHAT, **kwargs) -> httpx.Response:
    return gw.client.post(path, content=content, headers={"content-type": "application/json"}, **kwargs)


# --- the limit -----------------------------------------------------------------------------------


def test_a_15_mib_image_inline_passes_the_default_limit(gateway, provider, upstream):
    gw = gateway(config(provider("vision")), log=False)
    body = image_request(15 * MIB)
    answer = post(gw, body)
    assert answer.status_code == 200, answer.text
    forwarded = upstream.requests[-1]["json"]["messages"][0]["content"][1]["image_url"]["url"]
    assert forwarded == json.loads(body)["messages"][0]["content"][1]["image_url"]["url"]


def test_20_mib_passes_one_byte_more_is_413_saying_what_to_do(gateway, provider, upstream):
    gw = gateway(config(provider("vision")), log=False)
    assert post(gw, image_request(LIMIT)).status_code == 200
    answer = post(gw, image_request(LIMIT + 1))
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error["code"] == "body_too_large" and error["type"] == "invalid_request_error"
    assert error["message"].startswith("the body is larger than 20971520 bytes (20 MiB), the gateway's limit "
                                       "(MODELBROKER_MAX_BODY_BYTES): send a smaller one"), error["message"]
    assert "image by URL" in error["message"]
    assert upstream.calls["vision"] == 1


def test_a_budget_too_small_for_the_largest_body_stops_startup():
    with pytest.raises(ConfigError) as refused:
        load_settings(max_body_bytes=10 * MIB, max_bodies_in_flight_bytes=20 * MIB)
    assert str(refused.value).startswith(
        f"MODELBROKER_MAX_BODIES_IN_FLIGHT_BYTES: must be at least {BODY_COPIES} x MODELBROKER_MAX_BODY_BYTES "
        f"({BODY_COPIES * 10 * MIB})")
    assert load_settings(max_body_bytes=10 * MIB, max_bodies_in_flight_bytes=BODY_COPIES * 10 * MIB)


# --- the budget, in a gateway of the test process --------------------------------------------------


def assert_budget_refusal(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("service_unavailable", "bodies_in_flight_full")
    assert "MODELBROKER_MAX_BODIES_IN_FLIGHT_BYTES" in error["message"] and "retry in 1 s" in error["message"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_past_the_budget_waits_for_the_one_in_flight(gateway, provider, upstream, chunked):
    """One body holds most of a small budget while its upstream answers slowly; a second is
    refused (by its length, or once its chunks pass the budget) and goes through afterwards."""
    upstream.set_behavior("vision", {"delay_s": 1.0, "times": 1})
    gw = gateway(config(provider("vision")), log=False, max_body_bytes=MIB, max_bodies_in_flight_bytes=3 * MIB)
    big = image_request(MIB - 1000)
    second = image_request(300_000)

    def send_second() -> httpx.Response:
        if not chunked:
            return post(gw, second)
        pieces = (second[start:start + 64 * 1024] for start in range(0, len(second), 64 * 1024))
        return gw.client.post(CHAT, content=pieces, headers={"content-type": "application/json"})

    with httpx.Client(base_url=gw.url, timeout=TIMEOUT) as other:
        with _in_thread(lambda: other.post(CHAT, content=big, headers={"content-type": "application/json"})) as first:
            assert wait_until(lambda: upstream.requests, 5), "the first body never reached the upstream"
            assert_budget_refusal(send_second())
        assert first.result(TIMEOUT).status_code == 200
    assert send_second().status_code == 200  # the first body's charge was given back
    assert post(gw, json.dumps(SMALL).encode()).status_code == 200


# --- 40 bodies of 20 MiB at once, against a gateway process ---------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the gateway's memory from /proc")
async def test_forty_20_mib_bodies_at_once_stay_in_the_budget(tmp_path, upstream, provider, gateway_process,
                                                              subprocess_env):
    """(a) the gateway's peak RSS stays under its RSS before plus the budget and half again (memory
    freed but not yet given back to the system, a body being joined); (b) some bodies get 503
    with Retry-After, the rest 200; (c) small requests are answered during the burst and after,
    and a 20 MiB body again afterwards (every charge was given back)."""
    upstream.set_behavior("vision", {"delay_s": 0.3})  # the admitted bodies stay in flight together
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump(config(provider("vision"))), encoding="utf-8")
    process = gateway_process(path, subprocess_env(MODELBROKER_LOG_FILE=""))
    pid = process.proc.pid
    body = image_request(LIMIT)
    async with httpx.AsyncClient(base_url=process.url, timeout=TIMEOUT) as client:
        assert (await client.post(CHAT, json=SMALL)).status_code == 200
        before = _memory_mib(pid, "VmRSS")
        bound = before + 1.5 * BUDGET / MIB

        burst = asyncio.gather(*(_post_raw(process.port, CHAT, body) for _ in range(40)))
        small = await asyncio.wait_for(_small_requests_while(client, burst), TIMEOUT)
        answers = await asyncio.wait_for(burst, TIMEOUT)
        after_small = await client.post(CHAT, json=SMALL)
        after_large = await client.post(CHAT, content=body, headers={"content-type": "application/json"})
    peak = _memory_mib(pid, "VmHWM")

    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503}, statuses
    refused = [(headers, content) for status, headers, content in answers if status == 503]
    assert refused and statuses.count(200) >= 1, statuses
    for headers, content in refused:
        assert headers["retry-after"] == "1"
        assert json.loads(content)["error"]["code"] == "bodies_in_flight_full"
    assert small and all(status == 200 for status in small), small
    assert (after_small.status_code, after_large.status_code) == (200, 200)
    assert peak <= bound, f"peak RSS {peak} MiB over {bound:.0f} MiB ({before} MiB before the burst)"


async def _small_requests_while(client: httpx.AsyncClient, burst: asyncio.Future) -> list[int]:
    """Statuses of small requests sent one after another until ``burst`` is done."""
    statuses: list[int] = []
    while not burst.done():
        statuses.append((await client.post(CHAT, json=SMALL)).status_code)
        await asyncio.sleep(0.05)
    return statuses


async def _post_raw(port: int, path: str, body: bytes, piece: int = MIB) -> tuple[int, dict[str, str], bytes]:
    """POST ``body`` over a connection of its own; stop sending once the gateway has answered
    (a refusal comes before the body is read). Returns the status, headers and body.

    The connection is kept alive: the gateway then reads what is still sent and drops it,
    where after ``connection: close`` it would close with bytes unread, and the reset
    that follows could take its answer away before this side reads it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(body)}\r\n\r\n".encode("latin-1"))
        answer = asyncio.ensure_future(_read_response(reader))
        view = memoryview(body)
        with contextlib.suppress(ConnectionError):
            for start in range(0, len(body), piece):
                if answer.done():
                    break
                writer.write(view[start:start + piece])
                await writer.drain()
        return await answer
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:] if line)}
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


def _memory_mib(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the peak) of process ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@contextlib.contextmanager
def _in_thread(call):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(call)
