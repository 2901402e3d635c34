"""POST /generate: the simple API. A prompt in; the text, model, tokens and cost out."""

from __future__ import annotations

import time
from contextlib import aclosing
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelbroker._config.messages import problems
from modelbroker._routing.errors import APIError
from modelbroker._routing.router import Routed
from modelbroker._routing.streaming import StreamEnd
from modelbroker._routing.types import ChatRequest, Completion
from modelbroker._server.disconnect import unless_disconnected
from modelbroker._server.openapi import request_body_schema
from modelbroker._server.request_ids import request_id_of
from modelbroker._server.responses import JSONResponse, error_responses
from modelbroker._server.routes.openai_chat import routing_headers, stream_error_event
from modelbroker._server.scope import header, read_body, state
from modelbroker._server.sse import EventStreamResponse, sse_event

router = APIRouter()


class GenerateBody(BaseModel):
    """The request body of POST /generate."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, description="The prompt, sent as one user message.")
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    strategy: str | None = Field(default=None, description="Override the configured strategy.")
    stream: bool = Field(default=False, description="Answer with server-sent events, text deltas as they come.")


@router.post(
    "/generate",
    openapi_extra=request_body_schema(GenerateBody),
    responses={
        200: {"description": "The answer; with `stream: true`, server-sent events of text deltas.",
              "content": {"text/event-stream": {}}},
        **error_responses(400, 401, 403, 413, 415, 422, 429, 500, 502, 503, 504),
    },
)
async def generate(request: Request) -> JSONResponse:
    """Route a prompt to a provider; fall back to the next one on failure."""
    received_at = time.perf_counter()
    gateway = request.app.state.gateway
    body = parse_body(await read_body(request.receive))
    if body.strategy is not None and body.strategy not in gateway.strategies:
        raise APIError(
            400, f"unknown strategy {body.strategy!r}; installed strategies: {', '.join(gateway.strategies)}",
            code="unknown_strategy", param="strategy",
        )
    chat = ChatRequest(
        messages=[{"role": "user", "content": body.prompt}],
        request_id=request_id_of(request),
        received_at=received_at,
        route=request.scope["path"],
        principal=(principal := state(request.scope).get("principal")),
        client=principal.name if principal else None,
        deadline=gateway.deadline(header(request.scope, b"x-modelbroker-timeout")),
        strategy=body.strategy,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        stream=body.stream,
    )
    state(request.scope)["chat"] = chat
    await gateway.admit(chat)
    routed = await unless_disconnected(request.receive, gateway.router.route(chat, gateway.candidates(chat)))
    if routed.stream is not None:
        return EventStreamResponse(stream_events(chat, routed), headers=routing_headers(chat, routed))
    headers = routing_headers(chat, routed)
    headers["x-modelbroker-cost"] = f"{routed.completion.cost:.8f}"
    return JSONResponse(generate_answer(chat, routed, routed.completion), headers=headers)


def parse_body(raw: bytes) -> GenerateBody:
    """Validate the body. A JSON string holding a JSON object is accepted too, because the
    original README's example posts ``json=json.dumps(data)``."""
    data = _load_json(raw)
    if isinstance(data, str):
        data = _load_json(data.encode("utf-8"))
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object such as {\"prompt\": \"Hello\"}", code="invalid_body")
    try:
        return GenerateBody.model_validate(data)
    except ValidationError as exc:
        found = problems(exc.errors(include_input=False, include_url=False))
        raise APIError(
            422, "; ".join(f"{field}: {text}" for field, text in found),
            code="invalid_field", param=found[0][0],
        ) from None


def _load_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise APIError(400, "the body is not valid JSON", code="invalid_json") from None


def generate_answer(chat: ChatRequest, routed: Routed, completion: Completion) -> dict[str, Any]:
    return {
        "modelUsed": completion.model or routed.provider.model,
        "tokens": completion.usage.total_tokens,
        "cost": completion.cost,
        "response": completion.text,
        "provider": routed.provider.id,
        "latency_ms": round(routed.attempts[-1].elapsed_ms, 1),
        "attempts": len(routed.attempts),
        "request_id": chat.request_id,
    }


async def stream_events(chat: ChatRequest, routed: Routed):
    """``{"delta": text}`` events as text arrives, then one summary event (``done: true``),
    or an ``error`` event if the upstream broke mid-stream."""
    async with aclosing(routed.stream.relay()) as items:
        async for item in items:
            if isinstance(item, StreamEnd):
                if item.error is not None:
                    yield stream_error_event(item.error)
                else:
                    summary = generate_answer(chat, routed, item.completion)
                    del summary["response"]
                    yield sse_event({"done": True, **summary})
                return
            if item.text:
                yield sse_event({"delta": item.text})
