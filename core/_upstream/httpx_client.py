"""The one pooled HTTP client that every adapter shares.

Built in one place so the transport can be chosen by measurement (see
docs/performance.md) without touching any adapter.

It never sends a request twice: httpcore's pool moves a request to another connection only
when the one it was given turns out busy or closed before anything is written
(``ConnectionNotAvailable``), tries again only to connect (``retries``, 0 here), and, like
``http1``, drops an idle connection whose socket has something to read before using it.
"""

from __future__ import annotations

import httpx

from modelbroker._upstream.client import ATTEMPT_HEADERS

#: Connections kept per upstream host; enough for a few hundred requests in flight.
MAX_CONNECTIONS = 1000
MAX_KEEPALIVE = 256


def make_http_client() -> httpx.AsyncClient:
    """A new pooled client; the gateway opens one at startup and closes it at shutdown."""
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_KEEPALIVE,
            keepalive_expiry=30,
        ),
        timeout=httpx.Timeout(60.0, connect=5.0),
        follow_redirects=False,
        event_hooks={"request": [_add_attempt_headers]},
    )


async def _add_attempt_headers(request: httpx.Request) -> None:
    """The ``on_attempt`` hooks' headers, as ``UpstreamHTTP`` adds them to its own calls."""
    added = ATTEMPT_HEADERS.get()
    if added:
        request.headers.update(added)
