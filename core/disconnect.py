"""Cancel a request's work when its client goes away, so an abandoned request does not
keep an upstream call (and its cost) running."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise ClientGone.

    Call it once the body has been read: the next ASGI message is then the
    disconnect (or nothing, until the response is sent). The work runs in the
    request's own task; one watcher task cancels that task on a disconnect.
    """
    current = asyncio.current_task()
    watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, current))
    try:
        return await work
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled() and watcher.result():
            if hasattr(current, "uncancel"):  # Python 3.11+: this cancellation ends here
                current.uncancel()
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task) -> bool:
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel()
    return True
