"""core/_config/prices.py and catalogue.py: a provider's prices from providers.yaml or from
genai-prices, checked against genai-prices' own calc_price for the same usage."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone

import genai_prices
import pytest

from modelbroker import Usage, cost_of
from modelbroker._config.loading import parse_config


def provider(entry: str):
    return parse_config(textwrap.dedent(f"providers:\n  - {entry}\n"), environ={}).providers[0]


def genai_cost(vendor: str, model: str, usage: Usage, when: datetime | None = None) -> float:
    tokens = genai_prices.Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
                                cache_read_tokens=usage.cached_tokens,
                                output_reasoning_tokens=usage.reasoning_tokens)
    return float(genai_prices.calc_price(tokens, model, provider_id=vendor, genai_request_timestamp=when).total_price)


@pytest.mark.parametrize(("vendor", "model", "usage"), [
    ("openai", "gpt-4o-mini", Usage(1200, 300, 1500)),
    ("openai", "gpt-4o-mini", Usage(1200, 300, 1500, cached_tokens=1024)),
    ("openai", "o3-mini", Usage(500, 2000, 2500, reasoning_tokens=1500)),
    ("anthropic", "claude-3-5-haiku-latest", Usage(4000, 100, 4100, cached_tokens=3000)),
    ("google", "gemini-2.5-pro", Usage(1000, 100, 1100)),
    ("google", "gemini-2.5-pro", Usage(250_000, 100, 250_100, cached_tokens=100_000)),  # the tier above 200k
    ("groq", "llama-3.1-8b-instant", Usage(800, 200, 1000)),
    ("mistral", "mistral-large-latest", Usage(800, 200, 1000)),
])
def test_the_catalogues_price_is_genai_prices_calc_price(vendor, model, usage):
    p = provider(f"{{name: p, endpoint: 'http://127.0.0.1:9/v1', model: {model}, vendor: {vendor}}}")
    assert p.prices.source.startswith(f"genai-prices {genai_prices.__version__} ({vendor}/")
    assert cost_of(p, usage) == pytest.approx(genai_cost(vendor, model, usage), rel=1e-12)
    assert cost_of(p, usage) > 0


@pytest.mark.parametrize("when", [
    datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc),   # within the day's window
    datetime(2026, 12, 7, 20, 0, tzinfo=timezone.utc),  # off-peak
])
def test_a_price_by_the_time_of_day(when):
    p = provider("{name: d, endpoint: 'https://api.deepseek.com/v1/chat/completions', model: deepseek-chat}")
    usage = Usage(10_000, 1000, 11_000, cached_tokens=4000)
    assert p.prices.cost(usage, when) == pytest.approx(genai_cost("deepseek", "deepseek-chat", usage, when), rel=1e-12)


def test_the_vendor_from_the_endpoints_address():
    for endpoint, vendor in [("https://api.openai.com/v1/chat/completions", "openai"),
                             ("https://api.groq.com/openai/v1/chat/completions", "groq"),
                             ("https://api.anthropic.com/v1/messages", "anthropic"),
                             ("https://generativelanguage.googleapis.com/v1beta/models", "google"),
                             ("https://openrouter.ai/api/v1/chat/completions", "openrouter")]:
        model = {"anthropic": "claude-3-5-haiku-latest", "google": "gemini-2.5-flash",
                 "groq": "llama-3.1-8b-instant", "openrouter": "openai/gpt-4o-mini"}.get(vendor, "gpt-4o-mini")
        p = provider(f"{{name: p, endpoint: '{endpoint}', model: '{model}'}}")
        assert p.prices.source.startswith(f"genai-prices {genai_prices.__version__} ({vendor}/"), endpoint


def test_a_vendor_known_by_another_name():
    p = provider("{name: p, endpoint: 'http://127.0.0.1:9/v1', model: gpt-4o-mini, vendor: OpenAI}")
    assert p.vendor == "openai"


def test_prices_in_providers_yaml_win():
    usage = Usage(1000, 1000, 2000, cached_tokens=500)
    total = provider("{name: p, endpoint: 'https://api.openai.com/v1', model: gpt-4o-mini, cost_per_1k_tokens: 0.002}")
    assert total.prices.source == "providers.yaml" and cost_of(total, usage) == pytest.approx(0.004)
    split = provider("{name: p, endpoint: 'https://api.openai.com/v1', model: gpt-4o-mini, vendor: openai, "
                     "cost_per_1k_input_tokens: 0.001, cost_per_1k_output_tokens: 0.003, "
                     "cost_per_1k_cached_input_tokens: 0.0001}")
    assert split.prices.source == "providers.yaml"
    assert cost_of(split, usage) == pytest.approx((500 * 0.001 + 500 * 0.0001 + 1000 * 0.003) / 1000)
    assert (split.input_price, split.output_price) == (0.001, 0.003)


def test_an_unknown_model_of_a_known_vendor_costs_0():
    p = provider("{name: p, endpoint: 'https://api.openai.com/v1/chat/completions', model: gpt-nonesuch}")
    assert p.prices.source == "unknown: costs 0" and cost_of(p, Usage(100, 100, 200)) == 0
    assert p.unpriced == f"genai-prices {genai_prices.__version__} does not know model 'gpt-nonesuch' of vendor 'openai'"


def test_the_catalogue_is_never_fetched(monkeypatch):
    # genai-prices can replace its data with a download (UpdatePrices); the gateway reads only the bundled data,
    # even when some other code in the process set a snapshot of its own.
    from genai_prices import data_snapshot

    monkeypatch.setattr(data_snapshot, "_custom_snapshot", data_snapshot.DataSnapshot([], from_auto_update=True))
    p = provider("{name: p, endpoint: 'http://127.0.0.1:9/v1', model: gpt-4o, vendor: openai}")
    assert p.prices.rates().input > 0


def test_a_copy_with_another_price_has_that_price():
    p = provider("{name: p, endpoint: 'http://127.0.0.1:9/v1', model: gpt-4o-mini, vendor: openai}")
    dear = p.model_copy(update={"cost_per_1k_tokens": 0.002})
    assert dear.prices.source == "providers.yaml" and cost_of(dear, Usage(500, 500, 1000)) == pytest.approx(0.002)
    assert p.model_copy(update={"priority": 3}).prices is p.prices


def test_check_shows_each_providers_prices_and_their_source(tmp_path):
    from modelbroker._cli.report import check_config
    from modelbroker._config.settings import Settings

    path = tmp_path / "providers.yaml"
    path.write_text(textwrap.dedent("""\
        providers:
          - {name: openai, endpoint: "https://api.openai.com/v1/chat/completions", model: gpt-4o-mini}
          - {name: gem, type: gemini, api_key: k, endpoint: "https://generativelanguage.googleapis.com/v1beta/models",
             model: gemini-2.5-pro}
          - {name: local, endpoint: "http://localhost:11434/v1/chat/completions", model: llama3.2}
          - {name: groq, endpoint: "https://api.groq.com/openai/v1/chat/completions", model: llama-3.1-8b-instant,
             cost_per_1k_input_tokens: 0.00005, cost_per_1k_output_tokens: 0.00008}
        """))
    report = check_config(Settings(config=path))
    assert not report.problems
    table = report.text.split("Prices per 1M tokens:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    version = genai_prices.__version__
    assert [line.split(None, 4) for line in table[2:]] == [
        ["openai/gpt-4o-mini", "0.15", "0.6", "0.075", f"genai-prices {version} (openai/gpt-4o-mini)"],
        ["gem/gemini-2.5-pro", "1.25", "10", "0.125",
         f"genai-prices {version} (google/gemini-2.5-pro); more above 200,000 prompt tokens"],
        ["local/llama3.2", "0", "0", "0", "unknown: costs 0"],
        ["groq/llama-3.1-8b-instant", "0.05", "0.08", "0.05", "providers.yaml"],
    ]
    assert table[0].split() == ["provider", "input", "output", "cached", "input", "source"]
