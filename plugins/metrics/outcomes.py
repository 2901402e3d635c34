"""Count each request once, with how it ended, from hooks that report attempts.

``ok``, ``partial`` and ``cancelled`` end a request at once. After a ``failed``
attempt the router may try again, and no hook says that it will not; so such a
request is counted as failed when its deadline has passed (plus ``GRACE_S``)
with no later attempt reported, or at shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

FAILED = "failed"
#: Seconds after a request's deadline by which its last attempt has been reported.
GRACE_S = 1.0
#: How many requests counted as failed are remembered, so that a late report is not counted twice.
REMEMBERED = 4096

Labels = tuple[str, str]
#: What tells one request from another: its id and when it arrived (a client may reuse an id).
Key = tuple[str, float]


class RequestOutcomes:
    """Calls ``count(provider, model, outcome)`` once per request."""

    def __init__(self, count: Callable[[str, str, str], None], timeout_s: float) -> None:
        self._count = count
        self._timeout_s = timeout_s
        self._pending: dict[Key, tuple[Labels, asyncio.TimerHandle]] = {}
        self._counted_failed: OrderedDict[Key, None] = OrderedDict()

    def attempt_ended(self, request, labels: Labels, outcome: str) -> None:
        """An attempt of ``request`` (a ``ChatRequest``) ended with ``outcome``."""
        key = (request.request_id, request.received_at)
        self._cancel(key)
        if key in self._counted_failed:
            return  # a report after the request was taken for failed (a fallback stream that ran long)
        if outcome != FAILED or not request.request_id:
            self._count(*labels, outcome)
            return
        deadline = request.deadline or time.monotonic() + self._timeout_s  # monotonic, as the router's
        try:
            handle = asyncio.get_running_loop().call_later(deadline - time.monotonic() + GRACE_S, self._failed, key)
        except RuntimeError:  # no event loop: nothing can follow
            self._count(*labels, FAILED)
            return
        self._pending[key] = (labels, handle)

    def close(self) -> None:
        """At shutdown: every request still waiting ended with its failed attempt."""
        for key in list(self._pending):
            self._pending[key][1].cancel()
            self._failed(key)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _failed(self, key: Key) -> None:
        labels, _ = self._pending.pop(key)
        self._count(*labels, FAILED)
        self._counted_failed[key] = None
        if len(self._counted_failed) > REMEMBERED:
            self._counted_failed.popitem(last=False)

    def _cancel(self, key: Key) -> None:
        waiting = self._pending.pop(key, None)
        if waiting is not None:
            waiting[1].cancel()
