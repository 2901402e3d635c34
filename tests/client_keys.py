"""Client keys written straight into a gateway's database, for the tests of every plugin that
meets keys (keys, cache, responses, dashboard): one helper, not a copy per folder."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from modelbroker.plugins.keys.keygen import hash_key, key_prefix, new_key
from modelbroker.plugins.keys.store import ClientKey, insert_key, migrate
from modelbroker.plugins.storage.database import open_database


def add_key(url: str, name: str, **limits) -> str:
    """Store a key called ``name`` with ``limits`` in the database at ``url``; return the key."""
    key = new_key()
    if "models" in limits and limits["models"] is not None:
        limits["models"] = tuple(limits["models"])
    row = ClientKey(name=name, prefix=key_prefix(key), key_hash=hash_key(key),
                    created_at=datetime.now(timezone.utc), **limits)

    async def write() -> None:
        db = open_database(url)
        try:
            await migrate(db)
            await insert_key(db, row)
        finally:
            await db.close()

    asyncio.run(write())
    return key
