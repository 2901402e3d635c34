"""The ``plugins: cache:`` block of providers.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024


class CacheSettings(BaseModel):
    """The response cache's settings; without ``ttl_s`` the cache is off."""

    model_config = ConfigDict(extra="forbid")

    #: Seconds an answer is kept. Set at startup, it turns the cache on.
    ttl_s: float | None = Field(default=None, gt=0)
    #: Serve an answer to every client key, not only to the key whose request made it.
    shared: bool = False
    #: Keep chat answers whatever their sampling; by default only ``temperature`` 0 or a ``seed``.
    cache_all: bool = False
    #: The local store's limit (without Redis): the least recently used answers go first.
    max_bytes: int = Field(default=64 * MIB, gt=0)
    #: An answer larger than this, encoded, is never kept.
    max_entry_bytes: int = Field(default=1 * MIB, gt=0)
