"""The shape of providers.yaml: one model per section, validated by pydantic.

``load_config`` (``_config/loading.py``) reads the file into a ``GatewayConfig``.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from modelbroker._config.prices import UNPRICED, Prices, given_prices


class ProviderConfig(BaseModel):
    """One entry of ``providers:``. Two entries may share a name; ``id`` tells them apart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    endpoint: str = Field(min_length=1)
    model: str = Field(min_length=1)
    priority: int = 0
    cost_per_1k_tokens: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cost_per_1k_input_tokens: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cost_per_1k_output_tokens: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cost_per_1k_cached_input_tokens: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    #: Whose price list the catalogue reads when no price is given (default: from the endpoint).
    vendor: str | None = Field(default=None, min_length=1)
    api_key: SecretStr | None = None
    type: str = "openai"
    #: ``chat`` (chat completions, responses, messages, /generate) or ``embeddings``.
    kind: Literal["chat", "embeddings"] = "chat"
    id: str = ""
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    #: A stream's first content must come within this (default: ``timeout_s``); until then the
    #: request can still fall back. Raise it with ``timeout_s`` for a model that reasons unseen.
    first_token_timeout_s: float | None = Field(default=None, gt=0)
    #: After content, the longest pause between two chunks of a stream.
    stream_idle_timeout_s: float = Field(default=30.0, gt=0)
    enabled: bool = True
    retries: int | None = Field(default=None, ge=0, le=4)
    context_window: int | None = Field(default=None, gt=0)
    weight: float = Field(default=1.0, gt=0)
    max_concurrency: int | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    disabled_reason: str | None = Field(default=None, exclude=True)
    options: dict[str, Any] = Field(default_factory=dict)
    #: Features this provider can or cannot carry beyond what its adapter states
    #: (``{tools: false, images: true}``); see ``_routing/features.py``.
    capabilities: dict[str, bool] = Field(default_factory=dict)
    _prices: Prices = PrivateAttr(default=UNPRICED)
    _unpriced: str = PrivateAttr(default="")

    @field_validator("capabilities")
    @classmethod
    def _known_features(cls, value: dict[str, bool]) -> dict[str, bool]:
        from modelbroker._routing.features import FEATURES

        unknown = sorted(set(value) - set(FEATURES))
        if unknown:
            raise ValueError(f"unknown feature {unknown[0]!r}; the features are: {', '.join(FEATURES)}")
        return value

    @field_validator("vendor")
    @classmethod
    def _known_vendor(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from modelbroker._config import catalogue

        found = catalogue.find_vendor(value)
        if found is None:
            raise ValueError(f"unknown vendor {value!r}; genai-prices {catalogue.version()} knows: "
                             f"{', '.join(catalogue.vendors())}")
        return found

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        # A provider disabled for an unset ${VAR} keeps the ``${VAR}`` text where the
        # value would be, so its endpoint need not be a URL yet.
        if self.disabled_reason is None:
            _check_endpoint(self.endpoint)
        split = (self.cost_per_1k_input_tokens, self.cost_per_1k_output_tokens)
        if (split[0] is None) != (split[1] is None):
            raise ValueError(
                "give both cost_per_1k_input_tokens and cost_per_1k_output_tokens, or neither"
            )
        self._prices, self._unpriced = self._find_prices()
        if not self.id:
            object.__setattr__(self, "id", f"{self.name}/{self.model}")
        return self

    def _find_prices(self) -> tuple[Prices, str]:
        """The prices providers.yaml gives, else the catalogue's (with why they are unknown)."""
        split = (self.cost_per_1k_input_tokens, self.cost_per_1k_output_tokens)
        if self.cost_per_1k_tokens is not None or split[0] is not None:
            return given_prices(self.cost_per_1k_tokens, split, self.cost_per_1k_cached_input_tokens), ""
        if self.cost_per_1k_cached_input_tokens is not None:
            raise ValueError("cost_per_1k_cached_input_tokens needs cost_per_1k_tokens, or "
                             "cost_per_1k_input_tokens and cost_per_1k_output_tokens, beside it")
        from modelbroker._config import catalogue

        return catalogue.lookup(self.model, self.vendor, self.endpoint)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> ProviderConfig:
        """A copy; with ``update``, its prices worked out again if a field they depend on changed."""
        copy = super().model_copy(update=update, deep=deep)
        if update and not _PRICED_BY.isdisjoint(update):
            copy._prices, copy._unpriced = copy._find_prices()
        return copy

    @property
    def prices(self) -> Prices:
        """What this provider's tokens cost, and where that was learnt (``Prices.source``)."""
        return self.__pydantic_private__["_prices"]  # read on every attempt: pydantic's own lookup is slower

    @property
    def unpriced(self) -> str:
        """Why no price is known for this provider (it then costs 0); empty when one is."""
        return self._unpriced

    def secret(self) -> str | None:
        """The API key as text (for the request and for redacting errors), or None."""
        return self.api_key.get_secret_value() if self.api_key else None

    @property
    def input_price(self) -> float:
        """Price of 1,000 prompt tokens (a short prompt's, at this moment)."""
        return self.prices.rates().input

    @property
    def output_price(self) -> float:
        """Price of 1,000 completion tokens (after a short prompt, at this moment)."""
        return self.prices.rates().output


#: The fields a provider's prices are worked out from.
_PRICED_BY = frozenset({"cost_per_1k_tokens", "cost_per_1k_input_tokens", "cost_per_1k_output_tokens",
                        "cost_per_1k_cached_input_tokens", "vendor", "model", "endpoint"})


class ReliabilityConfig(BaseModel):
    """``reliability:``: retries, deadlines and cooldowns. docs/reliability.md explains each default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(default=1, ge=0, le=4)
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_initial_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    request_timeout_s: float = Field(default=120.0, gt=0)
    max_retry_after_wait_s: float = Field(default=10.0, ge=0)
    failure_threshold: int = Field(default=3, ge=1)
    cooldown_s: float = Field(default=30.0, ge=0)
    max_cooldown_s: float = Field(default=300.0, ge=0)
    window: int = Field(default=50, ge=5, le=10000)


class PluginsConfig(BaseModel):
    """``plugins:``: ``disabled`` names plugins not to load; any other key holds one plugin's settings."""

    model_config = ConfigDict(extra="allow")

    disabled: list[str] = Field(default_factory=list)
    #: The blocks that plugins declared a model for (``register_settings``), validated.
    _validated: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    def settings_for(self, name: str) -> Any:
        """The settings block ``name``: an instance of the model a plugin registered for it
        (its defaults if the block is absent), else the block as written, or an empty dict."""
        if name in self._validated:
            return self._validated[name]
        value = (self.model_extra or {}).get(name)
        return value if isinstance(value, dict) else {}


class GatewayConfig(BaseModel):
    """The whole of providers.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: list[ProviderConfig] = Field(default_factory=list)
    strategy: str = "priority"
    reliability: ReliabilityConfig = Field(default_factory=ReliabilityConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    source: str = Field(default="providers.yaml", exclude=True)
    warnings: list[str] = Field(default_factory=list, exclude=True)

    @property
    def enabled_providers(self) -> list[ProviderConfig]:
        return [p for p in self.providers if p.enabled]

    def with_plugin_settings(self, validated: dict[str, BaseModel]) -> GatewayConfig:
        """This config, with the plugins' settings blocks as their models validated them."""
        plugins = self.plugins.model_copy()
        plugins._validated = dict(validated)
        return self.model_copy(update={"plugins": plugins})


def _check_endpoint(endpoint: str) -> None:
    """Raise ValueError unless ``endpoint`` is an http(s) URL with a host (and a numeric port)."""
    try:
        parts = urllib.parse.urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("endpoint is not a URL that parses (is its port a number from 0 to 65535?)") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"endpoint must be an http:// or https:// URL, got {_shown_endpoint(endpoint)}")
    if not parts.hostname:
        raise ValueError(f"endpoint has no host: write it as {parts.scheme}://host[:port]/path")


#: What an endpoint written without (or with a wrong) scheme looks like: a host name or
#: address, a port, a path. Anything else is not echoed: it may be a key in the wrong field.
_HOSTLIKE = re.compile(
    r"(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:localhost|\d{1,3}(?:\.\d{1,3}){3}|(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,63})"
    r"(?::\d{1,5})?(?:/\S*)?"
)


def _shown_endpoint(endpoint: str) -> str:
    """The endpoint for a message: less its query, fragment and ``user:password@`` (where a
    URL may carry a key), and only if the rest looks like a host and a path."""
    shown = re.split(r"[?#]", endpoint, maxsplit=1)[0]
    shown = re.sub(r"^([^/]*//)?[^/@]*@", r"\1", shown)
    if _HOSTLIKE.fullmatch(shown):
        return repr(shown)
    return "a value that is not shown (it does not look like a URL, and may be a key)"
