"""Rate-limit pacing (x-ratelimit-* headers) and each provider's own max_concurrency, rpm
and tpm: a provider at its limit is passed over; 429 ``providers_busy`` when all are."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from modelbroker._upstream.errors import duration_seconds

from ._support import blast, config, health_row, wait_until

SLOW_OK = {"kind": "ok", "delay_s": 1.0}


def spent(which: str, reset: str) -> dict:
    """An OK answer that says the provider's request or token quota is spent until ``reset``."""
    return {"kind": "ok", "times": 1, "headers": {
        f"x-ratelimit-remaining-{which}": "0", f"x-ratelimit-reset-{which}": reset}}


# --- pacing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("6ms", 0.006), ("0s", 0.0), ("1s", 1.0), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("20ms", 0.02),
    ("2", 2.0), ("1.5", 1.5), (" 3 ", 3.0), ("-4", 0.0), ("6ms ", 0.006), ("soon", None), ("", None), (None, None),
])
def test_reset_durations(text, seconds):
    """The forms of ``x-ratelimit-reset-*``: Go durations (OpenAI, Groq) and plain seconds."""
    found = duration_seconds(text)
    assert found is None if seconds is None else found == pytest.approx(seconds)


def test_a_spent_request_quota_passes_the_provider_over_until_reset(gateway, provider, upstream):
    upstream.set_behavior("a", spent("requests", "1s"))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2)))
    assert gw.generate({"prompt": "one"}).json()["provider"] == "a/a"
    row = health_row(gw, "a/a")
    assert row["state"] == "healthy"
    assert 0 < row["paced_for_s"] <= 1.0
    assert gw.generate({"prompt": "two"}).json()["provider"] == "b/b"
    assert wait_until(lambda: "paced_for_s" not in health_row(gw, "a/a"), timeout=3)
    assert gw.generate({"prompt": "three"}).json()["provider"] == "a/a"


def test_a_spent_token_quota_passes_the_provider_over(gateway, provider, upstream):
    upstream.set_behavior("a", spent("tokens", "6m0s"))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), max_cooldown_s=300))
    gw.generate({"prompt": "one"})
    assert 359 - 60 < health_row(gw, "a/a")["paced_for_s"] <= 300  # capped at max_cooldown_s
    assert gw.generate({"prompt": "two"}).json()["provider"] == "b/b"


def test_pacing_from_a_failed_answer(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "status", "status": 503, "times": 1, "headers": {
        "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "5s"}})
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), retries=3))
    assert gw.generate({"prompt": "one"}).json()["provider"] == "b/b"
    assert upstream.calls["a"] == 1, "a paced provider was retried"
    assert gw.generate({"prompt": "two"}).json()["provider"] == "b/b"


def test_quota_left_changes_nothing(gateway, provider, upstream):
    upstream.set_behavior("a", {"kind": "ok", "headers": {
        "x-ratelimit-remaining-requests": "10", "x-ratelimit-remaining-tokens": "5000",
        "x-ratelimit-reset-requests": "1m"}})
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2)))
    for _ in range(3):
        assert gw.generate({"prompt": "hi"}).json()["provider"] == "a/a"


def test_when_every_provider_is_paced_the_soonest_is_tried(gateway, provider, upstream):
    upstream.set_behavior("a", spent("requests", "30s"))
    upstream.set_behavior("b", spent("requests", "10s"))
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2), max_cooldown_s=300))
    assert gw.generate({"prompt": "one"}).json()["provider"] == "a/a"
    assert gw.generate({"prompt": "two"}).json()["provider"] == "b/b"
    answer = gw.generate({"prompt": "three"})
    assert answer.status_code == 200 and answer.json()["provider"] == "b/b"


# --- max_concurrency --------------------------------------------------------------------------


def test_max_concurrency_passes_the_provider_over(gateway, provider, upstream):
    upstream.set_behavior("a", SLOW_OK)
    gw = gateway(config(provider("a", priority=1, max_concurrency=2), provider("b", priority=2)))
    answers = blast(gw.url, "/generate", [{"prompt": f"n{i}"} for i in range(6)], concurrency=6)
    assert [a.status_code for a in answers] == [200] * 6
    assert sorted(a.json()["provider"] for a in answers) == ["a/a"] * 2 + ["b/b"] * 4
    assert health_row(gw, "a/a")["in_flight"] == 0


def test_429_providers_busy_when_every_provider_is_at_its_limit(gateway, provider, upstream):
    upstream.set_behavior("*", SLOW_OK)
    gw = gateway(config(provider("a", max_concurrency=1), provider("b", max_concurrency=1)))
    answers = blast(gw.url, "/generate", [{"prompt": f"n{i}"} for i in range(5)], concurrency=5)
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 429, 429, 429], [a.text for a in answers]
    busy = next(a for a in answers if a.status_code == 429)
    assert busy.headers["retry-after"] == "1"
    error = busy.json()["error"]
    assert error["code"] == "providers_busy" and error["type"] == "rate_limit_error"
    assert "max_concurrency" in error["message"]
    assert sum(upstream.calls.values()) == 2


def test_a_fallback_respects_max_concurrency(gateway, provider, upstream):
    """Requests that chose their providers while b had room must not all fall back to b
    once it is full: a provider at its limit is passed over when its turn comes."""
    upstream.set_behavior("a", {"kind": "status", "status": 500, "delay_s": 0.4})
    upstream.set_behavior("b", SLOW_OK)
    gw = gateway(config(provider("a", priority=1), provider("b", priority=2, max_concurrency=1),
                        retries=0, failure_threshold=100))
    answers = blast(gw.url, "/generate", [{"prompt": f"n{i}"} for i in range(4)], concurrency=4)
    assert upstream.calls["b"] == 1, [a.text for a in answers]
    assert sorted(a.status_code for a in answers) == [200, 502, 502, 502]


def test_a_retry_after_its_backoff_respects_max_concurrency(gateway, provider, upstream):
    """A request waiting out a backoff holds no place at its provider; if the provider has filled
    up meanwhile, the retry goes to the next provider instead of exceeding max_concurrency."""
    upstream.set_behavior("*", SLOW_OK)
    upstream.set_behavior("a", {"kind": "status", "status": 503, "times": 1})
    gw = gateway(config(provider("a", priority=1, max_concurrency=1, retries=1), provider("b", priority=2),
                        backoff_initial_s=0.5, backoff_max_s=0.5, failure_threshold=100))

    async def first_then_second() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
            first = asyncio.ensure_future(client.post("/generate", json={"prompt": "first"}))
            await asyncio.sleep(0.1)  # the first has had its 503 and waits 0.25-0.5 s to retry
            second = await client.post("/generate", json={"prompt": "second"})
            return [await first, second]

    first, second = asyncio.run(first_then_second())
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    assert (first.json()["provider"], second.json()["provider"]) == ("b/b", "a/a")
    assert upstream.calls["a"] == 2  # the 503, then the second request; never two at once


# --- rpm and tpm ----------------------------------------------------------------------------------


def test_rpm_passes_the_provider_over(gateway, provider, upstream):
    gw = gateway(config(provider("a", priority=1, rpm=3), provider("b", priority=2)))
    used = [gw.generate({"prompt": "hi"}).json()["provider"] for _ in range(5)]
    assert used == ["a/a"] * 3 + ["b/b"] * 2


def test_rpm_alone_gives_429_providers_busy(gateway, provider, upstream):
    gw = gateway(config(provider("a", rpm=2)))
    codes = [gw.generate({"prompt": "hi"}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert upstream.calls["a"] == 2


def test_tpm_passes_the_provider_over(gateway, provider, upstream):
    gw = gateway(config(provider("a", priority=1, tpm=60), provider("b", priority=2)))
    prompt = {"prompt": " ".join(["word"] * 40)}  # the fake reports about 85 tokens for it
    assert gw.generate(prompt).json()["provider"] == "a/a"
    assert gw.generate(prompt).json()["provider"] == "b/b"


def test_limits_are_per_provider_not_per_gateway(gateway, provider, upstream):
    upstream.set_behavior("*", SLOW_OK)
    gw = gateway(config(provider("a", max_concurrency=1), provider("b")))
    answers = blast(gw.url, "/generate", [{"prompt": f"n{i}"} for i in range(4)], concurrency=4)
    assert all(a.status_code == 200 for a in answers)
    assert upstream.calls["a"] == 1 and upstream.calls["b"] == 3


def test_in_flight_is_released_by_a_stream(gateway, provider, upstream):
    gw = gateway(config(provider("a", max_concurrency=1)))
    with gw.client.stream("POST", "/generate", json={"prompt": "hi", "stream": True}) as answer:
        assert answer.status_code == 200
        assert b"done" in answer.read()
    assert wait_until(lambda: health_row(gw, "a/a")["in_flight"] == 0, timeout=2)
    assert gw.generate({"prompt": "again"}).status_code == 200


def test_concurrent_limit_under_threads(gateway, provider, upstream):
    """max_concurrency holds under load: the upstream never sees more than the limit at once."""
    upstream.set_behavior("a", {"kind": "ok", "delay_s": 0.1})
    gw = gateway(config(provider("a", priority=1, max_concurrency=3), provider("b", priority=2)))
    peak, lock = [0], threading.Lock()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with lock:
                peak[0] = max(peak[0], gw.gateway.health.of(gw.gateway.config.providers[0]).in_flight)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answers = blast(gw.url, "/generate", [{"prompt": f"n{i}"} for i in range(40)], concurrency=10)
    finally:
        stop.set()
        watcher.join()
    assert all(a.status_code == 200 for a in answers)
    assert 1 <= peak[0] <= 3
