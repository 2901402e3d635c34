"""uvicorn's access log: off unless ``MODELBROKER_ACCESS_LOG=true``.

uvicorn writes a line per HTTP request to stderr through ``logging``, on the event
loop. Measured with ``python -m bench.profile``, it added much to each request's CPU,
and the gateway served noticeably fewer requests a second (docs/performance.md,
'Measurements behind the code'). The gateway already writes a line per attempt to
app.log (request id, provider, status, latency, tokens, cost) off the loop, so the
access line is off by default for ``modelbroker serve`` and for ``uvicorn main:app``
alike. When it is on, its lines leave out query strings: a client may have put a key
there (``?api_key=...``).
"""

from __future__ import annotations

import logging

UVICORN_ACCESS_LOGGER = "uvicorn.access"

log = logging.getLogger("modelbroker")


def silence_uvicorn_access_log() -> None:
    """What uvicorn's ``--no-access-log`` does: its per-request logger loses its handlers.

    uvicorn asks ``hasHandlers()`` once per connection, so connections accepted after
    this (all of them, when called at startup) never format an access line.
    """
    access = logging.getLogger(UVICORN_ACCESS_LOGGER)
    if not access.hasHandlers():
        return
    would_print = access.isEnabledFor(logging.INFO)  # not under ``modelbroker demo`` (warnings only)
    access.handlers = []
    access.propagate = False
    if would_print:
        # A warning, so that it shows under a bare ``uvicorn main:app`` (no logging configured):
        # whoever expects uvicorn's lines learns where they went.
        log.warning("uvicorn's access log is off: app.log has a line per attempt "
                    "(MODELBROKER_ACCESS_LOG=true turns it on)")


class _WithoutQueryString(logging.Filter):
    """uvicorn's access line with the path only: ``"GET /v1/models?api_key=mb-..."`` is
    logged as ``"GET /v1/models?(query not logged)"``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn logs: client, method, path with query string, HTTP version, status
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (args[0], args[1], args[2].split("?", 1)[0] + "?(query not logged)", *args[3:])
        return True


def keep_query_strings_out() -> None:
    """Add the filter once to uvicorn's access logger."""
    access = logging.getLogger(UVICORN_ACCESS_LOGGER)
    if not any(isinstance(f, _WithoutQueryString) for f in access.filters):
        access.addFilter(_WithoutQueryString())
