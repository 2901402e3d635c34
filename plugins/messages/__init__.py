"""Surface ``messages``: Anthropic's Messages API (``POST /v1/messages``), modelbroker as an Anthropic ``base_url``.

The Anthropic SDKs and Claude Code work against the gateway as they do against Anthropic.
A request is checked (``body.py``) and routed like any other: to an Anthropic provider its
body goes as sent, with the client's ``anthropic-version`` and ``anthropic-beta`` headers,
and the upstream's message or events come back as they were (the ``anthropic`` adapter's
native pass-through); to any other provider it goes converted to the chat format and the
answer comes back converted (``convert.py``, ``events.py``). Errors take Anthropic's shape
(``errors.py``). ``POST /v1/messages/count_tokens`` estimates a request's input tokens
(``count_tokens.py``). Also answered without ``/v1``.
"""

from __future__ import annotations

from modelbroker import hookimpl
from modelbroker.plugins.messages.count_tokens import routes
from modelbroker.plugins.messages.surface import Messages

NAME = "messages"


@hookimpl
def register_surfaces(register):
    register(NAME, Messages)


@hookimpl
def api_routes():
    return [routes()]
