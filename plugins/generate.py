"""Surface ``generate``: ``POST /generate``, the simple API. A prompt in; the text, model,
tokens and cost out (or, with ``stream: true``, the text as it comes, then a summary)."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelbroker import (
    APIError,
    ChatRequest,
    Completion,
    Incoming,
    Routed,
    StreamEnd,
    error_responses,
    hookimpl,
    invalid_fields,
    request_body_schema,
    sse_event,
)

NAME = "generate"


class GenerateBody(BaseModel):
    """The request body of POST /generate."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, description="The prompt, sent as one user message.")
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    strategy: str | None = Field(default=None, description="Override the configured strategy.")
    stream: bool = Field(default=False, description="Answer with server-sent events, text deltas as they come.")
    max_cost: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                   description="Skip providers whose worst case would cost more (docs/cost.md).")


class Generate:
    """The gateway's own simple API (the seed's ``POST /generate``)."""

    paths = ("/generate",)
    summary = "Generate: a prompt in, the text out"
    openapi = {
        **request_body_schema(GenerateBody),
        "responses": {
            200: {"description": "The answer; with `stream: true`, server-sent events of text deltas.",
                  "content": {"text/event-stream": {}}},
            **error_responses(400, 401, 403, 413, 415, 422, 429, 500, 502, 503, 504),
        },
    }

    def parse(self, body: bytes, incoming: Incoming) -> ChatRequest:
        data = parse_body(body)
        strategies = incoming.gateway.strategies
        if data.strategy is not None and data.strategy not in strategies:
            raise APIError(400, f"unknown strategy {data.strategy!r}; installed strategies: {', '.join(strategies)}",
                           code="unknown_strategy", param="strategy")
        return ChatRequest(
            messages=[{"role": "user", "content": data.prompt}],
            strategy=data.strategy,
            max_tokens=data.max_tokens,
            temperature=data.temperature,
            stream=data.stream,
            max_cost=data.max_cost,
        )

    def answer(self, request: ChatRequest, routed: Routed) -> dict[str, Any]:
        return generate_answer(request, routed, routed.completion)

    def stream(self, request: ChatRequest, routed: Routed):
        return stream_events(request, routed)


@hookimpl
def register_surfaces(register):
    register(NAME, Generate)


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
        raise invalid_fields(exc, 422) from None


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
        # an answer from a store (the cache) took no attempt: its time is the request's own
        "latency_ms": round(routed.attempts[-1].elapsed_ms if routed.attempts else completion.overhead_ms, 1),
        "attempts": len(routed.attempts),
        "request_id": chat.request_id,
    }


async def stream_events(chat: ChatRequest, routed: Routed):
    """``{"delta": text}`` events as text arrives, then one summary event (``done: true``),
    or an ``error`` event if the upstream broke mid-stream."""
    async with aclosing(routed.relay()) as items:
        async for item in items:
            if isinstance(item, StreamEnd):
                if item.error is not None:
                    yield sse_event({"error": {
                        "message": f"the upstream failed mid-stream; the answer is incomplete: {item.error.message}",
                        "type": "upstream_error", "param": None, "code": "stream_interrupted"}})
                else:
                    summary = generate_answer(chat, routed, item.completion)
                    del summary["response"]
                    yield sse_event({"done": True, **summary})
                return
            if item.text:
                yield sse_event({"delta": item.text})
