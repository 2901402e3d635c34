"""Prices from the catalogue and the cost ceiling per request, through a real gateway in front of
the fake upstream: what a request costs, which providers a ceiling leaves out, and the 400s."""

from __future__ import annotations

import logging

import genai_prices
import pytest

from modelbroker._routing.ceiling import ASSUMED_COMPLETION_TOKENS

HELLO = "hello big world"
NO_RETRY = {"retries": 0, "failure_threshold": 1000}


def genai_cost(vendor: str, model: str, prompt: int, completion: int) -> float:
    usage = genai_prices.Usage(input_tokens=prompt, output_tokens=completion)
    return float(genai_prices.calc_price(usage, model, provider_id=vendor).total_price)


def unpriced(entry: dict) -> dict:
    """A provider entry of the fixture, less the price it adds by default."""
    entry.pop("cost_per_1k_tokens", None)
    return entry


def test_a_provider_priced_by_the_catalogue_costs_what_genai_prices_says(gateway, provider, fake_upstream):
    gw = gateway({"providers": [unpriced(provider("mini", model="gpt-4o-mini", vendor="openai"))]})
    answer = gw.chat(HELLO)
    assert answer.status_code == 200
    usage = answer.json()["usage"]
    expected = genai_cost("openai", "gpt-4o-mini", usage["prompt_tokens"], usage["completion_tokens"])
    assert expected > 0
    assert float(answer.headers["x-modelbroker-cost"]) == pytest.approx(expected, abs=1e-8)
    generated = gw.generate({"prompt": HELLO}).json()
    assert generated["cost"] == pytest.approx(expected, rel=1e-9)  # the same prompt, the same tokens
    (line, _) = gw.log_lines()
    assert line["cost"] == pytest.approx(expected, rel=1e-9)


def test_a_model_no_one_prices_costs_0_with_a_warning(gateway, provider, fake_upstream, caplog):
    with caplog.at_level(logging.WARNING, logger="modelbroker"):
        gw = gateway({"providers": [unpriced(provider("local", model="llama3.2"))]})
    [warning] = [r.getMessage() for r in caplog.records if "costs 0" in r.getMessage()]
    assert "providers[0] (local/llama3.2): model 'llama3.2' costs 0: no vendor" in warning
    assert "cost_per_1k_tokens" in warning
    assert gw.generate({"prompt": HELLO}).json()["cost"] == 0


@pytest.fixture
def cheap_and_dear(gateway, provider, fake_upstream):
    """``dear`` first by priority, at 100 times ``cheap``'s price per 1k tokens."""
    return gateway({"reliability": NO_RETRY, "providers": [
        provider("dear", priority=1, cost_per_1k_tokens=0.1),
        provider("cheap", priority=2, cost_per_1k_tokens=0.001),
    ]})


def worst(price: float, prompt_tokens: int, completion: int) -> float:
    return (prompt_tokens + completion) * price / 1000


def test_the_ceiling_skips_a_provider_whose_worst_case_costs_more(cheap_and_dear, fake_upstream):
    gw = cheap_and_dear
    assert gw.generate({"prompt": HELLO}).json()["provider"] == "dear/dear"  # no ceiling: priority
    fake_upstream.reset()
    # 4 prompt tokens (15 characters) and 100 at most: dear could cost 0.0104, cheap 0.000104
    answer = gw.generate({"prompt": HELLO, "max_tokens": 100}, headers={"x-modelbroker-max-cost": "0.001"})
    assert answer.status_code == 200 and answer.json()["provider"] == "cheap/cheap"
    assert fake_upstream.calls == {"cheap": 1}  # dear was never called
    body = gw.generate({"prompt": HELLO, "max_tokens": 100, "max_cost": 0.001})
    assert body.json()["provider"] == "cheap/cheap"
    chat = gw.client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": HELLO}], "max_tokens": 100},
        headers={"x-modelbroker-max-cost": "0.001"})
    assert chat.headers["x-modelbroker-provider"] == "cheap/cheap"
    assert fake_upstream.calls == {"cheap": 3}


def test_no_provider_fits_the_ceiling_400_naming_the_cheapest(cheap_and_dear, fake_upstream):
    gw = cheap_and_dear
    refused = gw.generate({"prompt": HELLO}, headers={"x-modelbroker-max-cost": "0.00001"})
    assert refused.status_code == 400
    error = refused.json()["error"]
    cheapest = worst(0.001, 4, ASSUMED_COMPLETION_TOKENS)
    assert error["code"] == "cost_limit_exceeded"
    assert error["message"] == (
        f"no provider fits this request's cost ceiling of 1e-05: the cheapest, cheap/cheap, could cost up to "
        f"{cheapest:.6g} (4 prompt tokens estimated, {ASSUMED_COMPLETION_TOKENS} completion tokens at most); "
        "raise the ceiling (x-modelbroker-max-cost, or the key's default), or ask for fewer tokens with max_tokens")
    assert fake_upstream.calls == {}
    # the lower of the body's ceiling and the header's applies
    assert gw.generate({"prompt": HELLO, "max_cost": 1}, headers={"x-modelbroker-max-cost": "0.00001"}
                       ).status_code == 400


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", ""])
def test_a_bad_ceiling_is_a_400_naming_the_header(cheap_and_dear, fake_upstream, value):
    refused = cheap_and_dear.generate({"prompt": HELLO}, headers={"x-modelbroker-max-cost": value})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "invalid_max_cost" and error["param"] == "x-modelbroker-max-cost"
    assert error["message"].startswith("x-modelbroker-max-cost must be a positive number")
    assert fake_upstream.calls == {}


def test_a_bad_max_cost_on_generate_is_a_422_naming_the_field(cheap_and_dear):
    refused = cheap_and_dear.generate({"prompt": HELLO, "max_cost": -1})
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "max_cost"


def test_the_ceiling_applies_to_embeddings(gateway, provider, fake_upstream):
    url = f"{fake_upstream.url}/v1/embeddings"
    gw = gateway({"providers": [
        provider("dear", kind="embeddings", endpoint=url, priority=1, cost_per_1k_tokens=1),
        provider("cheap", kind="embeddings", endpoint=url, priority=2, cost_per_1k_tokens=0.001),
    ]})
    answer = gw.post("/v1/embeddings", json={"input": "hello big world"}, headers={"x-modelbroker-max-cost": "0.001"})
    assert answer.status_code == 200 and answer.headers["x-modelbroker-provider"] == "cheap/cheap"
