"""plugins/metrics: GET /metrics from a real gateway on a fake upstream, in one process and in two workers."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from modelbroker._config.messages import ConfigError
from modelbroker._config.providers import GatewayConfig
from modelbroker._plugins.manager import make_plugin_manager
from modelbroker._routing.records import failure_record, result_record
from modelbroker._routing.types import ChatRequest, Completion, ErrorKind, ProviderError
from modelbroker.plugins import chat_completions, generate, metrics, openai_http, priority
from modelbroker.plugins.metrics.outcomes import RequestOutcomes
from modelbroker.plugins.metrics.recorder import MetricsRecorder
from modelbroker.testing import free_port

NO_RETRY = {"retries": 0, "failure_threshold": 1000}
BAD_JSON = b"{not json"


def make_pm():
    pm = make_plugin_manager(load_entrypoints=False)
    for name, plugin in {"chat": chat_completions, "generate": generate, "priority": priority, "openai": openai_http,
                         "metrics": metrics}.items():
        pm.register(plugin, name=name)
    return pm


def parse(text: str) -> list:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def total(samples: list, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def scrape(gw) -> list:
    answer = gw.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return parse(answer.text)


def wait_for(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


# --- one process ---------------------------------------------------------------------------


def test_requests_attempts_latency_tokens_and_cost_are_counted(gateway, provider, upstream):
    config = {"providers": [provider("a", model="fail-500", priority=1), provider("b", priority=2)],
              "reliability": NO_RETRY}
    gw = gateway(config, pm=make_pm())
    answers = [gw.generate({"prompt": f"hello number {n}"}) for n in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert gw.generate(content=BAD_JSON).status_code == 400

    samples = scrape(gw)
    a, b = {"provider": "a", "model": "fail-500"}, {"provider": "b", "model": "b"}
    assert total(samples, "modelbroker_requests_total") == 3  # each request once, at the attempt that ended it
    assert total(samples, "modelbroker_requests_total", **b, outcome="ok") == 3
    assert total(samples, "modelbroker_attempts_total", **a, outcome="failed") == 3
    assert total(samples, "modelbroker_attempts_total", **b, outcome="ok") == 3
    assert total(samples, "modelbroker_attempt_errors_total", **a, kind="status", status="500") == 3
    assert total(samples, "modelbroker_rejected_requests_total", route="/generate", status="400") == 1
    assert total(samples, "modelbroker_attempt_duration_seconds_count", **a) == 3
    assert total(samples, "modelbroker_attempt_duration_seconds_count", **b, outcome="ok") == 3
    assert total(samples, "modelbroker_attempt_duration_seconds_bucket", **b, le="+Inf") == 3
    assert total(samples, "modelbroker_attempt_duration_seconds_bucket", **b, le="60.0") == 3
    assert total(samples, "modelbroker_overhead_seconds_count") == 3
    assert 0 < total(samples, "modelbroker_overhead_seconds_sum") < 1

    tokens = sum(a.json()["tokens"] for a in answers)
    prompt = total(samples, "modelbroker_tokens_total", **b, type="prompt")
    assert prompt > 0 and prompt + total(samples, "modelbroker_tokens_total", **b, type="completion") == tokens
    assert total(samples, "modelbroker_cost_total", **b) == pytest.approx(sum(a.json()["cost"] for a in answers))
    assert total(samples, "modelbroker_cost_total", **a) == 0
    assert total(samples, "modelbroker_provider_state", **a, state="healthy") == 1
    assert total(samples, "modelbroker_provider_state", **a) == 1  # one state at a time
    assert gw.gateway.pm.get_plugin(metrics.RECORDER_NAME).outcomes.pending == 0


def test_a_request_whose_every_attempt_failed_counts_as_failed_once_its_deadline_passed(gateway, provider,
                                                                                        upstream):
    gw = gateway({"providers": [provider("a", model="fail-500")], "reliability": NO_RETRY}, pm=make_pm())
    answer = gw.generate({"prompt": "hi"}, headers={"x-modelbroker-timeout": "0.2"})
    assert answer.status_code == 502
    # No hook says "this was the last attempt": until the deadline another attempt could follow.
    assert total(scrape(gw), "modelbroker_requests_total") == 0
    samples = wait_for(lambda: (s := scrape(gw)) and total(s, "modelbroker_requests_total") and s)
    assert total(samples, "modelbroker_requests_total", provider="a", outcome="failed") == 1
    assert total(samples, "modelbroker_requests_total") == 1


def test_provider_health_is_read_when_scraped(gateway, provider, upstream):
    config = {
        "providers": [provider("a", model="fail-500", priority=1), provider("b", priority=2),
                      provider("c", enabled=False)],
        "reliability": {"retries": 0, "failure_threshold": 1, "cooldown_s": 30},
    }
    gw = gateway(config, pm=make_pm())
    assert gw.generate({"prompt": "hi"}).status_code == 200
    samples = scrape(gw)
    a = {"provider": "a", "model": "fail-500"}
    assert total(samples, "modelbroker_provider_state", **a, state="cooling_down") == 1
    assert total(samples, "modelbroker_provider_state", **a, state="healthy") == 0
    assert 25 < total(samples, "modelbroker_provider_cooldown_remaining_seconds", **a) <= 30
    assert total(samples, "modelbroker_provider_consecutive_failures", **a) == 1
    assert total(samples, "modelbroker_provider_state", provider="b", state="healthy") == 1
    assert total(samples, "modelbroker_provider_cooldown_remaining_seconds", provider="b") == 0
    assert total(samples, "modelbroker_provider_state", provider="c", state="disabled") == 1
    assert total(samples, "modelbroker_provider_in_flight") == 0


def test_a_stream_cut_after_content_is_partial(gateway, provider, upstream):
    upstream.set_behavior("s", {"kind": "stream_cut", "chunks": 4, "cut_after": 2})
    gw = gateway({"providers": [provider("s")], "reliability": NO_RETRY}, pm=make_pm())
    with gw.client.stream("POST", "/generate", json={"prompt": "hi", "stream": True}) as answer:
        body = answer.read().decode()
    assert "error" in body
    samples = scrape(gw)
    assert total(samples, "modelbroker_requests_total", provider="s", outcome="partial") == 1
    assert total(samples, "modelbroker_attempts_total", provider="s", outcome="partial") == 1
    assert total(samples, "modelbroker_attempt_errors_total", provider="s", kind="partial") == 1


def test_two_gateways_in_one_process_keep_their_own_counts(gateway, provider, upstream):
    first = gateway({"providers": [provider("a")]}, pm=make_pm())
    second = gateway({"providers": [provider("a")]}, pm=make_pm())
    for _ in range(2):
        first.generate({"prompt": "hi"})
    second.generate({"prompt": "hi"})
    assert total(scrape(first), "modelbroker_requests_total", outcome="ok") == 2
    assert total(scrape(second), "modelbroker_requests_total", outcome="ok") == 1


def test_openmetrics_when_the_scraper_asks(gateway, provider, upstream):
    gw = gateway({"providers": [provider("a")]}, pm=make_pm())
    answer = gw.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")


# --- the hooks alone ----------------------------------------------------------------------


A = SimpleNamespace(id="a/m", name="a", model="m", enabled=True)


def recorded(recorder: MetricsRecorder) -> list:
    recorder.flush()  # as GET /metrics does
    return parse(generate_latest(recorder.registry).decode())


class Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text")


def test_hooks_never_raise(caplog):
    recorder = MetricsRecorder(GatewayConfig())
    request = SimpleNamespace(request_id="r1", deadline=0.0, received_at=1.0)
    assert recorder.on_result(provider=A, request=request, record=None) is None
    assert recorder.on_failure(provider=None, request=request, record="boom") is None
    assert recorder.on_rejected(route="/generate", status=Unprintable()) is None
    assert caplog.text.count("metrics: ") == 3


def test_cancelled_ends_a_request_at_once_and_counts_its_tokens():
    recorder = MetricsRecorder(GatewayConfig())
    error = ProviderError(ErrorKind.CANCELLED, "the client went away")
    request = ChatRequest(messages=[], request_id="r1", received_at=1.0)
    recorder.on_failure(provider=A, request=request, record=failure_record(A, request, error, 250.0, 1))
    samples = recorded(recorder)
    assert total(samples, "modelbroker_requests_total", provider="a", outcome="cancelled") == 1
    assert total(samples, "modelbroker_attempt_errors_total", kind="cancelled", status="") == 1
    assert total(samples, "modelbroker_attempt_duration_seconds_sum", outcome="cancelled") == 0.25


def test_attempts_are_held_until_a_scrape_and_then_all_counted(monkeypatch):
    from modelbroker._routing.types import Usage
    from modelbroker.plugins.metrics import recorder as recorder_module

    recorder = MetricsRecorder(GatewayConfig())
    B = SimpleNamespace(id="b/m", name="b", model="m", enabled=True)

    def succeed(provider, n: int) -> None:
        result = Completion(text="", model="m", usage=Usage(n, 2 * n, 3 * n), cost=0.5 * n, overhead_ms=0.4)
        request = ChatRequest(messages=[], request_id=f"r{n}", received_at=float(n))
        record = result_record(provider, request, result, 100.0 * n, 1)
        recorder.on_result(provider=provider, request=request, record=record)

    for n in (1, 2, 3):
        succeed(A, n)
    succeed(B, 4)
    unflushed = parse(generate_latest(recorder.registry).decode())
    assert total(unflushed, "modelbroker_attempts_total") == 0
    assert total(unflushed, "modelbroker_requests_total") == 0
    samples = recorded(recorder)  # flushes, as GET /metrics does
    assert total(samples, "modelbroker_attempts_total", provider="a", outcome="ok") == 3
    assert total(samples, "modelbroker_tokens_total", provider="a", type="prompt") == 6
    assert total(samples, "modelbroker_tokens_total", provider="a", type="completion") == 12
    assert total(samples, "modelbroker_cost_total", provider="a") == 3.0
    assert total(samples, "modelbroker_attempt_duration_seconds_sum", provider="a") == pytest.approx(0.6)
    assert total(samples, "modelbroker_attempt_duration_seconds_count", provider="b") == 1
    assert total(samples, "modelbroker_overhead_seconds_count") == 4
    assert total(samples, "modelbroker_requests_total", outcome="ok") == 4

    monkeypatch.setattr(recorder_module, "HELD_MAX", 2)
    succeed(A, 5)
    succeed(A, 6)  # the second held attempt: added without a scrape
    assert total(parse(generate_latest(recorder.registry).decode()), "modelbroker_attempts_total") == 6


async def test_a_request_is_counted_once_however_its_attempts_are_reported():
    counted: list[tuple[str, str, str]] = []
    outcomes = RequestOutcomes(lambda *labels: counted.append(labels), timeout_s=60)
    past = time.monotonic() - 0.9  # a deadline that has passed: counted at the next turn of the loop

    def request(request_id: str, deadline: float = past + 60, received_at: float = 1.0):
        return SimpleNamespace(request_id=request_id, deadline=deadline, received_at=received_at)

    outcomes.attempt_ended(request("r1"), ("a", "m"), "failed")  # then a fallback succeeds
    outcomes.attempt_ended(request("r1"), ("b", "m"), "ok")
    outcomes.attempt_ended(request("r2", past), ("a", "m"), "failed")  # the last attempt
    outcomes.attempt_ended(request("r3"), ("a", "m"), "failed")  # still waiting at shutdown
    outcomes.attempt_ended(request("r3", received_at=2.0), ("b", "m"), "ok")  # another request, same id
    assert counted == [("b", "m", "ok"), ("b", "m", "ok")]
    await _next_turns()
    assert counted[2:] == [("a", "m", "failed")]

    outcomes.attempt_ended(request("r2", past), ("b", "m"), "ok")  # a fallback stream that ended after the deadline
    outcomes.close()
    assert counted[2:] == [("a", "m", "failed"), ("a", "m", "failed")]
    assert outcomes.pending == 0


async def _next_turns() -> None:
    for _ in range(3):
        await asyncio.sleep(0.05)


def test_multiprocess_mode_needs_the_variable_before_prometheus_client_is_imported(monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent")
    with pytest.raises(ConfigError, match="was set after prometheus_client was imported"):
        metrics.multiprocess_dir()


# --- two worker processes ---------------------------------------------------------------------


def worker_counts(directory, name: str) -> dict[str, float]:
    """Per worker pid, the sum of ``name`` in that worker's files (read as a scrape reads them)."""
    pids = {path.stem.rsplit("_", 1)[1] for path in directory.glob("counter_*.db")}
    counts = {}
    for pid in pids:
        alone = directory.parent / f"worker-{pid}"
        shutil.rmtree(alone, ignore_errors=True)
        alone.mkdir()
        for path in directory.glob(f"*_{pid}.db"):
            shutil.copy(path, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts[pid] = sum(s.value for m in registry.collect() for s in m.samples if s.name == name)
    return counts


def test_counters_add_up_across_two_uvicorn_workers(tmp_path, write_config, provider, upstream, subprocess_env,
                                                    repo_root):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()  # empty at start, as docs/observability.md says
    config = write_config({"providers": [provider("a", priority=1), provider("f", model="fail-500", priority=2)],
                           "reliability": NO_RETRY})
    port = free_port()
    env = subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(multiproc), MODELBROKER_CONFIG=str(config),
                         MODELBROKER_LOG_FILE=str(tmp_path / "app.log"), MODELBROKER_DISABLED_PLUGINS="ledger,keys")
    out = (tmp_path / "uvicorn.out").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "main:app", "--app-dir", str(repo_root), "--workers", "2",
         "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _answers(url + "/health"), timeout=20), (tmp_path / "uvicorn.out").read_text()
        assert httpx.get(url + "/metrics", timeout=10).status_code == 200, (
            "main:app has no /metrics: declare metrics = \"plugins.metrics\" under [project.entry-points.modelbroker] "
            "in pyproject.toml, then pip install -e ."
        )
        sent_failed, sent_bad = 2, 3

        def post_ok(n: int) -> int:
            return httpx.post(url + "/generate", json={"prompt": f"hi {n}"}, timeout=10).status_code

        def post_failing(_: int) -> int:
            body = {"model": "fail-500", "messages": [{"role": "user", "content": "hi"}]}
            headers = {"x-modelbroker-timeout": "0.2"}
            return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=10).status_code

        # /health answers once the first worker serves; the kernel may hand every connection to it
        # while the second finishes starting. Rounds of 8 (a new connection each) until both have
        # counted a request: at most 25 rounds.
        statuses: list[int] = []
        with ThreadPoolExecutor(8) as pool:
            for _ in range(25):
                statuses += pool.map(post_ok, range(len(statuses), len(statuses) + 8))
                if sum(1 for count in worker_counts(multiproc, "modelbroker_requests_total").values() if count) == 2:
                    break
            sent_ok = len(statuses)
            statuses += pool.map(post_failing, range(sent_failed))
        statuses += [httpx.post(url + "/generate", content=BAD_JSON, timeout=10).status_code for _ in range(sent_bad)]
        assert statuses.count(200) == sent_ok and statuses.count(502) == sent_failed

        def settled():
            samples = parse(httpx.get(url + "/metrics", timeout=10).text)
            return total(samples, "modelbroker_requests_total") == sent_ok + sent_failed and samples

        samples = wait_for(settled)
        assert samples, "the failed requests were not counted after their deadline"
        assert total(samples, "modelbroker_requests_total", outcome="ok") == sent_ok
        assert total(samples, "modelbroker_requests_total", provider="f", outcome="failed") == sent_failed
        assert total(samples, "modelbroker_rejected_requests_total", status="400") == sent_bad
        assert total(samples, "modelbroker_attempts_total") == sent_ok + sent_failed
        assert total(samples, "modelbroker_attempt_duration_seconds_count") == sent_ok + sent_failed
        assert total(samples, "modelbroker_provider_state", provider="a", state="healthy") == 1  # livemax
        per_worker = worker_counts(multiproc, "modelbroker_requests_total")
        assert len(per_worker) == 2 and all(per_worker.values()), f"one worker served everything: {per_worker}"
        assert sum(per_worker.values()) == sent_ok + sent_failed
    finally:
        server.terminate()  # SIGTERM: the workers shut down gracefully, as in production
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        out.close()
    assert not list(multiproc.glob("gauge_live*.db")), "a stopped worker's live gauges were left behind"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
