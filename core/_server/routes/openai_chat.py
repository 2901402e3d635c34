"""POST /v1/chat/completions and GET /v1/models: modelbroker as an OpenAI ``base_url``.

The request is checked, then passed on: fields the gateway does not own go to
OpenAI-style upstreams untouched. ``model`` routes (see Gateway.candidates).
The answer is the upstream's own chat.completion, or its chunks relayed as
they arrive.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from modelbroker._config.messages import problems
from modelbroker._routing.errors import APIError
from modelbroker._routing.router import Routed
from modelbroker._routing.streaming import StreamEnd
from modelbroker._routing.types import ChatRequest, Completion
from modelbroker._server.disconnect import unless_disconnected
from modelbroker._server.openapi import request_body_schema
from modelbroker._server.request_ids import request_id_of
from modelbroker._server.responses import JSONResponse, error_responses
from modelbroker._server.scope import header, read_body, state
from modelbroker._server.sse import DONE, EventStreamResponse, sse_event

router = APIRouter(prefix="/v1")

#: Request fields the gateway reads itself; all others are passed through.
OWNED_FIELDS = frozenset({"model", "messages", "stream", "max_tokens", "temperature"})


@with_config(ConfigDict(extra="allow", strict=True))
class ChatMessage(TypedDict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: NotRequired[str | list[dict[str, Any]] | None]


@with_config(ConfigDict(extra="allow", strict=True))
class ChatCompletionBody(TypedDict):
    """The OpenAI chat request; fields not listed here are allowed and passed through.

    Strict: ``"stream": "false"`` or ``"max_tokens": "5"`` is refused (as OpenAI
    does), since the body is passed on as sent, not as pydantic would coerce it.
    A TypedDict, not a model: the body is only checked (the route reads the parsed
    dict), and pydantic checks into plain dicts markedly faster than into model
    instances, once per request (docs/performance.md, 'Measurements behind the code').
    """

    model: NotRequired[Annotated[str, Field(min_length=1, json_schema_extra={"default": "auto"})]]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: NotRequired[Annotated[bool, Field(json_schema_extra={"default": False})]]
    stream_options: NotRequired[dict[str, Any] | None]
    max_tokens: NotRequired[Annotated[int, Field(gt=0)] | None]
    max_completion_tokens: NotRequired[Annotated[int, Field(gt=0)] | None]
    temperature: NotRequired[Annotated[float, Field(ge=0, le=2)] | None]
    top_p: NotRequired[Annotated[float, Field(ge=0, le=1)] | None]
    stop: NotRequired[str | list[str] | None]
    seed: NotRequired[int | None]
    user: NotRequired[str | None]
    tools: NotRequired[list[dict[str, Any]] | None]
    tool_choice: NotRequired[str | dict[str, Any] | None]
    response_format: NotRequired[dict[str, Any] | None]


CHAT_BODY = TypeAdapter(ChatCompletionBody)


@router.post(
    "/chat/completions",
    openapi_extra=request_body_schema(CHAT_BODY),
    responses={
        200: {"description": "A `chat.completion`; with `stream: true`, server-sent events of "
                             "`chat.completion.chunk`s ending with `data: [DONE]`.",
              "content": {"text/event-stream": {}}},
        **error_responses(400, 401, 403, 404, 413, 415, 429, 500, 502, 503, 504),
    },
)
async def chat_completions(request: Request):
    """Route an OpenAI chat request; fall back until an answer (or a stream's first content)."""
    received_at = time.perf_counter()
    gateway = request.app.state.gateway
    data = parse_chat_body(await read_body(request.receive))
    chat = ChatRequest(
        messages=data["messages"],
        request_id=request_id_of(request),
        received_at=received_at,
        route=request.scope["path"],
        deadline=gateway.deadline(header(request.scope, b"x-modelbroker-timeout")),
        model=data.get("model") or "auto",
        max_tokens=data.get("max_tokens"),
        temperature=data.get("temperature"),
        stream=bool(data.get("stream")),
        principal=(principal := state(request.scope).get("principal")),
        client=principal.name if principal else data["user"] if isinstance(data.get("user"), str) else None,
        extra={k: v for k, v in data.items() if k not in OWNED_FIELDS},
    )
    state(request.scope)["chat"] = chat
    await gateway.admit(chat)
    routed = await unless_disconnected(request.receive, gateway.router.route(chat, gateway.candidates(chat)))
    headers = routing_headers(chat, routed)
    if routed.stream is None:
        headers["x-modelbroker-cost"] = f"{routed.completion.cost:.8f}"
        return JSONResponse(completion_body(routed.completion, chat), headers=headers)
    wants_usage = bool((data.get("stream_options") or {}).get("include_usage"))
    return EventStreamResponse(relay_chunks(routed, wants_usage), headers=headers)


@router.get("/models", responses=error_responses(401))
async def list_models(request: Request) -> JSONResponse:
    """Every value ``model`` may take, in OpenAI's list format."""
    gateway = request.app.state.gateway
    owners = {}
    for provider in gateway.config.providers:
        owners.setdefault(provider.id, provider.name)
        owners.setdefault(provider.model, provider.name)
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": owners.get(name, "modelbroker")}
        for name in gateway.model_names()
    ]
    return JSONResponse({"object": "list", "data": data})


def parse_chat_body(raw: bytes) -> dict[str, Any]:
    """The request as a dict, after checking it; raises APIError 400 naming the field."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise APIError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object (an OpenAI chat request)", code="invalid_body")
    if len(raw) > MIN_BYTES_FOR_DEEP_NESTING and not _encodable(data):
        raise APIError(400, f"the body is nested more than {MAX_DEPTH} levels deep; it cannot be forwarded",
                       code="invalid_body")
    try:
        CHAT_BODY.validate_python(data)
    except ValidationError as exc:
        found = problems(exc.errors(include_input=False, include_url=False))
        raise APIError(
            400, "; ".join(f"{field}: {text}" for field, text in found), code="invalid_field", param=found[0][0]
        ) from None
    return data


#: orjson writes at most this many nested levels (it reads up to 1024); a body with fewer
#: bytes than this cannot be nested that deep, so most requests skip the check.
MAX_DEPTH = 254
MIN_BYTES_FOR_DEEP_NESTING = 2 * MAX_DEPTH


def _encodable(data: Any) -> bool:
    try:
        orjson.dumps(data)
    except orjson.JSONEncodeError:
        return False
    return True


def routing_headers(chat: ChatRequest, routed: Routed) -> dict[str, str]:
    """Which provider answered and after how many attempts."""
    overhead = routed.completion.overhead_ms if routed.completion else routed.stream.overhead_ms
    return {
        "x-request-id": chat.request_id,
        "x-modelbroker-provider": routed.provider.id,
        "x-modelbroker-attempts": str(len(routed.attempts)),
        "x-modelbroker-overhead-ms": f"{overhead:.3f}",
    }


def completion_body(completion: Completion, chat: ChatRequest) -> dict[str, Any]:
    """The upstream's chat.completion, or one built from the completion if the adapter gave none."""
    if completion.raw is not None:
        body = completion.raw
        body.setdefault("model", completion.model)
        return body
    usage = completion.usage
    return {
        "id": f"chatcmpl-{chat.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": completion.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "total_tokens": usage.total_tokens},
    }


async def relay_chunks(routed: Routed, wants_usage: bool):
    """The stream's chunks as SSE; ``[DONE]`` only after a complete stream, an error event otherwise."""
    async with aclosing(routed.stream.relay()) as items:
        async for item in items:
            if isinstance(item, StreamEnd):
                if item.error is not None:
                    yield stream_error_event(item.error)
                else:
                    yield DONE
                return
            if item.usage is not None and not item.raw.get("choices") and not wants_usage:
                continue  # the gateway asked for usage on its own account; the client did not
            yield b"data: " + orjson.dumps(item.raw) + b"\n\n"


def stream_error_event(error) -> bytes:
    return sse_event({"error": {
        "message": f"the upstream failed mid-stream; the answer is incomplete: {error.message}",
        "type": "upstream_error",
        "code": "stream_interrupted",
    }})
