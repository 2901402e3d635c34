"""GET /usage: totals and breakdowns from the ledger, as JSON.

An admin (or anyone, while the gateway has no client key) reads every client's
usage; a client key reads its own rows only, as if the ledger held nothing else.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request

from modelbroker import APIError, caller_of, error_responses, gateway_of
from modelbroker.plugins.ledger.queries import UsageQueryError, parse_group_by, parse_window, usage_report
from modelbroker.plugins.ledger.store import STORE_NAME
from modelbroker.plugins.storage.database import DatabaseError, describe

router = APIRouter()

#: Seconds /usage may spend writing this process's queued records before it reads.
FLUSH_BEFORE_READ_S = 2.0


@router.get("/usage", responses=error_responses(400, 401, 422, 503))
async def usage(
    request: Request,
    start: Annotated[str | None, Query(alias="from", description="ISO date or datetime (default: 30 days ago)")] = None,
    to: Annotated[str | None, Query(description="ISO date (the whole day) or datetime (default: now)")] = None,
    group_by: Annotated[str | None, Query(description="provider, model, day, client or none; or two joined by a comma, e.g. day,provider")] = None,
) -> dict:
    """Requests, attempts, failures, cache hits, tokens, cost, saved cost and p50/p95 latency, in total and per group.

    An admin key reads every client's; a client key only its own (``client`` in the answer)."""
    try:
        window = parse_window(start, to)
        group = parse_group_by(group_by)
    except UsageQueryError as exc:
        raise APIError(400, str(exc), code="invalid_parameter", param=exc.param) from None
    caller = caller_of(request)
    client = caller.name if caller is not None and caller.role != "admin" else None
    store = gateway_of(request).pm.get_plugin(STORE_NAME)
    if store is None:
        raise APIError(503, "the ledger is not running", code="ledger_unavailable")
    await store.writer.flush(timeout=FLUSH_BEFORE_READ_S)  # this process's own records are counted at once
    try:
        report = await usage_report(store.db, window, group, client)
    except (DatabaseError, OSError, asyncio.TimeoutError) as exc:
        raise APIError(503, f"the ledger database cannot be read: {describe(exc)}", code="ledger_unavailable") from None
    return report
