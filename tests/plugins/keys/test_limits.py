"""What a key may do: its models (403), its rates and budgets (429), and its spend, which is
the cost the ledger records, counted in the shared state (in process, or in Redis)."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime, timedelta, timezone

import openai
import pytest
import redis

from modelbroker._routing.state import MemoryState
from modelbroker.plugins.keys.limits import DAY, MONTH, period_end, period_start, spend_key, tpm_key
from modelbroker.plugins.ledger import schema as ledger_schema
from modelbroker.plugins.storage.database import open_database

from .conftest import add_key, clear_of_minute_end, guard_of, insert_attempts, keys_config, unique, wait_for

HELLO = [{"role": "user", "content": "hi"}]
TIMEOUT = 10.0
NO_RETRY = {"retries": 0, "failure_threshold": 1000}


def chat(gw, key: str, **body):
    return gw.client.post("/v1/chat/completions", json={"messages": HELLO, **body},
                          headers={"authorization": f"Bearer {key}"})


def sdk(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=TIMEOUT)


def counter(gw, name: str) -> float:
    """A counter of the gateway's key guard, read from where it lives (this process or Redis)."""
    state = guard_of(gw).limits.state
    if isinstance(state, MemoryState):
        return asyncio.run(state.get(name))
    client = redis.Redis.from_url(gw.server.settings.redis_url, socket_timeout=2)
    try:
        return float(client.get(state.prefix + name) or 0)
    finally:
        client.close()


def spend(gw, name: str, period: str = DAY) -> float:
    return counter(gw, spend_key(name, period, datetime.now(timezone.utc)))


def test_hook_admit(gateway, provider, upstream, db_url):
    """A key with ``models`` may ask only for those; anything else is 403, reported to the ledger."""
    name = unique("models")
    key = add_key(db_url, name, models=["a", "model-b"])
    gw = gateway(keys_config(provider("a"), provider("b", model="model-b"), provider("c")), database_url=db_url)
    assert chat(gw, key, model="a").status_code == 200
    assert chat(gw, key, model="model-b").status_code == 200
    for asked in ("c", "auto", "priority"):
        refused = chat(gw, key, model=asked)
        assert refused.status_code == 403, asked
        assert refused.json()["error"] == {
            "message": f"key {name!r} may not use model {asked!r}; it may use: a, model-b",
            "type": "permission_error", "code": "model_not_allowed", "param": "model"}
    assert chat(gw, key).status_code == 403  # no model: auto
    assert gw.generate({"prompt": "hi"}, headers={"authorization": f"Bearer {key}"}).status_code == 403
    with pytest.raises(openai.PermissionDeniedError, match="may not use model 'c'"):
        sdk(gw, key).chat.completions.create(model="c", messages=HELLO)
    usage = gw.get("/usage", params={"group_by": "client"}, headers={"authorization": f"Bearer {key}"}).json()
    (mine,) = usage["groups"]
    assert (mine["key"], mine["requests"], mine["rejected"]) == (name, 8, 6)


def state_settings(shared: str, db_url: str, request) -> dict:
    """Gateway settings for counting in the process, or in the machine's Redis."""
    if shared == "redis":
        return {"database_url": db_url, "redis_url": request.getfixturevalue("redis_url")}
    return {"database_url": db_url}


@pytest.mark.parametrize("shared", ["memory", "redis"])
def test_requests_per_minute(gateway, provider, upstream, db_url, shared, request):
    name = unique("rpm")
    key = add_key(db_url, name, rpm=3)
    other = add_key(db_url, unique("other"), rpm=3)
    gw = gateway(keys_config(provider("a")), **state_settings(shared, db_url, request))
    clear_of_minute_end()
    assert [chat(gw, key).status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = chat(gw, key)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert f"key {name!r} has made its 3 requests per minute" in refused.json()["error"]["message"]
    with pytest.raises(openai.RateLimitError):
        sdk(gw, key).chat.completions.create(model="auto", messages=HELLO)
    assert chat(gw, other).status_code == 200  # each key has its own


@pytest.mark.parametrize(("budget", "period"), [("budget_daily", DAY), ("budget_monthly", MONTH)])
def test_a_key_over_its_budget_is_refused_until_the_reset(gateway, provider, upstream, db_url, budget, period):
    name = unique("budget")
    key = add_key(db_url, name, **{budget: 0.000001})
    gw = gateway(keys_config(provider("a")), database_url=db_url)
    assert chat(gw, key).status_code == 200  # under budget: allowed, and charged in full
    wait_for(lambda: spend(gw, name, period) > 0.000001, "the request to be charged")

    refused = chat(gw, key)
    assert refused.status_code == 429
    error = refused.json()["error"]
    resets = period_end(period, datetime.now(timezone.utc))
    assert error["code"] == "budget_exceeded" and error["budget"] == period
    assert f"key {name!r} has used its {period} budget" in error["message"]
    assert f"it resets at {resets:%Y-%m-%dT%H:%M:%SZ}" in error["message"]
    left = (resets - datetime.now(timezone.utc)).total_seconds()
    assert abs(int(refused.headers["retry-after"]) - math.ceil(left)) <= 5
    assert refused.headers["x-should-retry"] == "false"
    with pytest.raises(openai.RateLimitError, match=f"{period} budget"):
        sdk(gw, key).chat.completions.create(model="auto", messages=HELLO)


@pytest.mark.parametrize("shared", ["memory", "redis"])
def test_tokens_per_minute(gateway, provider, upstream, db_url, shared, request):
    name = unique("tpm")
    key = add_key(db_url, name, tpm=5)
    gw = gateway(keys_config(provider("a")), **state_settings(shared, db_url, request))
    clear_of_minute_end()
    answer = chat(gw, key)
    assert answer.status_code == 200 and answer.json()["usage"]["total_tokens"] >= 5
    wait_for(lambda: counter(gw, tpm_key(name, time.time())) >= 5, "the tokens to be counted")
    refused = chat(gw, key)
    assert refused.status_code == 429
    assert f"key {name!r} has used its 5 tokens per minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def ledger_rows(url: str, client: str) -> list[dict]:
    async def read():
        db = open_database(url)
        try:
            async with db.reading() as conn:
                return [dict(r) for r in await conn.fetch("SELECT * FROM attempts WHERE client = ?", (client,))]
        finally:
            await db.close()

    return asyncio.run(read())


@pytest.mark.parametrize("shared", ["memory", "redis"])
def test_the_spend_is_the_cost_the_ledger_records(gateway, provider, upstream, db_url, shared, request):
    """A mix of /generate, /v1 whole and streamed, a stream cut after content (a partial
    attempt, which costs) and a fallback: the key's spend is the ledger's cost for the client."""
    settings = state_settings(shared, db_url, request)
    name = unique("spend")
    key = add_key(db_url, name)
    upstream.set_behavior("cut", {"kind": "stream_cut", "cut_after": 2})
    gw = gateway(keys_config(provider("broken", model="fail-500", priority=1), provider("a", priority=2),
                             provider("cut", priority=3), reliability=NO_RETRY), **settings)
    bearer = {"authorization": f"Bearer {key}"}

    assert gw.generate({"prompt": "one two three"}, headers=bearer).status_code == 200  # broken, then a
    assert chat(gw, key, model="a", max_tokens=50).status_code == 200
    streamed = sdk(gw, key).chat.completions.create(model="a", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    with gw.client.stream("POST", "/v1/chat/completions", headers=bearer,
                          json={"model": "cut", "messages": HELLO, "stream": True}) as cut:
        assert "stream_interrupted" in cut.read().decode()

    usage = gw.get("/usage", params={"group_by": "client"}, headers=bearer).json()
    (mine,) = usage["groups"]
    assert mine["key"] == name and mine["cost"] > 0
    wait_for(lambda: spend(gw, name) == pytest.approx(mine["cost"], rel=1e-9), "the spend to match the ledger")
    assert spend(gw, name, MONTH) == pytest.approx(mine["cost"], rel=1e-9)
    outcomes = {row["outcome"]: row["cost"] for row in ledger_rows(db_url, name)}
    assert outcomes["partial"] > 0 and outcomes["failed"] == 0  # the cut stream is charged


def add_ledger_rows(url: str, rows: list[tuple[str, datetime, float]]) -> None:
    async def write():
        db = open_database(url)
        try:
            await ledger_schema.migrate(db)
            await insert_attempts(db, [
                {"request_id": f"old-{n}", "attempt": 1, "time": moment, "client": client, "success": True,
                 "outcome": "ok", "cost": cost} for n, (client, moment, cost) in enumerate(rows)])
        finally:
            await db.close()

    asyncio.run(write())


@pytest.mark.parametrize("shared", ["memory", "redis"])
def test_a_restart_keeps_the_budgets(gateway, provider, upstream, db_url, shared, request):
    """The counters start from the ledger's spend; with Redis, a restart finds them and adds nothing."""
    settings = state_settings(shared, db_url, request)
    name = unique("restart")
    now = datetime.now(timezone.utc)
    day, month = period_start(DAY, now), period_start(MONTH, now)
    add_ledger_rows(db_url, [(name, day, 0.5), (name, month, 0.25), (name, month - timedelta(seconds=1), 100.0),
                             ("someone-else", day, 7.0)])
    key = add_key(db_url, name, budget_daily=0.5)
    expected_day = 0.75 if day == month else 0.5

    for _ in range(2):
        gw = gateway(keys_config(provider("a")), **settings)
        assert spend(gw, name) == pytest.approx(expected_day)
        assert spend(gw, name, MONTH) == pytest.approx(0.75)
        refused = chat(gw, key)
        assert refused.status_code == 429 and "daily budget: 0.5" in refused.json()["error"]["message"]
        gw.stop()


def test_with_redis_away_the_limits_hold_in_the_process(gateway, provider, upstream, db_url, closed_port_url):
    port = closed_port_url.split(":")[2].split("/")[0]
    name = unique("outage")
    key = add_key(db_url, name, rpm=2)
    gw = gateway(keys_config(provider("a")), database_url=db_url, redis_url=f"redis://127.0.0.1:{port}/0")
    clear_of_minute_end()
    assert [chat(gw, key).status_code for _ in range(3)] == [200, 200, 429]
    assert guard_of(gw).limits.state.status()["shared"] is False


def test_a_redis_outage_is_shown_in_health(gateway, provider, upstream, db_url, closed_port_url):
    port = closed_port_url.split(":")[2].split("/")[0]
    key = add_key(db_url, unique("health"), rpm=2)
    gw = gateway(keys_config(provider("a")), database_url=db_url, redis_url=f"redis://127.0.0.1:{port}/0")
    assert chat(gw, key).status_code == 200
    assert gw.get("/health").json()["shared_state"]["shared"] is False


def test_the_counters_live_in_the_gateways_shared_state(gateway, provider, upstream, db_url):
    name = unique("shared")
    key = add_key(db_url, name)
    gw = gateway(keys_config(provider("a")), database_url=db_url)
    assert chat(gw, key).status_code == 200
    wait_for(lambda: spend(gw, name) > 0, "the request to be charged")
    assert guard_of(gw).limits.state is gw.gateway.state


def test_a_keys_ceiling_applies_when_the_request_sets_none_lower(gateway, provider, upstream, db_url, cli):
    """``keys create --max-cost-per-request``: the key's default ceiling; a request's header may lower it,
    never raise it."""
    name = unique("ceiling")
    assert cli("create", "--name", name, "--max-cost-per-request", "0.001").returncode == 0
    key = cli("create", "--name", unique("other")).stdout.strip()
    (row,) = [line for line in cli("list").stdout.splitlines() if line.startswith(name)]
    assert "0.001" in row.split()
    ceiling_key = add_key(db_url, unique("ceiling-row"), max_cost_per_request=0.001)
    gw = gateway(keys_config(provider("dear", priority=1, cost_per_1k_tokens=0.1),
                             provider("cheap", priority=2, cost_per_1k_tokens=0.001), reliability=NO_RETRY),
                 database_url=db_url)

    def generate(key: str, **headers):
        return gw.generate({"prompt": "hi", "max_tokens": 100},
                           headers={"authorization": f"Bearer {key}", **headers})

    assert generate(key).json()["provider"] == "dear/dear"  # a key without a ceiling
    assert generate(ceiling_key).json()["provider"] == "cheap/cheap"
    assert generate(ceiling_key, **{"x-modelbroker-max-cost": "1"}).json()["provider"] == "cheap/cheap"  # not raised
    lowered = generate(ceiling_key, **{"x-modelbroker-max-cost": "0.00001"})
    assert lowered.status_code == 400 and lowered.json()["error"]["code"] == "cost_limit_exceeded"
    assert "cost ceiling of 1e-05" in lowered.json()["error"]["message"]
