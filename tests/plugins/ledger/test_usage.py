"""GET /usage and ``modelbroker usage`` (plugins/ledger/cli.py): exact sums, groups, windows, bad input."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from modelbroker._config.settings import Settings
from modelbroker.plugins.ledger.cli import LedgerUnavailable, print_usage
from modelbroker.plugins.ledger.queries import UsageQueryError, parse_window, usage_report

from .helpers import at, insert, read_rows, record, run, with_db

PRICE = 0.001
NO_RETRY = {"retries": 0, "failure_threshold": 1000}
HELLO = [{"role": "user", "content": "one two three"}]  # 3 tokens in, 7 out at the fake upstream


def zero(**fields) -> dict:
    summary = {"requests": 0, "attempts": 0, "failures": 0, "rejected": 0, "cache_hits": 0, "prompt_tokens": 0,
               "completion_tokens": 0, "total_tokens": 0, "cost": 0.0, "saved_cost": 0.0,
               "p50_latency_ms": None, "p95_latency_ms": None}
    summary.update(fields)
    return summary


def without_latency(summary: dict) -> dict:
    return {k: (round(v, 12) if k == "cost" else v) for k, v in summary.items() if not k.endswith("latency_ms")}


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered)) - 1]


# --- from real requests ---------------------------------------------------------------------


@pytest.fixture
def known_traffic(gateway, provider, upstream, sqlite_url):
    """Three /generate requests that fall back from a to b, one chat request straight to b
    from client alice, one chat request refused (unknown model) from client carol."""
    gw = gateway({"reliability": NO_RETRY, "providers": [
        provider("a", model="fail-500", priority=1), provider("b", priority=2)]}, database_url=sqlite_url)
    for n in range(3):
        assert gw.generate({"prompt": "one two three"}, headers={"x-request-id": f"gen-{n}"}).status_code == 200
    assert gw.client.post("/v1/chat/completions", headers={"x-request-id": "chat-ok"},
                          json={"model": "b", "messages": HELLO, "user": "alice"}).status_code == 200
    assert gw.client.post("/v1/chat/completions", headers={"x-request-id": "chat-404"},
                          json={"model": "nope", "messages": HELLO, "user": "carol"}).status_code == 404
    return gw


FAILING_A = zero(requests=3, attempts=3, failures=3)
SERVING_B = zero(requests=4, attempts=4, prompt_tokens=12, completion_tokens=28, total_tokens=40,
                 cost=round(40 * PRICE / 1000, 12))
REFUSED = zero(requests=1, rejected=1)
TOTALS = zero(requests=5, attempts=7, failures=3, rejected=1, prompt_tokens=12, completion_tokens=28,
              total_tokens=40, cost=round(40 * PRICE / 1000, 12))

EXPECTED_GROUPS = {
    "provider": {"a": FAILING_A, "b": SERVING_B, None: REFUSED},
    "model": {"fail-500": FAILING_A, "b": SERVING_B, None: REFUSED},
    "client": {None: zero(requests=3, attempts=6, failures=3, prompt_tokens=9, completion_tokens=21,
                          total_tokens=30, cost=round(30 * PRICE / 1000, 12)),
               "alice": zero(requests=1, attempts=1, prompt_tokens=3, completion_tokens=7, total_tokens=10,
                             cost=round(10 * PRICE / 1000, 12)),
               "carol": REFUSED},
}


def test_usage_totals_from_known_requests(known_traffic, sqlite_url):
    body = known_traffic.get("/usage").json()
    assert body["group_by"] is None and body["groups"] == []
    assert without_latency(body["totals"]) == without_latency(TOTALS)
    latencies = [r["latency_ms"] for r in read_rows(sqlite_url) if r["success"]]
    assert body["totals"]["p50_latency_ms"] == pytest.approx(nearest_rank(latencies, 0.5))
    assert body["totals"]["p95_latency_ms"] == pytest.approx(nearest_rank(latencies, 0.95))
    to = datetime.fromisoformat(body["to"])
    assert abs(to - datetime.now(timezone.utc)) < timedelta(seconds=30)
    assert to - datetime.fromisoformat(body["from"]) == timedelta(days=30)


@pytest.mark.parametrize("group_by", sorted(EXPECTED_GROUPS))
def test_usage_by_group_from_known_requests(known_traffic, group_by):
    body = known_traffic.get("/usage", params={"group_by": group_by}).json()
    assert body["group_by"] == group_by
    groups = {g["key"]: without_latency({k: v for k, v in g.items() if k != "key"}) for g in body["groups"]}
    assert groups == {key: without_latency(value) for key, value in EXPECTED_GROUPS[group_by].items()}
    assert body["groups"][-1]["key"] is None  # the group without a key comes last
    assert without_latency(body["totals"]) == without_latency(TOTALS)


def test_usage_by_day_from_known_requests(known_traffic):
    body = known_traffic.get("/usage", params={"group_by": "day"}).json()
    (day,) = body["groups"]
    assert day["key"] == datetime.now(timezone.utc).date().isoformat()
    assert {k: v for k, v in day.items() if k != "key"} == body["totals"]


# --- from rows written directly ------------------------------------------------------------------


JANUARY = [
    record("dec-31", time=at("2024-12-31T23:59:59"), cost=8.0),
    record("jan-10", time=at("2025-01-10T12:00:00"), cost=1.0, provider="p"),
    record("jan-31", time=at("2025-01-31T23:59:59"), cost=2.0, provider="q"),
    record("feb-01", time=at("2025-02-01T00:00:00"), cost=4.0),
]


WINDOWS = [
    ({"from": "2025-01-01", "to": "2025-01-31"}, {"jan-10", "jan-31"}),  # a date `to` is the whole day
    ({"from": "2025-01-10T12:00:00Z", "to": "2025-02-01T00:00:00Z"}, {"jan-10", "jan-31"}),  # [from, to)
    ({"from": "2025-01-10T14:00:00+02:00", "to": "2025-01-31T23:59:59"}, {"jan-10"}),  # offsets; naive is UTC
    ({"from": "2025-01-01", "to": "2025-02-01"}, {"jan-10", "jan-31", "feb-01"}),
    ({"to": "2025-01-15"}, {"jan-10", "dec-31"}),  # 30 days before `to`
    ({"from": "2025-01-20"}, {"jan-31", "feb-01"}),  # up to now
    ({}, set()),  # the last 30 days: none of these
]


def test_from_and_to_select_the_window(gateway, provider, upstream, database_url):
    insert(database_url, JANUARY)
    gw = gateway({"providers": [provider("a")]}, database_url=database_url)
    costs = {r["request_id"]: r["cost"] for r in JANUARY}
    for params, expected_ids in WINDOWS:
        totals = gw.get("/usage", params=params).json()["totals"]
        assert totals["requests"] == len(expected_ids), params
        assert totals["cost"] == pytest.approx(sum(costs[i] for i in expected_ids)), params


def test_days_are_utc_dates_on_both_databases(gateway, provider, upstream, database_url):
    insert(database_url, JANUARY)
    gw = gateway({"providers": [provider("a")]}, database_url=database_url)
    body = gw.get("/usage", params={"from": "2024-12-01", "to": "2025-02-28", "group_by": "day"}).json()
    assert [(g["key"], g["cost"]) for g in body["groups"]] == [
        ("2024-12-31", 8.0), ("2025-01-10", 1.0), ("2025-01-31", 2.0), ("2025-02-01", 4.0)]


def test_percentiles_are_nearest_rank_per_group(database_url):
    rows = [record(f"a{i}", provider="a", latency_ms=float(i)) for i in range(1, 101)]  # 1..100
    rows += [record(f"b{i}", provider="b", latency_ms=float(v)) for i, v in enumerate([40, 10, 30, 20])]
    rows += [record("b-failed", provider="b", success=False, outcome="failed", latency_ms=1000.0)]
    insert(database_url, rows)
    window = parse_window("2000-01-01", None)
    report = run(with_db(database_url, lambda db: usage_report(db, window, "provider")))
    a, b = report["groups"]
    assert (a["key"], a["p50_latency_ms"], a["p95_latency_ms"]) == ("a", 50.0, 95.0)
    assert (b["key"], b["p50_latency_ms"], b["p95_latency_ms"]) == ("b", 20.0, 40.0)  # the failure is left out
    assert (b["attempts"], b["failures"]) == (5, 1)
    everything = [float(i) for i in range(1, 101)] + [10.0, 20.0, 30.0, 40.0]
    assert report["totals"]["p50_latency_ms"] == nearest_rank(everything, 0.5)
    assert report["totals"]["p95_latency_ms"] == nearest_rank(everything, 0.95)


def test_an_empty_window_is_all_zeros(gateway, provider, upstream, sqlite_url):
    gw = gateway({"providers": [provider("a")]}, database_url=sqlite_url)
    body = gw.get("/usage", params={"group_by": "provider"}).json()
    assert body["totals"] == zero() and body["groups"] == []


BAD_PARAMETERS = [
    ({"from": "yesterday"}, "from", "ISO date"),
    ({"to": "2025-13-01"}, "to", "ISO date"),
    ({"from": "2025-02-01", "to": "2025-01-01"}, "from", "must be before"),
    ({"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, "from", "must be before"),
    ({"group_by": "week"}, "group_by", "provider, model, day, client"),
    ({"to": "9999-12-31"}, "to", "past the last date"),  # its end of day is out of range (was a 500)
    ({"to": "0001-01-05"}, "from", "before the year 1"),  # 30 days before it, the default from, too
]


def test_bad_parameters_are_400_in_the_error_shape(gateway, provider, upstream, sqlite_url):
    gw = gateway({"providers": [provider("a")]}, database_url=sqlite_url)
    for params, param, words in BAD_PARAMETERS:
        answer = gw.get("/usage", params=params)
        assert answer.status_code == 400, params
        error = answer.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_parameter", param)
        assert words in error["message"], params
        assert answer.headers["content-type"] == "application/json"


def test_group_by_none_is_totals_only(gateway, provider, upstream, sqlite_url):
    gw = gateway({"providers": [provider("a")]}, database_url=sqlite_url)
    body = gw.get("/usage", params={"group_by": "none"}).json()
    assert body["group_by"] is None and body["groups"] == []


# --- modelbroker usage ------------------------------------------------------------------------------


def test_print_usage_is_the_same_report_as_a_table(sqlite_url):
    insert(sqlite_url, JANUARY + [record("jan-12-failed", time=at("2025-01-12T08:00:00"), provider="p",
                                         success=False, outcome="failed", latency_ms=5.0)])
    settings = Settings(database_url=sqlite_url, log_file="")
    text = print_usage(settings, "2025-01-01", "2025-01-31", "provider")
    title, blank, header, rule, p, q, total = text.splitlines()
    assert title == "Usage from 2025-01-01T00:00:00+00:00 to 2025-02-01T00:00:00+00:00, by provider"
    assert header.split() == ["provider", "requests", "attempts", "failures", "rejected", "cache", "hits", "tokens",
                              "in", "tokens", "out", "cost", "saved", "p50", "ms", "p95", "ms"]
    assert p.split() == ["p", "2", "2", "1", "0", "0", "0", "0", "1.000000", "0.000000", "10.0", "10.0"]
    assert q.split() == ["q", "1", "1", "0", "0", "0", "0", "0", "2.000000", "0.000000", "10.0", "10.0"]
    assert total.split() == ["total", "3", "3", "1", "0", "0", "0", "0", "3.000000", "0.000000", "10.0", "10.0"]


def test_print_usage_totals_only_and_defaults(sqlite_url):
    insert(sqlite_url, [record("now")])
    text = print_usage(Settings(database_url=sqlite_url, log_file=""), None, None, None)
    assert text.splitlines()[-1].split()[:3] == ["total", "1", "1"]


def test_print_usage_without_a_ledger_says_where_it_looked(tmp_path):
    settings = Settings(log_file=str(tmp_path / "app.log"))
    with pytest.raises(LedgerUnavailable, match="no ledger at .*modelbroker.db"):
        print_usage(settings, None, None, None)
    assert not (tmp_path / "modelbroker.db").exists()


def test_print_usage_with_an_unsupported_database_says_so_in_one_line(tmp_path):
    settings = Settings(database_url="mysql://app:Zq7pW9@db/ledger", log_file=str(tmp_path / "app.log"))
    with pytest.raises(LedgerUnavailable) as refused:
        print_usage(settings, None, None, None)
    assert str(refused.value).startswith("MODELBROKER_DATABASE_URL: unsupported database 'mysql'")
    assert "Zq7pW9" not in str(refused.value)


def test_print_usage_refuses_bad_parameters(sqlite_url):
    with pytest.raises(UsageQueryError, match="group_by"):
        print_usage(Settings(database_url=sqlite_url), None, None, "week")


def test_usage_by_day_and_provider_on_both_databases(gateway, provider, upstream, database_url):
    """Two columns at once (the dashboard's spend per provider per day): keys are [day, provider]."""
    insert(database_url, JANUARY)
    gw = gateway({"providers": [provider("a")]}, database_url=database_url)
    body = gw.get("/usage", params={"from": "2024-12-01", "to": "2025-02-28", "group_by": "day,provider"}).json()
    assert body["group_by"] == "day,provider"
    assert sorted((tuple(g["key"]), g["cost"]) for g in body["groups"]) == sorted([
        (("2024-12-31", JANUARY[0]["provider"]), 8.0), (("2025-01-10", "p"), 1.0),
        (("2025-01-31", "q"), 2.0), (("2025-02-01", JANUARY[3]["provider"]), 4.0)])


@pytest.mark.parametrize("group_by", ["day,day", "day,provider,model", "day,nope"])
def test_a_bad_pair_of_groups_is_refused(gateway, provider, upstream, sqlite_url, group_by):
    gw = gateway({"providers": [provider("a")]}, database_url=sqlite_url)
    answer = gw.get("/usage", params={"group_by": group_by})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "group_by"


def test_cache_hits_and_saved_cost_per_client_and_day(database_url):
    """A hit (attempt 0, cache_hit, cost 0, saved_cost) is a request but no attempt, and its time
    is left out of the attempts' latency."""
    rows = [
        record("made", time=at("2025-01-10T12:00:00"), client="c1", cost=1.5, latency_ms=100.0),
        record("hit-1", attempt=0, time=at("2025-01-10T13:00:00"), client="c2", cost=0.0, cache_hit=True,
               saved_cost=1.5, latency_ms=1.0),
        record("hit-2", attempt=0, time=at("2025-01-11T13:00:00"), client="c2", cost=0.0, cache_hit=True,
               saved_cost=1.5, latency_ms=1.0),
    ]
    insert(database_url, rows)
    window = parse_window("2025-01-01", "2025-01-31")
    report = run(with_db(database_url, lambda db: usage_report(db, window, "client")))
    totals = report["totals"]
    assert (totals["requests"], totals["attempts"], totals["cache_hits"]) == (3, 1, 2)
    assert (totals["cost"], totals["saved_cost"]) == (1.5, 3.0)
    assert totals["p50_latency_ms"] == totals["p95_latency_ms"] == 100.0
    by_client = {g["key"]: (g["cache_hits"], g["cost"], g["saved_cost"]) for g in report["groups"]}
    assert by_client == {"c1": (0, 1.5, 0.0), "c2": (2, 0.0, 3.0)}
    by_day = run(with_db(database_url, lambda db: usage_report(db, window, "day")))["groups"]
    assert [(g["key"], g["requests"], g["saved_cost"]) for g in by_day] == [("2025-01-10", 2, 1.5),
                                                                           ("2025-01-11", 1, 1.5)]


def test_modelbroker_usage_by_client_shows_the_saved_cost(sqlite_url, monkeypatch, capsys):
    from modelbroker._cli.main import main

    insert(sqlite_url, [record("made", client="c1", cost=1.5),
                        record("hit", attempt=0, client="c2", cost=0.0, cache_hit=True, saved_cost=1.5)])
    monkeypatch.setenv("MODELBROKER_DATABASE_URL", sqlite_url)
    assert main(["usage", "--by", "client"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[4:]}
    assert rows["c1"][5] == "0" and rows["c1"][8:10] == ["1.500000", "0.000000"]  # cache hits; cost, saved
    assert rows["c2"][5] == "1" and rows["c2"][8:10] == ["0.000000", "1.500000"]
    assert rows["total"][1:3] == ["2", "1"]  # two requests, one attempt
