"""Plugin ``keys``: client API keys, with budgets, rate limits and allowed models per key.

With no key in the table the gateway is open (but /admin/* answers only this
machine). Once one exists, every route but /health and its probes needs ``Authorization: Bearer <key>``,
and /admin/*, /dashboard, every client's /usage and /metrics need an admin key
(``keys create --admin``; /metrics stays open with ``MODELBROKER_METRICS_PUBLIC=true``).
Keys live, hashed, in the ledger's database
(``store.py``); the gateway keeps them in memory, re-read every ``refresh_s``
seconds (``cache.py``); spend and rates are counted in the shared state
(``limits.py``); ``modelbroker keys create|list|revoke`` manages them
(``cli.py``). docs/security.md has the model and the rules.

providers.yaml::

    plugins:
      keys:
        refresh_s: 2      # seconds between two reads of the key table
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelbroker import hookimpl
from modelbroker.plugins.keys.cache import DEFAULT_REFRESH_S
from modelbroker.plugins.keys.guard import GUARD_NAME, KeyGuard
from modelbroker.plugins.keys.limits import Limits
from modelbroker.plugins.storage.location import database_url, sqlite_path
from modelbroker.plugins.storage.shared import shared_database

__all__ = ["GUARD_NAME", "KeyGuard", "on_startup", "register_commands"]

NAME = "keys"


class KeysSettings(BaseModel):
    """``plugins: keys:``."""

    model_config = ConfigDict(extra="forbid")

    refresh_s: float = Field(default=DEFAULT_REFRESH_S, gt=0, allow_inf_nan=False,
                             description="seconds between two reads of the key table")

    @field_validator("refresh_s", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("must be a number of seconds above 0, not true or false")
        return value


@hookimpl
def register_settings(register):
    register(NAME, KeysSettings)


@hookimpl
def on_startup(pm, settings, config, state):
    """Register this gateway's key guard and start it (key table read, spend seeded)."""
    refresh_s = config.plugins.settings_for(NAME).refresh_s
    url = database_url(settings)
    guard = KeyGuard(shared_database(url), Limits(state), refresh_s=refresh_s, sqlite_file=sqlite_path(url),
                     metrics_public=settings.metrics_public)
    pm.register(guard, name=GUARD_NAME)
    return guard.start()


@hookimpl
def register_commands(commands):
    from modelbroker.plugins.keys.cli import add_commands

    add_commands(commands)
