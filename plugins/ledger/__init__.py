"""Plugin ``ledger``: every attempt, and every refused request, as a row in a database.

SQLite beside app.log by default (``modelbroker.db``), PostgreSQL when
``MODELBROKER_DATABASE_URL`` says so, through one code path in plain SQL
(``database.py``). Writes are batched off the request path (``writer.py``); ``GET /usage``
(``routes.py``) and ``modelbroker usage`` (``cli.py``) sum it up. docs/ledger.md
has the schema, SQL examples and the outage behaviour.
"""

from __future__ import annotations

from modelbroker import hookimpl
from modelbroker.plugins.ledger.options import LedgerOptions
from modelbroker.plugins.ledger.store import STORE_NAME, LedgerStore

__all__ = ["STORE_NAME", "LedgerStore", "api_routes", "on_startup", "register_commands"]


@hookimpl
def on_startup(pm, settings):
    """Register this gateway's ledger and start it (schema migrated, writer running)."""
    store = LedgerStore(LedgerOptions.from_settings(settings))
    pm.register(store, name=STORE_NAME)
    return store.start()


@hookimpl
def api_routes():
    from modelbroker.plugins.ledger.routes import router

    return [router]


@hookimpl
def register_commands(commands):
    usage = commands.add_parser(
        "usage", help="requests, tokens, cost, cache savings and latency from the usage ledger",
        description="Requests, tokens, cost and latency from the usage ledger (the database of "
                    "MODELBROKER_DATABASE_URL), read directly: the gateway need not be running. Cache hits "
                    "are requests with no attempt and no cost; 'saved' is what they would have cost.")
    usage.add_argument("--from", dest="from_", metavar="FROM", default=None,
                       help="ISO date or datetime, UTC (default: 30 days before --to)")
    usage.add_argument("--to", default=None, help="ISO date (the whole day) or datetime (default: now)")
    usage.add_argument("--group-by", "--by", default=None,
                       help="provider, model, day, client or none; or two joined by a comma (day,provider)")
    usage.set_defaults(run=_usage)


def _usage(args) -> int:
    import sys

    from modelbroker import load_settings
    from modelbroker.plugins.ledger.cli import UsageError, print_usage

    try:
        print(print_usage(load_settings(), args.from_, args.to, args.group_by))
    except UsageError as exc:
        print(f"modelbroker: {exc}", file=sys.stderr)
        return 2
    return 0
