"""uvicorn's access log: off unless ``MODELBROKER_ACCESS_LOG=true``.

uvicorn writes a line per HTTP request to stderr through ``logging``, on the event
loop. Measured at 64 connections (``python -m bench.profile``, 2026-11-28): 508-584
µs of CPU a request without it, 742-803 with it, about 30 % fewer requests a second. The
gateway already writes a line per attempt to app.log (request id, provider, status,
latency, tokens, cost) off the loop, so the access line is off by default for
``modelbroker serve`` and for ``uvicorn main:app`` alike.
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
