"""Surface ``responses``: OpenAI's Responses API (``POST /v1/responses``), over every provider.

A request is read into the gateway's chat request (``parse.py``: messages from the input
items, chat's nested function tools, ``response_format`` from ``text.format``) and
routed like any other, with fallback, the ledger and the rest. Its answer, whole or
streamed as the API's events (``events.py``), is a Response object built from the chat
completion (``answer.py``). Responses created with ``store`` not false are kept in the
ledger's database (``store.py``), so that ``previous_response_id`` continues a
conversation and ``GET /v1/responses/{id}`` retrieves one (``routes.py``).

providers.yaml::

    plugins:
      responses:
        retention_days: 30   # how long a stored response is kept after its conversation's last turn
"""

from __future__ import annotations

from modelbroker import hookimpl
from modelbroker.plugins.responses.settings import NAME, ResponsesSettings
from modelbroker.plugins.responses.store import STORE_NAME, ResponseStore
from modelbroker.plugins.responses.surface import Responses

__all__ = ["STORE_NAME", "ResponseStore", "Responses", "ResponsesSettings"]


@hookimpl
def register_settings(register):
    register(NAME, ResponsesSettings)


@hookimpl
def register_surfaces(register):
    register(NAME, Responses)


@hookimpl
def api_routes():
    from modelbroker.plugins.responses.routes import router

    return [router]
