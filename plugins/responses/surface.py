"""The surface object: ``POST /v1/responses`` read into a ``ChatRequest``, its answer and stream
written as Responses, and its store opened at startup (the surface takes part in the hooks)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from modelbroker import (
    APIError,
    Incoming,
    Routed,
    StreamEnd,
    error_responses,
    hookimpl,
    json_object,
)
from modelbroker.plugins.responses.answer import whole_response
from modelbroker.plugins.responses.convert import chat_messages
from modelbroker.plugins.responses.events import ResponseEvents
from modelbroker.plugins.responses.parse import new_request, with_history
from modelbroker.plugins.responses.request import ResponseCall, ResponsesRequest, invalid
from modelbroker.plugins.responses.schema import REQUEST_BODY
from modelbroker.plugins.responses.settings import NAME
from modelbroker.plugins.responses.store import (
    STORE_NAME,
    ResponseStore,
    StoredResponse,
    StoreUnavailable,
    kept_json,
)
from modelbroker.plugins.storage.location import database_url, sqlite_path
from modelbroker.plugins.storage.shared import shared_database

#: How often expired responses are deleted (and once at startup).
PURGE_INTERVAL_S = 3600.0


class Responses:
    """OpenAI's Responses API, over every provider: one response per request, or its
    events streamed; conversations continued with ``previous_response_id``."""

    paths = ("/v1/responses", "/responses")
    summary = "Responses (OpenAI)"
    openapi = {
        "requestBody": REQUEST_BODY,
        "responses": {
            200: {"description": "A `response` object; with `stream: true`, server-sent events from "
                                 "`response.created` to `response.completed` (or `response.incomplete`, "
                                 "`response.failed`).",
                  "content": {"text/event-stream": {}}},
            **error_responses(400, 401, 403, 404, 413, 415, 429, 500, 502, 503, 504),
        },
    }

    def __init__(self) -> None:
        self.store: ResponseStore | None = None
        self._config: Any = None  # the providers.yaml whose retention_s is below (a reload brings another)
        self._retention_s = 0.0

    @hookimpl
    def on_startup(self, pm, settings, config):
        """Open this gateway's store of responses (the ledger's database) and start its writer."""
        url = database_url(settings)
        purge_s = min(PURGE_INTERVAL_S, config.plugins.settings_for(NAME).retention_s / 2)
        self.store = ResponseStore(shared_database(url), sqlite_file=sqlite_path(url), purge_interval_s=purge_s)
        pm.register(self.store, name=STORE_NAME)
        return self.store.start()

    def parse(self, body: bytes, incoming: Incoming):
        data = json_object(body, "an OpenAI Responses API request")
        request = new_request(data, incoming.principal, self._retention(incoming.gateway.config))
        if request.call.previous_response_id is not None:
            return self._continued(request)
        if not request.messages:
            raise invalid("input", "holds no message the gateway can send (only reasoning items)")
        return request

    def _retention(self, config) -> float:
        """``retention_days`` in force, in seconds, read again only after a reload."""
        if config is not self._config:
            self._retention_s = config.plugins.settings_for(NAME).retention_s
            self._config = config
        return self._retention_s

    async def _continued(self, request: ResponsesRequest) -> ResponsesRequest:
        """The request after the conversation it continues (the stored chain, oldest first)."""
        call = request.call
        if self.store is None:
            raise APIError(503, "stored responses are not available: the gateway has not started its store",
                           code="store_unavailable")
        try:
            chain = await self.store.conversation(call.previous_response_id, call.owner)
        except StoreUnavailable as exc:
            raise APIError(503, f"the stored responses cannot be read now ({exc}); try again, or send the whole "
                                "conversation as input instead of previous_response_id",
                           code="store_unavailable") from None
        if chain is None:
            raise APIError(404, f"previous response with id {call.previous_response_id!r} not found: it is unknown, "
                                "has expired, or was created with store: false", type="invalid_request_error",
                           code="previous_response_not_found", param="previous_response_id")
        history: list[dict[str, Any]] = []
        for stored in chain:
            history.extend(chat_messages(stored.input))
            history.extend(chat_messages(stored.response["output"]))
        with_history(request, history)
        call.ancestors = chain
        return request

    def answer(self, request: ResponsesRequest, routed: Routed) -> bytes:
        body = whole_response(request.call, routed.completion)  # for the client and for the store
        self._keep(request.call, body)
        return body

    def stream(self, request: ResponsesRequest, routed: Routed) -> AsyncIterator[bytes]:
        return self._events(request.call, routed)

    async def _events(self, call: ResponseCall, routed: Routed) -> AsyncIterator[bytes]:
        events = ResponseEvents(call, routed.provider.model)
        yield events.opening()
        async with aclosing(routed.relay()) as items:
            async for item in items:
                if isinstance(item, StreamEnd):
                    if item.error is not None:
                        closing, response = events.failed(item.error)
                    else:
                        events.model = item.completion.model
                        closing, response = events.finished(item.completion.usage)
                    self._keep(call, response)
                    yield b"".join(closing)
                    return
                sent = events.chunk(item.raw)
                if sent:
                    yield sent

    def _keep(self, call: ResponseCall, response: bytes) -> None:
        """Store the Response (its JSON) unless the client said ``store: false``."""
        if not call.store or self.store is None:
            return
        expires_at = math.ceil(time.time() + call.retention_s)  # whole seconds: see writer.BoundTimes
        self.store.add(StoredResponse(call.response_id, call.previous_response_id, call.owner, call.created_at,
                                      expires_at, kept_json(call.input), response), call.ancestors)
