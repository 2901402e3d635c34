"""plugins/file_log.py: one JSON line per attempt in app.log."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import orjson
import pytest

from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.records import failure_record, result_record
from modelbroker._routing.types import ChatRequest, Completion, ErrorKind, ProviderError, Usage
from modelbroker.plugins.file_log import FLUSH_INTERVAL_S, FileLogWriter

PROMPT = "tell me about the 1000 islands"
NO_RETRY = {"retries": 0}  # one failed attempt, one line
COMMON_FIELDS = {"time", "request_id", "attempt", "provider", "provider_id", "model", "latency_ms", "success",
                 "prompt_tokens", "completion_tokens", "total_tokens", "cost"}


def test_one_line_per_attempt_with_every_field(gateway, provider, upstream):
    gw = gateway({"reliability": NO_RETRY, "providers": [
        provider("flaky", model="fail-500", priority=1, cost_per_1k_tokens=0.5),
        provider("steady", model="steady-model", priority=2, cost_per_1k_tokens=0.25),
    ]})
    answer = gw.generate({"prompt": PROMPT}, headers={"x-request-id": "req-file-log-1"})
    assert answer.status_code == 200
    failed, ok = gw.log_lines()

    assert COMMON_FIELDS <= set(failed) and COMMON_FIELDS <= set(ok)
    for line, number in ((failed, 1), (ok, 2)):
        assert line["request_id"] == "req-file-log-1"
        assert line["attempt"] == number
        assert isinstance(line["latency_ms"], (int, float)) and line["latency_ms"] >= 0
        assert datetime.fromisoformat(line["time"]).tzinfo is not None

    assert (failed["provider"], failed["provider_id"], failed["model"]) == ("flaky", "flaky/fail-500", "fail-500")
    assert failed["success"] is False
    assert (failed["error_kind"], failed["status"]) == ("status", 500)
    assert "500" in failed["error"]
    assert (failed["prompt_tokens"], failed["completion_tokens"], failed["total_tokens"], failed["cost"]) == (0, 0, 0, 0)
    assert "model_used" not in failed

    assert (ok["provider"], ok["provider_id"], ok["model"]) == ("steady", "steady/steady-model", "steady-model")
    assert ok["success"] is True
    assert ok["model_used"] == "steady-model"
    assert "error_kind" not in ok
    # the fake upstream counts words: 6 in the prompt, "Fake reply from steady-model: <prompt>" in the reply
    assert ok["prompt_tokens"] == 6
    assert ok["completion_tokens"] == 4 + 6
    assert ok["total_tokens"] == ok["prompt_tokens"] + ok["completion_tokens"]
    assert ok["cost"] == pytest.approx(ok["total_tokens"] * 0.25 / 1000)

    body = answer.json()
    assert body["tokens"] == ok["total_tokens"]
    assert body["cost"] == pytest.approx(ok["cost"])
    assert float(answer.headers["x-modelbroker-cost"]) == pytest.approx(ok["cost"], abs=1e-8)


def test_cost_with_split_prices_is_tokens_times_each_price(gateway, provider, upstream):
    gw = gateway({"providers": [provider("split", cost_per_1k_input_tokens=2.0, cost_per_1k_output_tokens=8.0)]})
    answer = gw.generate({"prompt": "one two three"})
    (line,) = gw.log_lines()
    expected = (line["prompt_tokens"] * 2.0 + line["completion_tokens"] * 8.0) / 1000
    assert (line["prompt_tokens"], line["completion_tokens"]) == (3, 4 + 3)
    assert line["cost"] == pytest.approx(expected)
    assert answer.json()["cost"] == pytest.approx(expected)


def test_every_request_is_logged_in_order(gateway, provider, upstream):
    gw = gateway({"providers": [provider("a")]})
    ids = [f"req-{i}" for i in range(5)]
    for request_id in ids:
        assert gw.generate({"prompt": "hi"}, headers={"x-request-id": request_id}).status_code == 200
    assert [line["request_id"] for line in gw.log_lines()] == ids


def test_lines_are_flushed_while_the_gateway_runs(gateway, provider, upstream, read_log):
    gw = gateway({"providers": [provider("a")]})
    gw.generate({"prompt": "hi"})
    deadline = FLUSH_INTERVAL_S * 10
    waited = 0.0
    while not (gw.log_file.exists() and read_log(gw.log_file)) and waited < deadline:
        time.sleep(0.05)
        waited += 0.05
    assert len(read_log(gw.log_file)) == 1


def test_prompts_and_responses_are_absent_by_default(gateway, provider, upstream):
    gw = gateway({"reliability": NO_RETRY,
                  "providers": [provider("fails", model="fail-500", priority=1), provider("a", priority=2)]})
    answer = gw.generate({"prompt": PROMPT})
    reply = answer.json()["response"]
    assert PROMPT in reply  # the fake upstream echoes the prompt: it must not reach the log either
    lines = gw.log_lines()
    assert len(lines) == 2
    assert all("prompt" not in line and "response" not in line for line in lines)
    assert PROMPT not in gw.log_file.read_text()


def test_prompts_and_responses_when_enabled(gateway, provider, upstream):
    gw = gateway({
        "plugins": {"file_log": {"include_prompts": True, "include_responses": True}},
        "reliability": NO_RETRY,
        "providers": [provider("fails", model="fail-500", priority=1), provider("a", priority=2)],
    })
    reply = gw.generate({"prompt": PROMPT}).json()["response"]
    failed, ok = gw.log_lines()
    assert failed["prompt"] == PROMPT and "response" not in failed
    assert ok["prompt"] == PROMPT
    assert ok["response"] == reply


def test_prompts_only(gateway, provider, upstream):
    gw = gateway({"plugins": {"file_log": {"include_prompts": True}}, "providers": [provider("a")]})
    gw.generate({"prompt": PROMPT})
    (line,) = gw.log_lines()
    assert line["prompt"] == PROMPT and "response" not in line


@pytest.mark.parametrize(("value", "logged"), [("false", False), ("true", True), ("no", False), ("", False)])
def test_flags_from_environment_variables_are_read_as_booleans(gateway, provider, upstream, monkeypatch, value, logged):
    # ${VAR} interpolation gives strings: "false" must not switch the prompt log on
    monkeypatch.setenv("MB_LOG_PROMPTS", value)
    gw = gateway({"plugins": {"file_log": {"include_prompts": "${MB_LOG_PROMPTS}",
                                           "include_responses": "${MB_LOG_PROMPTS}"}},
                  "providers": [provider("a")]})
    gw.generate({"prompt": PROMPT})
    (line,) = gw.log_lines()
    assert ("prompt" in line, "response" in line) == (logged, logged)


def test_disabling_file_log_leaves_no_app_log(gateway, provider, upstream):
    gw = gateway({"plugins": {"disabled": ["file_log"]}, "providers": [provider("a")]})
    assert gw.generate({"prompt": "hi"}).status_code == 200
    gw.stop()
    assert not gw.log_file.exists()
    assert gw.gateway.pm.get_plugin("file_log") is None


def test_no_log_file_setting_means_no_log(gateway, provider, upstream, tmp_path):
    gw = gateway({"providers": [provider("a")]}, log=False)
    assert gw.generate({"prompt": "hi"}).status_code == 200
    gw.stop()
    assert list(tmp_path.glob("*.log")) == []


def test_log_appends_across_restarts(gateway, provider, upstream, read_log):
    config = {"providers": [provider("a")]}
    first = gateway(config)
    first.generate({"prompt": "hi"}, headers={"x-request-id": "first-run"})
    first.stop()
    second = gateway(config, log=first.log_file)
    second.generate({"prompt": "hi"}, headers={"x-request-id": "second-run"})
    second.stop()
    assert [line["request_id"] for line in read_log(first.log_file)] == ["first-run", "second-run"]


# --- the writer on its own -----------------------------------------------------------------


def failure() -> ProviderError:
    return ProviderError(ErrorKind.STATUS, "upstream answered 500", status=500)


PROVIDER = ProviderConfig(name="p", endpoint="http://127.0.0.1:9/v1", model="m", cost_per_1k_tokens=1)


async def test_shutdown_during_a_flush_loses_no_line(tmp_path):
    """Stopping while the flusher's write waits for a worker thread must still write that batch."""
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(executor)
    path = tmp_path / "app.log"
    writer = FileLogWriter(path, include_prompts=False, include_responses=False)
    await writer.start()
    release = threading.Event()
    busy = loop.run_in_executor(None, release.wait, 5)  # the only worker thread is busy
    try:
        request = ChatRequest(messages=[], request_id="r1")
        writer.on_failure(request, failure_record(PROVIDER, request, failure(), 1.0, 1))
        await asyncio.sleep(FLUSH_INTERVAL_S * 1.5)  # the flusher has taken the line; its write is queued
        shutdown = asyncio.create_task(writer.on_shutdown())
        await asyncio.sleep(0.05)
    finally:
        release.set()
    await asyncio.wait_for(busy, 5)
    await asyncio.wait_for(shutdown, 5)
    assert path.read_bytes().count(b"\n") == 1


async def test_shutdown_flushes_what_is_buffered(tmp_path):
    path = tmp_path / "app.log"
    writer = FileLogWriter(path, include_prompts=False, include_responses=False)
    await writer.start()
    request = ChatRequest(messages=[], request_id="r")
    for attempt in (1, 2, 3):
        writer.on_failure(request, failure_record(PROVIDER, request, failure(), 1.0, attempt))
    await writer.on_shutdown()
    assert path.read_bytes().count(b"\n") == 3


def test_line_times_are_what_isoformat_gives_to_the_millisecond(tmp_path):
    """The time text is cached per second; it must match datetime's own rounding at every edge."""
    import random
    from datetime import datetime, timezone

    from modelbroker.plugins.file_log import FileLogWriter

    writer = FileLogWriter(tmp_path / "app.log", include_prompts=False, include_responses=False)
    rng = random.Random(4)
    moments = [1778557027.9909995, 1702814366.4779994, 1767225599.9999996, 1767225600.0, 0.0005]
    moments += [rng.uniform(1.6e9, 2.2e9) for _ in range(5000)]
    moments += [1767225599.9990 + i * 0.0001 for i in range(20)]  # across a second, in order
    for moment in moments:
        assert writer._time_text(moment) == datetime.fromtimestamp(moment, timezone.utc).isoformat(
            timespec="milliseconds"), moment


@pytest.mark.parametrize("usage", [
    Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12),
    Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12, cached_tokens=3),
    Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12, reasoning_tokens=2),
    Usage(prompt_tokens=5, completion_tokens=7, total_tokens=12, estimated=True),
    None,
])
def test_a_success_line_is_the_same_built_either_way(tmp_path, monkeypatch, usage):
    """on_result writes most lines from one dict literal; the line, key order included, must be the one
    built in steps (the way taken with prompts or responses on, or unusual usage)."""
    monkeypatch.setattr(time, "time", lambda: 1767225600.25)  # the record's time
    result = Completion(text="hi", model="m-used", usage=usage, cost=0.012, overhead_ms=0.2345)
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], request_id="r1")
    fast = FileLogWriter(tmp_path / "a.log", include_prompts=False, include_responses=False)
    stepwise = FileLogWriter(tmp_path / "b.log", include_prompts=False, include_responses=False)
    stepwise.plain = False  # forces the step-by-step build
    record = result_record(PROVIDER, request, result, 12.3456, 2)
    fast.on_result(request, result, record)
    stepwise.on_result(request, result, record)
    assert fast._buffer == stepwise._buffer
    assert list(orjson.loads(fast._buffer[0])) == list(orjson.loads(stepwise._buffer[0]))


async def test_a_log_file_that_cannot_be_opened_says_which_setting_to_change(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    writer = FileLogWriter(tmp_path / "a-file" / "app.log", include_prompts=False, include_responses=False)
    with pytest.raises(OSError) as refused:
        await writer.start()
    assert str(refused.value).startswith(f"cannot open the call log {tmp_path / 'a-file' / 'app.log'} for appending")
    assert str(refused.value).endswith("set MODELBROKER_LOG_FILE to a file you can write, or to nothing to turn it off")
