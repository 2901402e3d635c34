"""The key table in memory, by hash, re-read from the database every ``refresh_s`` seconds.

``authenticate`` runs on every request and must not touch the database: it
looks the presented key up here. The CLI creates and revokes keys in another
process; re-reading the (small) table every couple of seconds makes that take
effect within ``refresh_s``. If the database goes away after the first read,
the last table read stays in force (a revocation made during the outage takes
effect when it is back); before the first read, ``loaded`` is false and the
gateway refuses requests rather than guess whether keys exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from modelbroker.plugins.keys.keygen import hash_key, same_hash
from modelbroker.plugins.keys.store import ClientKey, load_keys, migrate
from modelbroker.plugins.storage.database import Database, DatabaseURLError, describe
from modelbroker.plugins.storage.migrations import SchemaTooNew

log = logging.getLogger("modelbroker")

#: Seconds between two reads of the key table (``plugins: keys: {refresh_s: ...}``).
DEFAULT_REFRESH_S = 2.0


class KeyCache:
    """Every key of the table by hash; ``enforcing`` once any unrevoked key exists."""

    def __init__(self, db: Database, refresh_s: float = DEFAULT_REFRESH_S,
                 on_refresh: Callable[[list[ClientKey]], None] | None = None, *,
                 metrics_public: bool = False) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self.on_refresh = on_refresh
        self.metrics_public = metrics_public
        self.by_hash: dict[str, ClientKey] = {}
        self.enforcing = False
        self.loaded = False
        self.error: str | None = None
        self._migrated = False
        self._summary: tuple[int, int, int] | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    async def start(self, timeout_s: float) -> None:
        """Read the table once (waiting up to ``timeout_s``), then keep it fresh in the background."""
        try:
            await asyncio.wait_for(self.refresh(), timeout_s)
        except (SchemaTooNew, DatabaseURLError):  # no retry can help
            raise
        except Exception as exc:  # noqa: BLE001 - unreachable or slow: the background task retries
            self._failed(exc)
        self._task = asyncio.create_task(self._refresh_forever(), name="modelbroker-keys-refresh")

    async def refresh(self) -> None:
        """Re-read the table (migrating it first, once); raises if the database cannot be read."""
        if not self._migrated:
            await migrate(self.db)
            self._migrated = True
        keys = await load_keys(self.db)
        self.by_hash = {key.key_hash: key for key in keys}
        self.enforcing = any(not key.revoked for key in keys)
        active = [k for k in keys if not k.revoked]
        summary = (len(active), sum(k.admin for k in active), len(keys) - len(active))
        if summary != self._summary or self.error is not None:
            log.warning("%s", describe_keys(*summary, metrics_public=self.metrics_public))
        self.loaded, self.error, self._summary = True, None, summary
        if self.on_refresh is not None:
            self.on_refresh(keys)

    def lookup(self, presented: str) -> ClientKey | None:
        """The key whose hash is the presented key's, revoked or not; None for an unknown key."""
        digest = hash_key(presented)
        found = self.by_hash.get(digest)
        if found is None or not same_hash(found.key_hash, digest):
            return None
        return found

    async def stop(self) -> None:
        """Stop the background refresh.

        Cancelling the task alone is not enough before Python 3.12: ``wait_for`` returns the
        result, swallowing the cancellation, when the read it waits for finishes in the same
        turn of the loop; the refresher then went back to sleep, and the gateway's shutdown
        waited for it forever. It also stops at ``_stopping``."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh_forever(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.refresh_s)
            try:
                await asyncio.wait_for(self.refresh(), max(5.0, self.refresh_s))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the last table; say so once
                self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        first = self.error is None
        self.error = describe(exc) if str(exc) else f"{type(exc).__name__}: no answer in time"
        if not first:
            return
        if self.loaded:
            log.error("client keys: cannot re-read the key table (%s); the last table read stays in force",
                      self.error)
        else:
            log.error("client keys: cannot read the key table (%s); every request is refused until it can be "
                      "read (a gateway that uses no client keys can run without the plugin: "
                      "MODELBROKER_DISABLED_PLUGINS=keys)", self.error)


def describe_keys(active: int, admins: int, revoked: int, *, metrics_public: bool = False) -> str:
    """The warning logged when the key table is read and has changed: who may call what."""
    if not active:
        return (f"client keys: none active ({revoked} revoked): the gateway is open: anyone who can reach "
                "its port may call the model APIs and read /usage, /dashboard and /metrics; /admin/* answers "
                "only requests from this machine (127.0.0.1, ::1). modelbroker keys create --name NAME "
                "[--admin] closes it")
    guarded = "/admin/* and /dashboard" if metrics_public else "/admin/*, /dashboard and /metrics"
    metrics = ", /metrics is open to all (MODELBROKER_METRICS_PUBLIC)" if metrics_public else ""
    own = ", and a client key reads only its own /usage"
    if not admins:
        return (f"client keys: {active} active, none of them an admin key, {revoked} revoked: every route but "
                f"/health and its probes needs a key; {guarded} refuse every key until an admin key exists "
                f"(modelbroker keys create --name NAME --admin){metrics}{own}")
    return (f"client keys: {active} active ({admins} admin), {revoked} revoked: every route but /health and its "
            f"probes needs a key; {guarded} need an admin key{metrics}{own}")
