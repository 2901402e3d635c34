"""``modelbroker keys create|list|revoke``: manage client and admin keys in the ledger's database.

The running gateways read the table every ``refresh_s`` seconds, so a key
created or revoked here takes effect within that time, in every replica.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from modelbroker import format_table as table
from modelbroker.plugins.keys.keygen import check_name, hash_key, key_prefix, new_key
from modelbroker.plugins.keys.store import (
    ADMIN,
    CLIENT,
    ClientKey,
    KeyNameTaken,
    insert_key,
    load_keys,
    migrate,
    revoke_key,
)
from modelbroker.plugins.storage.database import (
    Database,
    DatabaseError,
    DatabaseURLError,
    UnsupportedDatabase,
    describe,
    open_database,
)
from modelbroker.plugins.storage.location import database_url, sqlite_path
from modelbroker.plugins.storage.migrations import SchemaTooNew
from modelbroker.plugins.storage.urls import safe_url

LIST_HEADER = ["name", "role", "prefix", "daily", "monthly", "rpm", "tpm", "max cost", "models", "created",
               "revoked"]


def add_commands(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="client API keys: create, list, revoke")
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="create a key and print it (once: it is stored hashed)")
    create.add_argument("--name", required=True, type=_name, help="who the key is for (the ledger's client)")
    create.add_argument("--admin", action="store_true",
                        help="an admin key: also /admin/*, /dashboard, every client's /usage and /metrics")
    create.add_argument("--budget-daily", type=_positive(float), metavar="COST", help="cost per UTC day")
    create.add_argument("--budget-monthly", type=_positive(float), metavar="COST", help="cost per UTC month")
    create.add_argument("--rpm", type=_positive(int), help="requests per minute")
    create.add_argument("--tpm", type=_positive(int), help="tokens per minute")
    create.add_argument("--max-cost-per-request", type=_positive(float), metavar="COST",
                        help="the cost ceiling of each request that sets none lower (x-modelbroker-max-cost)")
    create.add_argument("--models", type=_models, metavar="A,B",
                        help="the only values 'model' may take (provider ids, models, provider names, "
                             "auto, strategy names); default: any")
    create.set_defaults(run=_create)

    listing = actions.add_parser("list", help="every key: name, role, prefix, limits, created, revoked")
    listing.set_defaults(run=_list)

    revoke = actions.add_parser("revoke", help="revoke the key called NAME")
    revoke.add_argument("name", metavar="NAME")
    revoke.add_argument("--allow-open", action="store_true",
                        help="revoke even the last unrevoked key, which opens the gateway to anyone")
    revoke.set_defaults(run=_revoke)


def _create(args: argparse.Namespace) -> int:
    key = new_key()
    row = ClientKey(
        name=args.name, prefix=key_prefix(key), key_hash=hash_key(key), created_at=datetime.now(timezone.utc),
        budget_daily=args.budget_daily, budget_monthly=args.budget_monthly, rpm=args.rpm, tpm=args.tpm,
        models=args.models, role=ADMIN if args.admin else CLIENT, max_cost_per_request=args.max_cost_per_request,
    )
    try:
        _run(lambda db: insert_key(db, row))
    except KeyNameTaken:
        return _fail(f"a key named {args.name!r} exists and is not revoked; "
                     "choose another name, or revoke it first")
    print(f"created {row.role} key {args.name!r} ({row.prefix}...); it is shown once, here, and cannot be "
          "recovered:", file=sys.stderr)
    print(key)
    return 0


def _list(args: argparse.Namespace) -> int:
    keys = _run(load_keys)
    if not keys:
        print("no client key: the gateway is open, but /admin/* answers only this machine "
              "(modelbroker keys create --name NAME [--admin])")
        return 0
    print(table([_row(key) for key in keys], LIST_HEADER))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    keys = [key for key in _run(load_keys) if not key.revoked]
    active = [key.name for key in keys]
    if args.name not in active:
        return _fail(f"no unrevoked key named {args.name!r} (modelbroker keys list shows them)")
    if active == [args.name] and not args.allow_open:
        return _fail(f"{args.name!r} is the last unrevoked key: without it the gateway is open to anyone. "
                     "Create another key first, or pass --allow-open to revoke it and open the gateway")
    _run(lambda db: revoke_key(db, args.name))
    last_admin = [key.name for key in keys if key.admin] == [args.name]
    print(f"revoked key {args.name!r}; the gateways refuse it within their refresh interval (2 s by default)"
          + ("; no key is left: the gateway is open" if active == [args.name] else
             "; no admin key is left: /admin/*, /dashboard and /metrics now refuse every key "
             "(modelbroker keys create --name NAME --admin)" if last_admin else ""))
    return 0


def _run(work: Callable[[Database], Awaitable[Any]]) -> Any:
    """Migrate the key table in the configured database, then do ``work`` on it."""
    from modelbroker import load_settings

    url = database_url(load_settings())
    path = sqlite_path(url)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SystemExit(_fail(f"cannot make the folder for {path} ({exc.strerror or exc}); "
                                   "MODELBROKER_DATABASE_URL names the file")) from None

    async def run() -> Any:
        db = open_database(url)
        try:
            await migrate(db)
            return await work(db)
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except (DatabaseURLError, UnsupportedDatabase) as exc:  # a setting to correct, as a ConfigError is
        raise SystemExit(_fail(str(exc), status=2)) from None
    except (DatabaseError, OSError, asyncio.TimeoutError) as exc:
        raise SystemExit(_fail(f"cannot use the key table at {safe_url(url)}: {describe(exc)}")) from None
    except SchemaTooNew as exc:
        raise SystemExit(_fail(str(exc))) from None


def _row(key: ClientKey) -> list[str]:
    return [
        key.name, key.role, key.prefix + "...", _limit(key.budget_daily), _limit(key.budget_monthly), _limit(key.rpm),
        _limit(key.tpm), _limit(key.max_cost_per_request), ",".join(key.models) if key.models is not None else "any",
        f"{key.created_at:%Y-%m-%d %H:%M}", f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked else "-",
    ]


def _limit(value: float | int | None) -> str:
    return "-" if value is None else f"{value:g}"


def _fail(message: str, status: int = 1) -> int:
    print(f"modelbroker: {message}", file=sys.stderr)
    return status


def _name(text: str) -> str:
    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(kind: type) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value

    return parse


def _models(text: str) -> tuple[str, ...]:
    models = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if not models:
        raise argparse.ArgumentTypeError("name at least one model, provider or strategy, comma-separated")
    return models
