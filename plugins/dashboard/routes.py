"""GET /dashboard: the page, with its CSS and JS inlined and pinned by a Content-Security-Policy.

Once client keys exist, the page needs an admin key, as the data it shows does. A
browser cannot send a Bearer header when it navigates, so the ``keys`` plugin also
takes the key here as the password of HTTP Basic authentication: the browser asks for
it, and sends it again with the page's own requests for data.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from modelbroker import require_admin

router = APIRouter()


@router.get("/dashboard", include_in_schema=False)
async def dashboard(request: Request) -> HTMLResponse:
    require_admin(request)
    html, policy = page()
    return HTMLResponse(html, headers={"content-security-policy": policy, "cache-control": "no-cache"})


@functools.cache
def page() -> tuple[str, str]:
    """The page and its policy: only its own inline style and script run, and it talks only to this
    origin (so nothing is fetched from elsewhere even by mistake)."""
    static = resources.files("modelbroker.plugins.dashboard") / "static"
    style = (static / "dashboard.css").read_text(encoding="utf-8")
    script = (static / "dashboard.js").read_text(encoding="utf-8")
    html = (static / "dashboard.html").read_text(encoding="utf-8")
    html = html.replace("<style>/* style */</style>", f"<style>{style}</style>")
    html = html.replace("<script>/* script */</script>", f"<script>{script}</script>")
    policy = (f"default-src 'none'; connect-src 'self'; img-src 'self' data:; "
              f"style-src '{_hash(style)}'; script-src '{_hash(script)}'; base-uri 'none'; form-action 'none'")
    return html, policy


def _hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
