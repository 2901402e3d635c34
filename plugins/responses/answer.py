"""The Response object: the request's echoed fields, the output items, the status and usage,
from a chat completion (``Completion.raw``, whichever adapter answered)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from modelbroker import Completion, Usage
from modelbroker.plugins.responses.request import ECHO_DEFAULTS, ECHO_DEFAULTS_JSON, ResponseCall

#: A chat finish_reason that cut the answer short, as the Response's ``incomplete_details.reason``.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
#: A message item's JSON once its content is known: its id's JSON, its status, and its
#: content parts' JSON.
MESSAGE_JSON = b'{"id":%b,"type":"message","status":"%b","role":"assistant","content":[%b]}'
#: A content part's JSON from its text's JSON, per kind of part.
PART_JSON = {"output_text": b'{"type":"output_text","text":%b,"annotations":[],"logprobs":[]}',
             "refusal": b'{"type":"refusal","refusal":%b}'}


def response_json(call: ResponseCall, model: str, status: str, output: bytes, usage: Usage | None, *,
                  reason: str | None = None, error: dict[str, Any] | None = None) -> bytes:
    """A whole Response, as JSON, with ``output`` (the output items' array, as JSON);
    ``status`` ``in_progress`` (no usage yet), ``completed``, ``incomplete`` (with ``reason``)
    or ``failed`` (with ``error``).

    Put together from its parts' JSON rather than serialized from one dict: what stays the
    same for a request (its id and time, and the fields the echo holds: a third of the
    bytes) is serialized once, though a stream sends the Response three times."""
    head, echo = call.json_parts or call_json_parts(call)
    return b"".join((
        head, status.encode(), b'","completed_at":',
        b"%d" % time.time() if status == "completed" else b"null",
        b',"background":false,"error":', b"null" if error is None else orjson.dumps(error),
        b',"incomplete_details":', b'{"reason":%s}' % orjson.dumps(reason) if reason else b"null",
        b",", echo, b'"model":', orjson.dumps(model), b',"output":', output,
        # absent until the end: the published schema has no null usage
        usage_json(usage) if usage is not None else b"}",
    ))


def call_json_parts(call: ResponseCall) -> tuple[bytes, bytes]:
    """A request's Response JSON up to its status, and its echoed fields (each followed by a
    comma), made when its first Response is written (``ResponseCall.json_parts``)."""
    head = b'{"id":%b,"object":"response","created_at":%d,"status":"' % (orjson.dumps(call.response_id),
                                                                           call.created_at)
    if call.echo is ECHO_DEFAULTS:
        echo = ECHO_DEFAULTS_JSON
    else:
        echo = orjson.dumps(call.echo)[1:-1] + b"," if call.echo else b""
    call.json_parts = head, echo
    return head, echo


#: A Response's usage, and the end of the Response: chat usage in the Responses API's words.
USAGE_FORMAT = (b',"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":%d,"cache_write_tokens":0},'
                b'"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":%d},"total_tokens":%d}}')


def usage_json(usage: Usage) -> bytes:
    """The Response's ``usage`` field and its closing brace; counts the upstream did not give are 0."""
    return USAGE_FORMAT % (usage.prompt_tokens or 0, usage.cached_tokens or 0, usage.completion_tokens or 0,
                           usage.reasoning_tokens or 0, usage.total_tokens or 0)


def whole_response(call: ResponseCall, completion: Completion) -> bytes:
    """The Response for a whole (not streamed) answer, as JSON."""
    choices = (completion.raw or {}).get("choices")
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    reason = INCOMPLETE.get(choice.get("finish_reason"))
    status = "incomplete" if reason else "completed"
    if message and isinstance(message, dict):
        output = output_json(call.response_id, _text_of(message.get("content")), message.get("refusal"),
                             message.get("tool_calls"), status)
    else:
        output = output_json(call.response_id, _text_of(completion.text), None, None, status)
    return response_json(call, completion.model, status, output, completion.usage, reason=reason)


def output_json(response_id: str, text: str, refusal: Any, tool_calls: Any, status: str) -> bytes:
    """The output items, as a JSON array: a message item (unless the answer is only tool calls),
    then a function_call item per call."""
    calls = [call for call in tool_calls if isinstance(call, dict)] if tool_calls else ()
    items = []
    if text or refusal or not calls:
        parts = [PART_JSON["output_text"] % orjson.dumps(text)] if text or not refusal else []
        if refusal:
            parts.append(PART_JSON["refusal"] % orjson.dumps(str(refusal)))
        items.append(MESSAGE_JSON % (orjson.dumps(message_id(response_id)), status.encode(), b",".join(parts)))
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        items.append(orjson.dumps(function_call_item(response_id, index, call.get("id"), function.get("name"),
                                                     function.get("arguments"), "completed")))
    return b"[%b]" % b",".join(items)


def message_id(response_id: str, number: int = 0) -> str:
    return f"msg_{response_id[5:]}_{number}" if number else f"msg_{response_id[5:]}"


def function_call_item(response_id: str, index: int, call_id: Any, name: Any, arguments: Any,
                       status: str) -> dict[str, Any]:
    """A function_call item; a call the upstream gave no id gets one, which the client sends back."""
    suffix = f"{response_id[5:]}_{index}"
    return {"id": f"fc_{suffix}", "type": "function_call", "status": status,
            "arguments": arguments if isinstance(arguments, str) else "",
            "call_id": call_id if isinstance(call_id, str) and call_id else f"call_{suffix}",
            "name": name if isinstance(name, str) else ""}


def _text_of(content: Any) -> str:
    """A chat message's content as text: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""
