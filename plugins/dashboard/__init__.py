"""Plugin ``dashboard``: one self-contained page at ``GET /dashboard``.

Spend per day by provider, requests and failure rate per day, latency per
provider (from the ledger's ``GET /usage``) and the providers' health (from
``GET /health``), refreshed every 30 s. The page is plain HTML, CSS and JS in
``static/``, inlined into one response: no CDN, no font, works offline.
docs/observability.md describes it.
"""

from __future__ import annotations

from modelbroker import hookimpl

__all__ = ["api_routes"]


@hookimpl
def api_routes():
    from modelbroker.plugins.dashboard.routes import router

    return [router]
