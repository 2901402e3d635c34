"""``POST /v1/messages/count_tokens``: how many input tokens a Messages request would use.

An estimate with the gateway's own tokenizer (``estimate_tokens``, about four characters a
token), not the upstream's count: the request may go to any provider, and the answer must
not cost a call. The text counted is what the model reads: the system prompt, every
message's text, tool calls and results, and the tools' definitions; an image counts as
``IMAGE_TOKENS``, what Anthropic charges for one of about 1.1 megapixels.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request

from modelbroker import error_responses, estimate_tokens, request_body_schema
from modelbroker.plugins.messages.body import COUNT_TOKENS_BODY, checked
from modelbroker.plugins.messages.convert import chat_messages

IMAGE_TOKENS = 1600


def routes() -> APIRouter:
    """The route, under ``/v1`` and without (as the surface's own paths)."""
    router = APIRouter(tags=["messages"])
    extra = {**request_body_schema(COUNT_TOKENS_BODY)}
    router.add_api_route("/v1/messages/count_tokens", count_tokens, methods=["POST"],
                         summary="Count a Messages request's input tokens (an estimate)",
                         openapi_extra=extra, responses=error_responses(400, 401, 413, 415, 503))
    router.add_api_route("/messages/count_tokens", count_tokens, methods=["POST"], include_in_schema=False)
    return router


async def count_tokens(request: Request) -> dict[str, int]:
    """``{"input_tokens": N}``; a bad body is a 400 naming the field, in Anthropic's shape."""
    data = checked(await request.body(), COUNT_TOKENS_BODY)
    return {"input_tokens": input_tokens(data)}


def input_tokens(data: dict[str, Any]) -> int:
    texts, images = [], 0
    for message in chat_messages(data):
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        for part in content if isinstance(content, list) else ():
            if part.get("type") == "text":
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                images += 1
        for call in message.get("tool_calls") or ():
            texts.append(call["function"]["name"])
            texts.append(call["function"]["arguments"])
    if data.get("tools"):
        texts.append(orjson.dumps(data["tools"]).decode())
    return estimate_tokens("\n".join(texts)) + images * IMAGE_TOKENS
