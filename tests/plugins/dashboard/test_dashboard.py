"""plugins/dashboard: GET /dashboard, drawn by headless Chromium from a real gateway on a fake upstream.

The usage comes from ``StubLedger`` (an in-memory /usage in the ledger's shape) fed by
the requests each test sends, and from the real ledger when it is installed.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from modelbroker._plugins.manager import make_plugin_manager
from modelbroker._routing.errors import APIError
from modelbroker.hookspecs import hookimpl
from modelbroker.plugins import chat_completions, dashboard, generate, openai_http, priority

from .conftest import DRAWN, section
from .stub_ledger import StubLedger, history

BAD_JSON = b"{not json"
DAYS = 7  # the page shows the last 7 days by default
NO_DATA = "No data yet: requests sent through the gateway appear here."
LOADING = "Loading…"


def make_pm(**extra):
    pm = make_plugin_manager(load_entrypoints=False)
    for name, plugin in {"chat": chat_completions, "generate": generate, "priority": priority, "openai": openai_http,
                         "dashboard": dashboard, **extra}.items():
        pm.register(plugin, name=name)
    return pm


@pytest.fixture
def providers(provider):
    return {
        "providers": [
            provider("broken", model="fail-500", priority=1),
            provider("fast", priority=2),
            provider("backup", priority=3),
            provider("off", enabled=False),
        ],
        "reliability": {"retries": 0, "failure_threshold": 2, "cooldown_s": 60},
    }


def send_traffic(gw) -> None:
    """Fallbacks from ``broken`` to ``fast`` until ``broken`` cools down, some calls to ``backup``, a refusal."""
    for n in range(5):
        assert gw.generate({"prompt": f"hello {n}"}).status_code == 200
    for n in range(3):
        body = {"model": "backup", "messages": [{"role": "user", "content": f"hi {n}"}]}
        assert gw.client.post("/v1/chat/completions", json=body).status_code == 200
    assert gw.generate(content=BAD_JSON).status_code == 400


def count(html: str, pattern: str) -> int:
    return len(re.findall(pattern, html))


def test_the_dashboard_draws_spend_volume_latency_and_health(gateway, providers, upstream, browse):
    ledger = StubLedger(rows=history())
    gw = gateway(providers, pm=make_pm(ledger=ledger))
    send_traffic(gw)
    page = browse(gw.url + "/dashboard")

    assert 'data-state="ready"' in page.dom
    assert re.search(r'<p id="notice" hidden="">', page.dom), "a notice is shown"
    spend = page.section("spend")
    assert 'data-chart="spend"' in spend
    for name in ("backup", "broken", "fast"):
        assert count(spend, rf'<g data-series="{name}">') == 1
    assert count(spend, r'class="point"') == 3 * DAYS  # one point per provider and day
    volume = page.section("volume")
    assert count(volume, r'class="bar" data-series="requests"') == DAYS
    assert count(volume, r'class="point"') == DAYS  # every day has attempts
    latency = page.section("latency")
    for name in ("backup", "fast"):
        assert count(latency, rf'data-series="{name}" data-percentile="p(50|95)"') == 2
    assert 'data-series="broken"' not in latency  # no successful attempt: no latency

    health = page.section("health")
    assert re.search(r'data-provider="broken/fail-500" data-state="cooling_down".*?cooling down, \d', health, re.S)
    assert 'data-provider="fast/fast" data-state="healthy"' in health
    assert 'data-provider="off/off" data-state="disabled"' in health
    totals = page.section("totals")
    assert re.search(r'<tr data-provider="fast"><td>fast</td><td class="num">[\d,]+</td>', totals)
    assert page.screenshot.stat().st_size > 30_000  # a drawn page, not a blank one


def test_without_a_day_by_provider_breakdown_the_total_spend_is_drawn(gateway, providers, upstream, browse):
    gw = gateway(providers, pm=make_pm(ledger=StubLedger(by_day_and_provider=False, rows=history())))
    send_traffic(gw)
    spend = browse(gw.url + "/dashboard").section("spend")
    assert count(spend, r'<g data-series="all providers">') == 1
    assert count(spend, r'class="point"') == DAYS
    assert "no per-provider daily breakdown" in spend


def test_an_empty_ledger_says_there_is_no_data_yet_in_every_panel(gateway, providers, upstream, browse):
    gw = gateway(providers, pm=make_pm(ledger=StubLedger()))
    page = browse(gw.url + "/dashboard")
    for name in ("spend", "volume", "latency", "totals"):
        assert NO_DATA in page.section(name), name
        assert "<svg" not in page.section(name) and "data-provider" not in page.section(name), name
        assert LOADING not in page.section(name), name
    assert 'data-provider="fast/fast" data-state="healthy"' in page.section("health")


def test_until_the_first_answers_every_panel_says_loading(gateway, providers, upstream, browse, browser):
    """The data is asked for as the page opens; each panel says so until its answer is drawn, and
    the health, answered first, is drawn without waiting for the usage."""
    ledger = StubLedger(rows=history(), held=True)
    gw = gateway(providers, pm=make_pm(ledger=ledger))
    assert gw.get("/dashboard").text.count(LOADING) == 5  # every panel, before any script ran

    tab = browser.open(gw.url + "/dashboard")
    tab.wait_for("!!document.querySelector('#health tr[data-provider]')")
    waiting = tab.dom()
    for name in ("spend", "volume", "latency", "totals"):
        assert LOADING in section(waiting, name), name
    assert 'data-state="loading"' in waiting
    ledger.release()
    tab.wait_for(DRAWN)
    drawn = tab.dom()
    assert LOADING not in drawn
    assert count(section(drawn, "spend"), r'<g data-series="fast">') == 1


def test_with_the_ledger_off_the_health_is_still_shown(gateway, providers, upstream, browse):
    gw = gateway(providers, pm=make_pm())
    assert gw.get("/usage").status_code == 404
    page = browse(gw.url + "/dashboard")
    assert re.search(r'<p id="notice">The ledger is off', page.dom)
    assert re.search(r'<section class="card wide" id="spend" hidden="">', page.dom)
    assert 'data-provider="broken/fail-500" data-state="healthy"' in page.section("health")


class UsageNeedsAKey:
    """An ``authenticate`` plugin that guards /usage only: a usage that needs a key the browser did not send."""

    @hookimpl
    def authenticate(self, headers, path):
        if path != "/usage" or headers.get("authorization") == "Bearer sk-test":
            return None
        return _refuse()


async def _refuse():
    raise APIError(401, "an admin key is needed", code="invalid_api_key")


def test_a_usage_that_needs_a_key_says_so(gateway, providers, upstream, browse):
    gw = gateway(providers, pm=make_pm(ledger=StubLedger(rows=history()), keys=UsageNeedsAKey()))
    assert gw.get("/usage", params={"from": "2020-01-01", "to": "2020-01-02"}).status_code == 401
    page = browse(gw.url + "/dashboard")
    assert re.search(r'<p id="notice">The usage needs an admin key \(an admin key is needed\)\. Reload the page',
                     page.dom)
    assert 'type="password"' not in page.dom  # no key field: the browser asks for the key
    assert 'data-provider="fast/fast" data-state="healthy"' in page.section("health")


def test_with_keys_the_browser_gives_the_admin_key_it_was_asked_for(gateway, providers, upstream, browse, tmp_path):
    """The page and its data need an admin key; a browser sends it as HTTP Basic's password, with the
    page and again with the page's requests for /usage."""
    from modelbroker.plugins import keys

    database = f"sqlite:///{(tmp_path / 'keys.db').as_posix()}"
    admin, client = add_key(database, "ops", role="admin"), add_key(database, "team")
    gw = gateway(providers, pm=make_pm(ledger=StubLedger(rows=history()), keys=keys), database_url=database)
    send_traffic_as(gw, admin)

    asked = gw.get("/dashboard")
    assert asked.status_code == 401
    assert asked.headers["www-authenticate"] == 'Basic realm="modelbroker dashboard", charset="UTF-8"'
    assert "give any user name and the key as the password" in asked.json()["error"]["message"]
    assert gw.get("/dashboard", auth=("anyone", client)).status_code == 403
    assert gw.get("/dashboard", auth=("anyone", admin)).status_code == 200

    held = browse(gw.url + "/dashboard", name="no-key", ready=None)  # the browser asks for the key
    assert held.status == 401 and 'data-state="ready"' not in held.dom
    port = gw.url.rsplit(":", 1)[1]
    page = browse(f"http://ops:{admin}@127.0.0.1:{port}/dashboard", name="admin")
    assert 'data-state="ready"' in page.dom
    assert re.search(r'<p id="notice" hidden="">', page.dom), "a notice is shown"
    assert count(page.section("spend"), r'<g data-series="fast">') == 1  # /usage answered the page


def add_key(url: str, name: str, role: str = "client") -> str:
    """A key called ``name`` stored in the database at ``url``; returns the key."""
    import asyncio
    from datetime import datetime, timezone

    from modelbroker.plugins.keys.keygen import hash_key, key_prefix, new_key
    from modelbroker.plugins.keys.store import ClientKey, insert_key, migrate
    from modelbroker.plugins.storage.database import open_database

    key = new_key()

    async def write() -> None:
        db = open_database(url)
        try:
            await migrate(db)
            await insert_key(db, ClientKey(name=name, prefix=key_prefix(key), key_hash=hash_key(key),
                                           created_at=datetime.now(timezone.utc), role=role))
        finally:
            await db.close()

    asyncio.run(write())
    return key


def send_traffic_as(gw, key: str) -> None:
    for n in range(3):
        answer = gw.generate({"prompt": f"hello {n}"}, headers={"authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text


def test_a_range_in_the_address_is_used(gateway, providers, upstream, browse):
    gw = gateway(providers, pm=make_pm(ledger=StubLedger(rows=history())))
    spend = browse(gw.url + "/dashboard?from=2020-01-01&to=2020-01-03").section("spend")
    assert "No data yet" in spend  # the history is recent


def test_the_page_is_self_contained(gateway, providers, upstream):
    gw = gateway(providers, pm=make_pm())
    answer = gw.get("/dashboard")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert not re.search(r'\b(src|href)=', html), "the page loads something"
    assert re.findall(r"https?://[^\s\"'`]+", html) == ["http://www.w3.org/2000/svg"]  # a namespace, not a fetch
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    script = re.search(r"<script>(.*)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy


def test_with_the_real_ledger(gateway, providers, upstream, browse, tmp_path):
    ledger = pytest.importorskip("modelbroker.plugins.ledger", reason="the ledger's dependencies are not installed")
    gw = gateway(providers, pm=make_pm(ledger=ledger), log=tmp_path / "app.log")
    send_traffic(gw)
    page = browse(gw.url + "/dashboard")
    assert 'data-state="ready"' in page.dom
    assert count(page.section("spend"), r'class="point"') >= DAYS
    assert count(page.section("volume"), r'class="point"') == 1  # a failure rate only for today, which has attempts
    assert count(page.section("latency"), r'data-series="fast" data-percentile="p(50|95)"') == 2
    assert re.search(r'<tr data-provider="fast"><td>fast</td><td class="num">5</td>', page.section("totals"))


def test_the_cache_card_shows_spent_saved_and_the_hit_rate(gateway, providers, upstream, browse, tmp_path):
    ledger = pytest.importorskip("modelbroker.plugins.ledger", reason="the ledger's dependencies are not installed")
    from modelbroker.plugins import cache

    config = {**providers, "plugins": {"cache": {"ttl_s": 60}}}
    gw = gateway(config, pm=make_pm(ledger=ledger, cache=cache), log=tmp_path / "app.log")
    body = {"model": "fast", "messages": [{"role": "user", "content": "the same question"}], "temperature": 0}
    answers = [gw.client.post("/v1/chat/completions", json=body) for _ in range(4)]
    assert [a.headers["x-modelbroker-cache"] for a in answers] == ["miss", "hit", "hit", "hit"]
    spent = float(answers[0].headers["x-modelbroker-cost"])
    page = browse(gw.url + "/dashboard")
    card = page.section("cache")
    assert '<td class="num" id="hit-rate">75% (3 of 4)</td>' in card
    shown = {name: float(re.search(rf'id="{name}">([\d.e-]+)<', card).group(1)) for name in ("spent", "saved")}
    assert shown["spent"] == pytest.approx(spent, rel=0.05)
    assert shown["saved"] == pytest.approx(3 * spent, rel=0.05)
    row = re.search(r'<tr data-provider="fast">(.*?)</tr>', page.section("totals"), re.S).group(1)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    assert cells[1] == "4" and cells[2] == "1" and cells[6] == "3"  # requests, attempts, cache hits
