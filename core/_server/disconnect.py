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


#: Seconds a request's work runs before the gateway starts watching for its client leaving.
#: The watcher is a task, a noticeable share of a request's CPU (docs/performance.md,
#: 'Measurements behind the code'); a request answered sooner never pays for it, and one
#: whose client leaves is cancelled at most this much later than it could have been.
WATCH_AFTER_S = 0.25


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise ClientGone.

    Call it once the body has been read: the next ASGI message is then the
    disconnect (or nothing, until the response is sent). The work runs in the
    request's own task; after ``WATCH_AFTER_S``, one watcher task cancels that
    task on a disconnect.
    """
    loop = asyncio.get_running_loop()  # once: on Python 3.11 each lookup is a getpid() system call
    current = asyncio.current_task(loop)
    watcher: asyncio.Future | None = None

    def watch() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, current))

    timer = loop.call_later(WATCH_AFTER_S, watch)
    try:
        return await work
    except asyncio.CancelledError:
        if watcher is not None and watcher.done() and not watcher.cancelled() and watcher.result():
            if hasattr(current, "uncancel"):  # Python 3.11+: this cancellation ends here
                current.uncancel()
            raise ClientGone() from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task) -> bool:
    while (await receive())["type"] != "http.disconnect":
        pass
    task.cancel()
    return True
