"""Strategy ``prompt_size``: the order itself, then through a real gateway on loopback."""

from __future__ import annotations

import httpx
import modelbroker_prompt_size as prompt_size
import pytest

from modelbroker._config.loading import parse_config
from modelbroker._config.providers import ProviderConfig
from modelbroker._routing.types import ChatRequest
from modelbroker.testing import GatewayServer

SMALL = ProviderConfig(name="small", endpoint="http://x", model="s", context_window=8192, cost_per_1k_tokens=0.0001)
LARGE = ProviderConfig(name="large", endpoint="http://x", model="l", context_window=128000, cost_per_1k_tokens=0.01)
NO_WINDOW = ProviderConfig(name="nowin", endpoint="http://x", model="n", cost_per_1k_tokens=0.5)

#: 4 characters are one token in the gateway's estimate: this prompt is 500 tokens.
LONG = "abcd" * 500
SHORT = "abcd" * 499


def ask(prompt: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": prompt}])


def config(threshold: object = 500):
    return parse_config(f"plugins:\n  prompt_size:\n    threshold_tokens: {threshold}\n")


# --- the order, as plain function calls --------------------------------------------------------


def test_declines_other_strategies():
    assert prompt_size.select_provider(ask("hi"), [SMALL, LARGE], "priority", config()) is None


def test_short_prompt_smallest_first_long_prompt_largest_first():
    providers = [LARGE, NO_WINDOW, SMALL]
    assert prompt_size.select_provider(ask(SHORT), providers, "prompt_size", config()) == [NO_WINDOW, SMALL, LARGE]
    assert prompt_size.select_provider(ask(LONG), providers, "prompt_size", config()) == [LARGE, SMALL, NO_WINDOW]


def test_all_messages_count_towards_the_size():
    request = ChatRequest(messages=[{"role": "system", "content": "abcd" * 300},
                                    {"role": "user", "content": "abcd" * 300}])
    assert prompt_size.select_provider(request, [SMALL, LARGE], "prompt_size", config()) == [LARGE, SMALL]


def test_price_breaks_a_tie_of_context_windows_then_priority():
    cheap = SMALL.model_copy(update={"name": "cheap", "id": "cheap"})
    dear = SMALL.model_copy(update={"name": "dear", "id": "dear", "cost_per_1k_tokens": 0.002})
    first = SMALL.model_copy(update={"name": "first", "id": "first", "priority": -1})
    assert prompt_size.order([dear, cheap, first], long=False) == [first, cheap, dear]
    assert prompt_size.order([cheap, first, dear], long=True) == [dear, first, cheap]


def test_threshold_comes_from_the_config():
    assert prompt_size.threshold(parse_config("")) == prompt_size.DEFAULT_THRESHOLD
    assert prompt_size.threshold(config(20)) == 20
    assert prompt_size.select_provider(ask("abcd" * 20), [SMALL, LARGE], "prompt_size", config(20)) == [LARGE, SMALL]


@pytest.mark.parametrize("bad", ["lots", 0, -5, 2.5, "true"])
def test_a_bad_threshold_is_refused_with_the_setting_named(bad):
    with pytest.raises(ValueError, match="plugins.prompt_size.threshold_tokens must be a whole number above 0"):
        prompt_size.threshold(config(bad))


def test_after_a_bad_reload_the_default_is_used_with_a_warning(caplog):
    prompt_size._warn_once.cache_clear()  # it warns once per message and process
    assert prompt_size.select_provider(ask(SHORT), [LARGE, SMALL], "prompt_size", config("lots")) == [SMALL, LARGE]
    assert prompt_size.select_provider(ask(LONG), [SMALL, LARGE], "prompt_size", config("lots")) == [LARGE, SMALL]
    assert "threshold_tokens must be a whole number above 0, got 'lots'; using 500" in caplog.text


# --- through a gateway -------------------------------------------------------------------------


def post(gw: GatewayServer, prompt: str) -> httpx.Response:
    answer = httpx.post(gw.url + "/generate", json={"prompt": prompt}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer


def test_gateway_routes_by_prompt_size(write_config, upstream):
    with GatewayServer(write_config()) as gw:
        assert post(gw, "Hello").headers["x-modelbroker-provider"] == "small/small-model"
        assert post(gw, SHORT).headers["x-modelbroker-provider"] == "small/small-model"
        assert post(gw, LONG).headers["x-modelbroker-provider"] == "large/large-model"
        chat = httpx.post(gw.url + "/v1/chat/completions", timeout=10, json={
            "messages": [{"role": "system", "content": SHORT}, {"role": "user", "content": "Summarise this."}],
        })
    assert chat.status_code == 200, chat.text
    assert chat.headers["x-modelbroker-provider"] == "large/large-model"
    assert dict(upstream.calls) == {"small-model": 2, "large-model": 2}


def test_a_long_prompt_falls_back_to_the_small_model(write_config, upstream):
    upstream.set_behavior("large-model", {"kind": "status", "status": 503})
    with GatewayServer(write_config()) as gw:
        answer = post(gw, LONG)
    assert answer.headers["x-modelbroker-provider"] == "small/small-model"
    assert answer.json()["attempts"] == 2


def test_a_reload_applies_a_new_threshold_at_once(write_config):
    path = write_config(500)
    with GatewayServer(path) as gw:
        assert post(gw, "abcd" * 10).headers["x-modelbroker-provider"] == "small/small-model"
        path.write_text(path.read_text().replace("threshold_tokens: 500", "threshold_tokens: 10"))
        assert httpx.post(gw.url + "/admin/reload", timeout=10).status_code == 200
        assert post(gw, "abcd" * 10).headers["x-modelbroker-provider"] == "large/large-model"
