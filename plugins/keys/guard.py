"""The keys of one gateway: who is calling (``authenticate``), whether they may (``admit``),
and what they spent (``on_result``, ``on_failure``)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from pathlib import Path

from modelbroker import APIError, Principal, hookimpl
from modelbroker.plugins.keys.cache import KeyCache
from modelbroker.plugins.keys.keygen import presented_key
from modelbroker.plugins.keys.limits import DAY, MONTH, Limits, period_start
from modelbroker.plugins.keys.store import ClientKey, ledger_spend
from modelbroker.plugins.storage.database import Database, describe

log = logging.getLogger("modelbroker")

#: The name the per-gateway ``KeyGuard`` is registered under in the plugin manager.
GUARD_NAME = "keys.guard"
#: Where a ``Principal`` made by this plugin keeps its key.
PRINCIPAL_KEY = "client_key"
#: Where a browser may send the key as the password of HTTP Basic authentication: it cannot
#: send a Bearer header when it navigates to the dashboard, and sends the password it was
#: asked for again with the page's requests for data. Only these GET routes take it, so a
#: page elsewhere cannot make the browser send it to a route that changes something.
BASIC_PATHS = frozenset({"/dashboard", "/usage"})
#: The browser's prompt for /dashboard; a browser asks for a user name too, which is ignored.
DASHBOARD_CHALLENGE = 'Basic realm="modelbroker dashboard", charset="UTF-8"'
#: Seconds startup waits for the key table; past that, requests are refused until it is read.
STARTUP_TIMEOUT_S = 10.0

MISSING = ("this gateway needs a client key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>' "
           "(the api_key of the OpenAI and Anthropic SDKs)")
MISSING_DASHBOARD = ("the dashboard needs an admin key: when the browser asks, give any user name and the key "
                     "as the password")
UNKNOWN = "the client key is not valid"
REVOKED = "the client key has been revoked"
UNAVAILABLE = ("the gateway cannot read its client keys from its database, so it refuses every request "
               "until it can; the gateway log has the details")


class KeyGuard:
    """Registered by ``on_startup`` (as ``keys.guard``): one per gateway."""

    def __init__(self, db: Database, limits: Limits, *, refresh_s: float,
                 sqlite_file: Path | None = None, metrics_public: bool = False) -> None:
        self.db = db
        self.limits = limits
        #: Paths left open besides /health (which the core never guards).
        self.open_paths = frozenset({"/metrics"} if metrics_public else ())
        self.cache = KeyCache(db, refresh_s, on_refresh=self._keys_read, metrics_public=metrics_public)
        self.sqlite_file = sqlite_file
        self._seeded: set[str] = set()
        self._seeding: set[asyncio.Task] = set()
        self._started = False

    async def start(self) -> None:
        """Read the key table, then start each key's spend from the ledger (today, this month)."""
        if self.sqlite_file is not None:
            await asyncio.to_thread(self.sqlite_file.parent.mkdir, parents=True, exist_ok=True)
        await self.cache.start(STARTUP_TIMEOUT_S)
        self._started = True
        if self.cache.loaded:
            names = {key.name for key in self.cache.by_hash.values() if not key.revoked}
            await self._seed(names)

    @hookimpl
    def readiness(self):
        """Unready while the key table has never been read: every request would get 503."""
        if self.cache.loaded:
            return {"ok": True, "enforcing": self.cache.enforcing, "table_current": self.cache.error is None}
        return {"ok": False, "error": "the key table cannot be read, so every request is refused with 503 "
                                      "keys_unavailable (the gateway's log says why)"}

    @hookimpl(trylast=True)  # a plugin of the user's own is asked first (docs/hooks.md)
    def authenticate(self, headers, path):
        if path in self.open_paths:
            return None
        if not self.cache.loaded:
            return _refuse(APIError(503, UNAVAILABLE, code="keys_unavailable"))
        if not self.cache.enforcing:
            return None
        token = presented_key(headers.get("authorization"), headers.get("x-api-key"), basic=path in BASIC_PATHS)
        key = self.cache.lookup(token) if token is not None else None
        if key is None or key.revoked:
            return _refuse(_unauthenticated(path, token, key))
        return _accept(Principal(name=key.name, data={PRINCIPAL_KEY: key}, role=key.role))

    @hookimpl(trylast=True)
    def admit(self, request, principal):
        key = key_of(principal)
        if key is None:
            return None
        check_model(key, request)
        ceiling = key.max_cost_per_request
        if ceiling is not None and (request.max_cost is None or request.max_cost > ceiling):
            request.max_cost = ceiling  # a request may ask for less than its key's ceiling, never more
        return self.limits.check(key) if key.limited else None

    @hookimpl
    def on_result(self, request, result):
        key = key_of(request.principal)
        if key is not None:
            self.limits.charge(key.name, result.cost, result.usage.total_tokens)

    @hookimpl
    def on_failure(self, request, error):
        key = key_of(request.principal)
        if key is not None:
            tokens = error.usage.total_tokens if error.usage is not None else 0
            self.limits.charge(key.name, error.cost, tokens)

    @hookimpl
    async def on_shutdown(self):
        await self.cache.stop()
        for task in list(self._seeding):
            task.cancel()
        await self.limits.drain()
        await self.db.close()

    def _keys_read(self, keys: list[ClientKey]) -> None:
        """After each read of the table: start the spend of a name not seen before."""
        new = {key.name for key in keys if not key.revoked} - self._seeded
        if new and self._started:
            task = asyncio.get_running_loop().create_task(self._seed(new))
            self._seeding.add(task)
            task.add_done_callback(self._seeding.discard)

    async def _seed(self, names: set[str]) -> None:
        self._seeded |= names
        now = datetime.now(timezone.utc)
        try:
            spend = await asyncio.wait_for(
                ledger_spend(self.db, names, period_start(DAY, now), period_start(MONTH, now)),
                STARTUP_TIMEOUT_S)
            await self.limits.seed(spend)
        except Exception as exc:  # noqa: BLE001 - budgets then count from zero; say so
            log.error("client keys: cannot read today's spend from the ledger (%s); "
                      "budgets count from zero", describe(exc))


def _unauthenticated(path: str, token: str | None, key: ClientKey | None) -> APIError:
    """The 401 for a missing, unknown or revoked key; the dashboard's makes a browser ask for one."""
    if token is None:
        message, code = (MISSING_DASHBOARD if path == "/dashboard" else MISSING), "missing_api_key"
    else:
        message, code = (REVOKED, "revoked_api_key") if key is not None else (UNKNOWN, "invalid_api_key")
    challenge = DASHBOARD_CHALLENGE if path == "/dashboard" else "Bearer"
    return APIError(401, message, code=code, headers={"www-authenticate": challenge})


def key_of(principal: Principal | None) -> ClientKey | None:
    """The key behind a principal this plugin made; None for anyone else's."""
    key = principal.data.get(PRINCIPAL_KEY) if principal is not None else None
    return key if isinstance(key, ClientKey) else None


def check_model(key: ClientKey, request) -> None:
    """A key with ``models`` may ask only for a listed value of ``model`` (a provider id, a model
    name, a provider name, ``auto`` or a strategy name); /generate, which has no ``model``, asks
    for its ``strategy`` or ``auto``. Raises APIError 403."""
    if key.models is None:
        return
    asked = request.model or request.strategy or "auto"
    if asked not in key.models:
        raise APIError(403, f"key {key.name!r} may not use model {asked!r}; it may use: {', '.join(key.models)}",
                       code="model_not_allowed", param="model")


async def _accept(principal: Principal) -> Principal:
    return principal


async def _refuse(error: APIError) -> Principal:
    raise error
