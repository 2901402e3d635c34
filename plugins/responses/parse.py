"""A Responses API request as the gateway's ``ChatRequest``: the checked fields placed where
chat-speaking adapters read them, and what the answer repeats kept aside (``ResponseCall``)."""

from __future__ import annotations

import time
from typing import Any

from modelbroker import Principal
from modelbroker.plugins.responses.convert import chat_messages
from modelbroker.plugins.responses.fields import PASSED_ON, read_fields
from modelbroker.plugins.responses.request import ECHO_DEFAULTS, ResponseCall, ResponsesRequest, invalid

#: Fields a Response repeats as they were sent (strings that a Response never holds as null).
ECHOED = frozenset(("instructions", "max_output_tokens", "max_tool_calls", "metadata", "parallel_tool_calls",
                    "previous_response_id", "reasoning", "store", "temperature", "top_p", "user", "prompt_cache_key",
                    "safety_identifier", "service_tier"))


def new_request(data: dict[str, Any], principal: Principal | None, retention_s: float) -> ResponsesRequest:
    """The request for ``data``, a body already read as a JSON object; raises APIError 400
    naming the field. Its messages hold the instructions and this request's own input; a
    previous response's conversation is put before them later (``with_history``)."""
    read = read_fields(data)
    previous = read.get("previous_response_id")
    given = read.get("input")
    if isinstance(given, str):  # the short form: one user message
        items = [{"type": "message", "role": "user", "content": given}]
        said = [{"role": "user", "content": given}]
    else:
        items = input_items(given, previous is not None)
        said = chat_messages(items)
    instructions = read.get("instructions")
    messages = [{"role": "system", "content": instructions}, *said] if instructions else said
    echoed: dict[str, Any] = {}
    extra = chat_extra(read, echoed)
    for name, value in read.items():  # the few fields sent, rather than every field that could be
        if name in ECHOED:
            echoed[name] = value
        if name in PASSED_ON:
            extra[name] = value
    echo = {**ECHO_DEFAULTS, **echoed} if echoed else ECHO_DEFAULTS
    request = ResponsesRequest(
        messages=messages,
        model=read.get("model", "auto"),
        max_tokens=read.get("max_output_tokens"),
        temperature=read.get("temperature"),
        stream=read.get("stream", False),
        client=read.get("user"),
        extra=extra,
    )
    store = read.get("store", True)
    request.call = ResponseCall(
        response_id=f"resp_{request.uid}",
        created_at=int(time.time()),
        input=items,
        echo=echo,
        store=store,
        owner=principal.name if principal is not None else None,
        retention_s=retention_s,
        previous_response_id=previous,
    )
    return request


def input_items(value: Any, continues: bool) -> list[dict[str, Any]]:
    """``input`` given as a list of items (or left out, continuing a stored response)."""
    if isinstance(value, list) and (value or continues):
        return value
    if value is None and continues:
        return []
    if value is None:
        raise invalid("input", "is required: a string, or an array of input items", "missing_required_parameter")
    if isinstance(value, list):
        raise invalid("input", "is empty: give at least one input item")
    raise invalid("input", "must be a string or an array of input items", "invalid_type")


def chat_extra(read: dict[str, Any], echo: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions fields for the upstream (``ChatRequest.extra``); the Response's
    ``tools``, ``tool_choice`` and ``text`` go to ``echo`` (the fields it repeats otherwise
    than ``ECHO_DEFAULTS``)."""
    extra: dict[str, Any] = {}
    if "tools" in read:
        tools, echo["tools"] = read["tools"]
        if tools:  # chat refuses tool_choice and parallel_tool_calls without tools
            extra["tools"] = tools
            if "tool_choice" in read:
                extra["tool_choice"] = read["tool_choice"][0]
            if "parallel_tool_calls" in read:
                extra["parallel_tool_calls"] = read["parallel_tool_calls"]
    if "tool_choice" in read:
        echo["tool_choice"] = read["tool_choice"][1]
    if "top_p" in read:
        extra["top_p"] = read["top_p"]
    if "text" in read:
        form, verbosity, echo["text"] = read["text"]
        if form is not None:
            extra["response_format"] = form
        if verbosity is not None:
            extra["verbosity"] = verbosity
    if "reasoning" in read and read["reasoning"]["effort"] is not None:
        extra["reasoning_effort"] = read["reasoning"]["effort"]
    return extra


def with_history(request: ResponsesRequest, history: list[dict[str, Any]]) -> None:
    """Put the earlier conversation (chat messages, oldest first) after the instructions."""
    at = 1 if request.call.echo["instructions"] else 0
    request.messages[at:at] = history
