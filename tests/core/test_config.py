"""core/_config/: providers.yaml parsing, ${VAR} interpolation, messages that say where."""

from __future__ import annotations

import textwrap

import pytest

from modelbroker._config.loading import load_config, parse_config
from modelbroker._config.messages import ConfigError

SECRET = "sk-config-test-7f3a9c2e1b5d4a60"


def parse(text: str, environ: dict[str, str] | None = None, label: str = "providers.yaml"):
    return parse_config(textwrap.dedent(text), label=label, environ=environ or {})


def error_of(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text, environ)
    return str(caught.value)


GOOD_ENTRY = """\
  - name: good
    endpoint: http://127.0.0.1:9/v1/chat/completions
    model: m0
    cost_per_1k_tokens: 0.001
"""


# --- a valid file ------------------------------------------------------------------------


def test_minimal_provider_gets_defaults():
    config = parse(
        """
        providers:
          - name: local
            endpoint: http://127.0.0.1:8001/v1/chat/completions
            model: tiny
            cost_per_1k_tokens: 0
        """
    )
    (p,) = config.providers
    assert (p.id, p.type, p.priority, p.enabled) == ("local/tiny", "openai", 0, True)
    assert (p.input_price, p.output_price) == (0.0, 0.0)
    assert p.api_key is None
    assert config.strategy == "priority"
    assert config.warnings == []


def test_split_prices_and_explicit_id():
    config = parse(
        """
        strategy: cost
        providers:
          - name: big
            id: big-one
            endpoint: https://example.invalid/v1/chat/completions
            model: large
            cost_per_1k_input_tokens: 0.5
            cost_per_1k_output_tokens: 1.5
            timeout_s: 0.5
        """
    )
    (p,) = config.providers
    assert p.id == "big-one"
    assert (p.input_price, p.output_price) == (0.5, 1.5)
    assert p.timeout_s == 0.5
    assert config.strategy == "cost"


def test_empty_file_has_no_provider():
    assert parse("").providers == []
    assert parse("# only a comment\n").providers == []


def test_two_entries_may_share_a_name_when_models_differ():
    config = parse(
        """
        providers:
          - {name: groq, endpoint: "http://h/v1", model: a, cost_per_1k_tokens: 1}
          - {name: groq, endpoint: "http://h/v1", model: b, cost_per_1k_tokens: 1}
        """
    )
    assert [p.id for p in config.providers] == ["groq/a", "groq/b"]


def test_plugins_block_gives_each_plugin_its_settings():
    config = parse(
        """
        plugins:
          disabled: [cost]
          file_log: {include_prompts: true}
        """
    )
    assert config.plugins.disabled == ["cost"]
    assert config.plugins.settings_for("file_log") == {"include_prompts": True}
    assert config.plugins.settings_for("other") == {}


# --- every error names the file, the entry and the field ------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "- {name: b, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1, priority: high}",
            "providers.yaml: providers[1].priority: must be an integer",
        ),
        (
            "- {name: b, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1, priority: 1.5}",
            "providers.yaml: providers[1].priority: must be an integer",
        ),
        (
            "- {name: b, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: cheap}",
            "providers.yaml: providers[1].cost_per_1k_tokens: must be a number",
        ),
        (
            "- {name: b, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: -1}",
            "providers.yaml: providers[1].cost_per_1k_tokens: must be >= 0",
        ),
        (
            "- {name: b, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1, timeout_s: 0}",
            "providers.yaml: providers[1].timeout_s: must be > 0",
        ),
        (
            "- {name: b, endpoint: 'http://h/v1', cost_per_1k_tokens: 1}",
            "providers.yaml: providers[1].model: is required",
        ),
        (
            "- {name: '', endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1}",
            "providers.yaml: providers[1].name: must not be empty",
        ),
        (
            "- {name: b, endpoint: 'ftp://h/v1', model: m, cost_per_1k_tokens: 1}",
            "providers.yaml: providers[1]: endpoint must be an http:// or https:// URL",
        ),
        (
            "- {name: b, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1, api_key: [a, b]}",
            "providers.yaml: providers[1].api_key: must be a string",
        ),
        (
            "- {name: b, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1, enabled: maybe}",
            "providers.yaml: providers[1].enabled: must be true or false",
        ),
        ("- just a string", "providers.yaml: providers[1]: must be a mapping"),
    ],
)
def test_field_errors_name_file_entry_and_field(entry, expected):
    message = error_of("providers:\n" + GOOD_ENTRY + "  " + entry + "\n")
    assert message.startswith(expected), message


def test_provider_error_also_names_the_provider():
    message = error_of(
        "providers:\n" + GOOD_ENTRY
        + "  - {name: backup, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1, priority: x}\n"
    )
    assert message == "providers.yaml: providers[1].priority: must be an integer (provider 'backup')"


def test_every_problem_gets_its_own_line():
    message = error_of(
        """
        providers:
          - {name: a, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1, priority: x}
          - {name: b, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1, timeout_s: slow}
        """
    )
    lines = message.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("providers.yaml: providers[0].priority: must be an integer")
    assert lines[1].startswith("providers.yaml: providers[1].timeout_s: must be a number")


def test_message_uses_the_files_own_name(tmp_path):
    path = tmp_path / "staging.yaml"
    path.write_text("providers:\n  - {name: a, endpoint: 'http://h', model: m, cost_per_1k_tokens: 1, priority: x}\n")
    with pytest.raises(ConfigError, match=r"^staging\.yaml: providers\[0\]\.priority: must be an integer"):
        load_config(path, environ={})


def test_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "providers.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing, environ={})
    message = str(caught.value)
    assert message.startswith(f"{missing}: file not found")
    assert "MODELBROKER_CONFIG" in message


def test_invalid_yaml_names_the_line():
    message = error_of(
        """\
        providers:
          - name: a
            endpoint: [unclosed
            model: m
        """
    )
    assert message.startswith("providers.yaml: not valid YAML: line ")
    assert "line 4" in message or "line 3" in message, message


def test_invalid_yaml_line_number_is_exact():
    message = error_of("providers:\n  - name: a\n\tmodel: m\n")
    assert message.startswith("providers.yaml: not valid YAML: line 3, column 1:"), message


def test_top_level_must_be_a_mapping():
    assert error_of("- a\n- b\n").startswith("providers.yaml: the top level must be a mapping")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "providers:\n" + GOOD_ENTRY + "    api_base: http://elsewhere\n",
            "providers.yaml: providers[0].api_base: unknown field",
        ),
        ("stratgy: cost\n", "providers.yaml: stratgy: unknown field"),
        # fields the gateway fills in itself are not for providers.yaml
        ("source: mine.yaml\nproviders:\n" + GOOD_ENTRY, "providers.yaml: source: unknown field"),
        ("warnings: []\n", "providers.yaml: warnings: unknown field"),
        (
            "providers:\n" + GOOD_ENTRY + "    disabled_reason: maintenance\n",
            "providers.yaml: providers[0].disabled_reason: unknown field",
        ),
    ],
)
def test_unknown_field(text, expected):
    message = error_of(text)
    assert message.startswith(expected), message
    assert "check its spelling" in message


def test_duplicate_id():
    message = error_of(
        """
        providers:
          - {name: a, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1}
          - {name: b, endpoint: 'http://h/v1', model: n, cost_per_1k_tokens: 1}
          - {name: a, endpoint: 'http://other/v1', model: m, cost_per_1k_tokens: 2}
        """
    )
    assert message.startswith("providers.yaml: providers[2]: id 'a/m' is already used by providers[0]")
    assert "id:" in message


def test_duplicate_explicit_id():
    message = error_of(
        """
        providers:
          - {name: a, id: main, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1}
          - {name: b, id: main, endpoint: 'http://h/v1', model: n, cost_per_1k_tokens: 1}
        """
    )
    assert message.startswith("providers.yaml: providers[1]: id 'main' is already used by providers[0]")


def test_a_provider_no_one_knows_the_price_of_costs_0_with_one_warning():
    config = parse(
        """
        providers:
          - {name: local, endpoint: 'http://localhost:11434/v1/chat/completions', model: llama3.2}
          - {name: free, endpoint: 'http://localhost:11434/v1/chat/completions', model: m, cost_per_1k_tokens: 0}
        """
    )
    local, free = config.providers
    assert local.prices.source == "unknown: costs 0" and local.input_price == local.output_price == 0
    assert config.warnings == [
        "providers.yaml: providers[0] (local/llama3.2): model 'llama3.2' costs 0: no vendor (the endpoint's "
        "address is none genai-prices knows; vendor: names one); give its price with cost_per_1k_tokens, or "
        "cost_per_1k_input_tokens and cost_per_1k_output_tokens (cost_per_1k_tokens: 0 for a free model)"
    ]
    assert free.prices.source == "providers.yaml" and not free.unpriced


def test_unknown_vendor():
    message = error_of(
        """
        providers:
          - {name: a, endpoint: 'http://h/v1', model: m, vendor: openia}
        """
    )
    assert message.startswith("providers.yaml: providers[0].vendor: unknown vendor 'openia'; genai-prices ")
    assert "anthropic, " in message and "openai, " in message and message.endswith("(provider 'a')")


def test_a_cached_price_needs_a_price_beside_it():
    message = error_of(
        """
        providers:
          - {name: a, endpoint: 'http://h/v1', model: m, cost_per_1k_cached_input_tokens: 0.001}
        """
    )
    assert message.startswith("providers.yaml: providers[0]: cost_per_1k_cached_input_tokens needs "
                              "cost_per_1k_tokens, or cost_per_1k_input_tokens and cost_per_1k_output_tokens")


def test_half_a_split_price():
    message = error_of(
        """
        providers:
          - {name: a, endpoint: 'http://h/v1', model: m, cost_per_1k_input_tokens: 1}
        """
    )
    assert message.startswith("providers.yaml: providers[0]: give both cost_per_1k_input_tokens")


# --- ${VAR} interpolation --------------------------------------------------------------


ENV_ENTRY = """
providers:
  - name: a
    endpoint: "${HOST:-http://127.0.0.1:9}/v1/chat/completions"
    model: "${MODEL:-small}"
    cost_per_1k_tokens: 0.001
    api_key: "${A_KEY}"
"""


def test_variable_set():
    config = parse(ENV_ENTRY, {"A_KEY": SECRET, "HOST": "https://api.example", "MODEL": "big"})
    (p,) = config.providers
    assert p.enabled
    assert p.api_key.get_secret_value() == SECRET
    assert p.endpoint == "https://api.example/v1/chat/completions"
    assert p.model == "big"
    assert config.warnings == []


def test_variable_default_used_when_unset():
    config = parse(ENV_ENTRY, {"A_KEY": SECRET})
    (p,) = config.providers
    assert p.endpoint == "http://127.0.0.1:9/v1/chat/completions"
    assert p.model == "small"
    assert p.id == "a/small"


def test_interpolated_numbers_are_validated_as_numbers():
    config = parse(
        """
        providers:
          - {name: a, endpoint: 'http://h/v1', model: m, priority: "${PRIO:-2}", cost_per_1k_tokens: "${PRICE}",
             timeout_s: "${TIMEOUT:-0.5}"}
        """,
        {"PRICE": "0.25"},
    )
    (p,) = config.providers
    assert (p.priority, p.cost_per_1k_tokens, p.timeout_s) == (2, 0.25, 0.5)
    message = error_of(
        """
        providers:
          - {name: a, endpoint: 'http://h/v1', model: m, priority: "${PRIO}", cost_per_1k_tokens: 1}
        """,
        {"PRIO": "high"},
    )
    assert message.startswith("providers.yaml: providers[0].priority: must be an integer")


def test_variable_unset_disables_the_provider_with_a_warning():
    config = parse(
        """
        providers:
          - {name: a, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1, api_key: "${A_KEY}"}
          - {name: b, endpoint: 'http://h/v1', model: n, cost_per_1k_tokens: 1, api_key: "${B_KEY}"}
        """,
        {"B_KEY": "set"},
    )
    a, b = config.providers
    assert not a.enabled and b.enabled
    assert "A_KEY" in a.disabled_reason
    assert [p.id for p in config.enabled_providers] == ["b/n"]
    (warning,) = config.warnings
    assert "providers[0]" in warning and "a/m" in warning and "A_KEY" in warning and "disabled" in warning


def test_every_unset_variable_is_named_once():
    config = parse(
        """
        providers:
          - name: a
            endpoint: "http://h/${PATH_PART}"
            model: m
            cost_per_1k_tokens: 1
            api_key: "${A_KEY}"
            options: {org: "${A_KEY}"}
        """
    )
    (warning,) = config.warnings
    assert "PATH_PART, A_KEY" in warning


def test_unset_variable_in_the_endpoint_disables_rather_than_fails():
    # A provider whose variable is unset is disabled with a warning -- also when the
    # variable is (part of) the endpoint, e.g. a local server's address.
    config = parse(
        """
        providers:
          - {name: local, endpoint: "${LOCAL_URL}/v1/chat/completions", model: m, cost_per_1k_tokens: 0}
          - {name: whole, endpoint: "${WHOLE_URL}", model: m, cost_per_1k_tokens: 0}
          - {name: b, endpoint: 'http://h/v1', model: n, cost_per_1k_tokens: 1}
        """
    )
    local, whole, b = config.providers
    assert not local.enabled and "LOCAL_URL" in local.disabled_reason
    assert not whole.enabled and "WHOLE_URL" in whole.disabled_reason
    assert b.enabled
    assert len(config.warnings) == 2


def test_unset_variable_outside_providers_is_an_error():
    message = error_of("strategy: ${STRATEGY}\n")
    assert message.startswith("providers.yaml: strategy: environment variable STRATEGY is not set")


def test_disabled_provider_is_still_validated():
    message = error_of(
        """
        providers:
          - {name: a, endpoint: 'http://h/v1', model: m, api_key: "${A_KEY}", cost_per_1k_input_tokens: 1}
        """
    )
    assert message.startswith("providers.yaml: providers[0]: give both")


# --- the shipped providers.yaml ---------------------------------------------------------


def test_shipped_providers_yaml_parses_unchanged(repo_root):
    config = load_config(repo_root / "providers.yaml", environ={"GROQ_API_KEY": SECRET})
    assert [p.id for p in config.providers] == [
        "groq/deepseek-r1-distill-qwen-32b",
        "groq/llama-3.1-8b-instant",
    ]
    assert all(p.enabled for p in config.providers)
    assert all(p.api_key.get_secret_value() == SECRET for p in config.providers)
    assert [p.priority for p in config.providers] == [2, 1]
    assert config.strategy == "priority"


def test_shipped_providers_yaml_without_key_disables_both(repo_root):
    config = load_config(repo_root / "providers.yaml", environ={})
    assert len(config.providers) == 2
    assert config.enabled_providers == []
    assert len(config.warnings) == 2
    assert all("GROQ_API_KEY" in w for w in config.warnings)


# --- secrets ------------------------------------------------------------------------------


def keyed_config():
    return parse(
        f"""
        providers:
          - {{name: a, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1, api_key: "${{A_KEY}}"}}
          - {{name: b, endpoint: 'http://h/v1', model: n, cost_per_1k_tokens: 1, api_key: "{SECRET}"}}
        """,
        {"A_KEY": SECRET},
    )


def test_secretstr_masks_the_key_everywhere_but_get_secret_value():
    config = keyed_config()
    for p in config.providers:
        assert p.api_key.get_secret_value() == SECRET
        for text in (repr(p), str(p), repr(p.api_key), str(p.api_key), p.model_dump_json(), str(p.model_dump())):
            assert SECRET not in text
        assert "**" in str(p.api_key)
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert SECRET not in config.model_dump_json()


@pytest.mark.parametrize(
    "bad_field",
    ["priority: x", "timeout_s: never", "unknown_thing: 1", "api_key_2: other"],
)
def test_config_errors_never_show_the_key(bad_field):
    message = error_of(
        f"""
        providers:
          - name: a
            endpoint: http://h/v1
            model: m
            cost_per_1k_tokens: 1
            api_key: "{SECRET}"
            {bad_field}
        """
    )
    assert SECRET not in message
    assert SECRET[:12] not in message


def endpoint_error(endpoint: str) -> str:
    """The message for a provider whose endpoint is ``endpoint``, with ``${G_KEY}`` set to SECRET."""
    return error_of(
        f"""
        providers:
          - {{name: g, endpoint: "{endpoint}", model: m, cost_per_1k_tokens: 1}}
        """,
        {"G_KEY": SECRET},
    )


@pytest.mark.parametrize(
    "endpoint",
    ["htps://gen.example/v1/models/m:generate?key=${G_KEY}", "ftp://user:${G_KEY}@gen.example/v1", "${G_KEY}@gen.example"],
    ids=["query", "userinfo", "no-scheme"],
)
def test_a_bad_endpoint_is_shown_without_the_credentials_in_it(endpoint):
    message = endpoint_error(endpoint)
    assert message.startswith("providers.yaml: providers[0]: endpoint must be an http:// or https:// URL, got ")
    assert "gen.example" in message
    assert SECRET not in message


@pytest.mark.parametrize("endpoint", [SECRET, "${G_KEY}"], ids=["pasted", "interpolated"])
def test_a_key_in_the_endpoint_field_is_not_echoed(endpoint):
    message = endpoint_error(endpoint)
    assert message.startswith("providers.yaml: providers[0]: endpoint must be an http:// or https:// URL, got a value "
                              "that is not shown"), message
    assert SECRET not in message and SECRET[:8] not in message


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("http:///v1/chat?key=${G_KEY}", "endpoint has no host: write it as http://host[:port]/path"),
    ("http://h:${G_KEY}/v1", "endpoint is not a URL that parses (is its port a number from 0 to 65535?)"),
], ids=["no-host", "port"])
def test_an_http_endpoint_without_a_host_or_with_a_bad_port_is_refused_unshown(endpoint, expected):
    message = endpoint_error(endpoint)
    assert message.startswith(f"providers.yaml: providers[0]: {expected}"), message
    assert SECRET not in message and SECRET[:8] not in message


def test_key_of_wrong_type_is_not_echoed():
    message = error_of(
        f"""
        providers:
          - {{name: a, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1, api_key: ["{SECRET}"]}}
        """
    )
    assert message.startswith("providers.yaml: providers[0].api_key: must be a string")
    assert SECRET not in message


# --- what YAML allows and a providers.yaml must not do --------------------------------------------


def test_a_key_given_twice_is_refused_where_it_is():
    message = error_of("providers:\n" + GOOD_ENTRY + "    name: other\n")
    assert message == "providers.yaml: not valid YAML: line 6, column 5: 'name' is given twice in one mapping; keep one"


def test_merge_keys_are_no_duplicates():
    config = parse("providers:\n  - &base {name: a, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1}\n"
                   "  - {<<: *base, name: b, model: n}\n")
    assert [p.id for p in config.providers] == ["a/m", "b/n"]


def test_an_alias_inside_its_own_anchor_is_refused():
    assert error_of("providers: &x [*x]\n") == (
        "providers.yaml: providers[0]: a YAML alias refers to a node that holds it")


def test_aliases_that_expand_without_end_are_refused():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    assert error_of("\n".join(lines) + "\n").startswith("providers.yaml: the file expands to more than 100,000 values")


@pytest.mark.parametrize("written", ["${G_KEY", "${ G_KEY }", "${G_KEY:x}", "${1KEY}", "${:-x}"])
def test_a_broken_reference_is_refused_not_sent_as_written(written):
    message = error_of(f"providers:\n{GOOD_ENTRY}    api_key: '{written}'\n", {"G_KEY": SECRET})
    assert message.startswith("providers.yaml: providers[0].api_key: a '${' that starts no valid reference; "
                              "write ${NAME} or ${NAME:-default}"), message
    assert SECRET not in message


def test_a_price_too_large_for_a_float_is_refused():
    message = error_of("providers:\n  - {name: a, endpoint: 'http://h/v1', model: m, cost_per_1k_tokens: 1e400}\n")
    assert message == "providers.yaml: providers[0].cost_per_1k_tokens: must be a finite number (provider 'a')"


def test_a_config_that_is_a_directory_or_not_utf8_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert str(caught.value) == f"{tmp_path}: is a directory; set MODELBROKER_CONFIG to the path of providers.yaml"
    latin = tmp_path / "providers.yaml"
    latin.write_bytes("providers: []\n# café\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(latin)
    assert str(caught.value) == f"{latin}: not UTF-8 text (byte 20 cannot be read); save it as UTF-8"
