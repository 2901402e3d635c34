"""Process settings, read from ``MODELBROKER_*`` environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Copies of a request body the gateway holds at once while it forwards it (the parsed JSON
#: and the upstream request built from it, twice): the budget for bodies in flight charges
#: each body this many times its size (docs/reliability.md, 'Request bodies').
BODY_COPIES = 3


class Settings(BaseSettings):
    """Everything that is not in providers.yaml.

    ``MODELBROKER_CONFIG`` is the path of providers.yaml; ``MODELBROKER_LOG_FILE``
    the JSON-lines log of every attempt (empty to turn it off).
    """

    model_config = SettingsConfigDict(env_prefix="MODELBROKER_", extra="ignore")

    config: Path = Path("providers.yaml")
    log_file: str = "app.log"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    disabled_plugins: Annotated[list[str], NoDecode] = []
    #: The largest request body (20 MiB: a few images inline, base64); the memory bodies in
    #: flight may take together, each charged BODY_COPIES times its size
    #: (core/_server/body_rules.py). Past them: 413, 503.
    max_body_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_bodies_in_flight_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    graceful_shutdown_s: float = Field(default=30.0, ge=0)
    #: The URLs may carry a password: kept out of repr() (a plugin that logs its settings).
    redis_url: str = Field(default="", repr=False)
    #: The usage ledger (plugins/ledger). Empty: an SQLite file, modelbroker.db, beside app.log.
    database_url: str = Field(default="", repr=False)
    ledger_spill_file: str = ""
    ledger_max_queue: int = 100_000
    ledger_batch_size: int = 500
    ledger_flush_interval_s: float = 0.5
    #: Freeze what startup made and collect young objects less often (core/_server/heap.py).
    gc_tuning: bool = True
    #: uvicorn's line per HTTP request on stderr (core/_server/access_log.py); app.log has every attempt.
    access_log: bool = False
    #: What upstream calls go through (core/_upstream/transport.py): the gateway's own HTTP/1.1
    #: client, or aiohttp's.
    upstream_transport: Literal["http1", "aiohttp"] = "http1"
    #: Browser origins allowed to call the gateway (CORS); empty: none. ``*`` allows any page.
    cors_origins: Annotated[list[str], NoDecode] = []
    #: /metrics without a key even once client keys exist (else it needs an admin key then).
    metrics_public: bool = False
    #: ``modelbroker serve``'s worker processes; each has its own state unless MODELBROKER_REDIS_URL is set.
    workers: int = Field(default=1, ge=1)
    #: Apply a change to providers.yaml as it is saved (core/_server/config_watch.py); on by default
    #: under a reloading development server (``modelbroker serve --reload``, ``uvicorn main:app --reload``).
    watch_config: bool = False

    @field_validator("max_bodies_in_flight_bytes")
    @classmethod
    def _room_for_the_largest_body(cls, value: int, info: ValidationInfo) -> int:
        """A budget smaller than one largest body's charge would refuse that body forever."""
        largest = info.data.get("max_body_bytes")
        if largest is not None and value < BODY_COPIES * largest:
            raise ValueError(f"must be at least {BODY_COPIES} x MODELBROKER_MAX_BODY_BYTES ({BODY_COPIES * largest}): "
                             f"each body is charged {BODY_COPIES} times its size, and the largest must fit")
        return value

    @field_validator("disabled_plugins", "cors_origins", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        """``cost,latency`` or ``["cost", "latency"]`` (origins alike)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError('a JSON list such as ["cost", "latency"], or names joined by commas: '
                                     "cost,latency") from None
            return [name.strip() for name in text.split(",") if name.strip()]
        return value


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value raises ConfigError naming the variable."""
    from pydantic import ValidationError

    from modelbroker._config.messages import ConfigError, message

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [
            f"MODELBROKER_{str(error['loc'][0]).upper()}: {message(error)}"
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise ConfigError("; ".join(lines)) from None
