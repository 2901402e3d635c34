"""Strategy ``prompt_size``: the order itself, then through a real gateway on loopback."""

from __future__ import annotations

import modelbroker_prompt_size as prompt_size
import pytest

from modelbroker import ChatRequest, ConfigError, ProviderConfig
from modelbroker.testing import config_for, registered

SMALL = ProviderConfig(name="small", endpoint="http://x", model="s", context_window=8192, cost_per_1k_tokens=0.0001)
LARGE = ProviderConfig(name="large", endpoint="http://x", model="l", context_window=128000, cost_per_1k_tokens=0.01)
NO_WINDOW = ProviderConfig(name="nowin", endpoint="http://x", model="n", cost_per_1k_tokens=0.5)

#: 4 characters are one token in the gateway's estimate: this prompt is 500 tokens.
LONG = "abcd" * 500
SHORT = "abcd" * 499


def ask(prompt: str) -> ChatRequest:
    return ChatRequest(messages=[{"role": "user", "content": prompt}])


def config(threshold: object = 500):
    return config_for(f"plugins:\n  prompt_size:\n    threshold_tokens: {threshold}\n", prompt_size)


def order(request: ChatRequest, providers: list[ProviderConfig], threshold: object = 500) -> list[ProviderConfig]:
    return prompt_size.PromptSize().select_provider(request, providers, config(threshold))


# --- the order, as plain function calls --------------------------------------------------------


def test_registers_the_strategy_and_its_settings():
    assert registered(prompt_size) == {"prompt_size": prompt_size.PromptSize}
    assert registered(prompt_size, "register_settings") == {"prompt_size": prompt_size.PromptSizeSettings}


def test_short_prompt_smallest_first_long_prompt_largest_first():
    providers = [LARGE, NO_WINDOW, SMALL]
    assert order(ask(SHORT), providers) == [NO_WINDOW, SMALL, LARGE]
    assert order(ask(LONG), providers) == [LARGE, SMALL, NO_WINDOW]


def test_all_messages_count_towards_the_size():
    request = ChatRequest(messages=[{"role": "system", "content": "abcd" * 300},
                                    {"role": "user", "content": "abcd" * 300}])
    assert order(request, [SMALL, LARGE]) == [LARGE, SMALL]


def test_price_breaks_a_tie_of_context_windows_then_priority():
    cheap = SMALL.model_copy(update={"name": "cheap", "id": "cheap"})
    dear = SMALL.model_copy(update={"name": "dear", "id": "dear", "cost_per_1k_tokens": 0.002})
    first = SMALL.model_copy(update={"name": "first", "id": "first", "priority": -1})
    assert prompt_size.order([dear, cheap, first], long=False) == [first, cheap, dear]
    assert prompt_size.order([cheap, first, dear], long=True) == [dear, first, cheap]


def test_threshold_comes_from_the_config():
    assert config_for("", prompt_size).plugins.settings_for("prompt_size").threshold_tokens == 500
    assert order(ask("abcd" * 20), [SMALL, LARGE], threshold=20) == [LARGE, SMALL]


@pytest.mark.parametrize(("bad", "problem"), [
    ("lots", "must be an integer"), (0, "must be >= 1"), (-5, "must be >= 1"), (2.5, "must be an integer"),
    ("'12'", "must be an integer"), ("true", "must be an integer"),
])
def test_a_bad_threshold_is_refused_with_the_setting_named(bad, problem):
    with pytest.raises(ConfigError) as caught:
        config(bad)
    assert str(caught.value) == f"providers.yaml: plugins.prompt_size.threshold_tokens: {problem}"


# --- through a gateway -------------------------------------------------------------------------


def chosen(gw, prompt: str) -> str:
    answer = gw.generate({"prompt": prompt})
    assert answer.status_code == 200, answer.text
    return answer.headers["x-modelbroker-provider"]


def test_gateway_routes_by_prompt_size(gateway, config, fake_upstream):
    gw = gateway(config())
    assert chosen(gw, "Hello") == "small/small-model"
    assert chosen(gw, SHORT) == "small/small-model"
    assert chosen(gw, LONG) == "large/large-model"
    chat = gw.chat([{"role": "system", "content": SHORT}, {"role": "user", "content": "Summarise this."}])
    assert chat.status_code == 200, chat.text
    assert chat.headers["x-modelbroker-provider"] == "large/large-model"
    assert dict(fake_upstream.calls) == {"small-model": 2, "large-model": 2}


def test_a_long_prompt_falls_back_to_the_small_model(gateway, config, fake_upstream):
    fake_upstream.set_behavior("large-model", {"kind": "status", "status": 503})
    gw = gateway(config())
    answer = gw.generate({"prompt": LONG})
    assert answer.headers["x-modelbroker-provider"] == "small/small-model"
    assert answer.json()["attempts"] == 2


def test_a_reload_applies_a_new_threshold_at_once(gateway, config):
    gw = gateway(config(500))
    assert chosen(gw, "abcd" * 10) == "small/small-model"
    gw.config_path.write_text(gw.config_path.read_text().replace("threshold_tokens: 500", "threshold_tokens: 10"))
    assert gw.post("/admin/reload").status_code == 200
    assert chosen(gw, "abcd" * 10) == "large/large-model"


def test_a_reload_with_a_bad_threshold_is_refused_and_the_old_one_stays(gateway, config):
    gw = gateway(config(10))
    gw.config_path.write_text(gw.config_path.read_text().replace("threshold_tokens: 10", "threshold_tokens: lots"))
    refused = gw.post("/admin/reload")
    assert refused.status_code == 400
    assert "plugins.prompt_size.threshold_tokens: must be an integer" in refused.json()["error"]["message"]
    assert chosen(gw, "abcd" * 10) == "large/large-model"
