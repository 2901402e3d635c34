"""Process settings, read from ``MODELBROKER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything that is not in providers.yaml.

    ``MODELBROKER_CONFIG`` is the path of providers.yaml; ``MODELBROKER_LOG_FILE``
    the JSON-lines log of every attempt (empty to turn it off).
    """

    model_config = SettingsConfigDict(env_prefix="MODELBROKER_", extra="ignore")

    config: Path = Path("providers.yaml")
    log_file: str = "app.log"
    host: str = "127.0.0.1"
    port: int = 8000
    disabled_plugins: list[str] = []
    max_body_bytes: int = 1024 * 1024
    graceful_shutdown_s: float = 30.0
