"""The request body of ``POST /v1/responses`` as /openapi.json describes it.

Written out rather than derived from a model: the body is checked by plain code
(``request.py``, ``convert.py``), and this only documents it. OpenAI's own schema
(github.com/openai/openai-openapi) has every detail; the descriptions say what the
gateway does with each field.
"""

from __future__ import annotations

_NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}


def _nullable(schema: dict, description: str) -> dict:
    return {"anyOf": [schema, {"type": "null"}], "description": description}


PROPERTIES = {
    "model": {"type": "string", "minLength": 1, "default": "auto",
              "description": "a provider id, a model name, a provider name, `auto` or a strategy name"},
    "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}],
              "description": "a user message's text, or input items: messages (role user, assistant, system or "
                             "developer; content a string or input_text, input_image, input_file, input_audio "
                             "parts), function_call and function_call_output items"},
    "instructions": {**_NULLABLE_STRING, "description": "a system message put first; not carried over by "
                                                       "previous_response_id"},
    "previous_response_id": {**_NULLABLE_STRING, "description": "continue a stored response's conversation"},
    "store": _nullable({"type": "boolean", "default": True}, "keep the response for retrieval and "
                                                             "previous_response_id (plugins.responses.retention_days)"),
    "stream": _nullable({"type": "boolean", "default": False}, "answer with server-sent events"),
    "tools": _nullable({"type": "array", "items": {"type": "object"}},
                       "function tools: {type: function, name, description, parameters, strict}; hosted tools "
                       "(web_search, file_search, ...) are refused"),
    "tool_choice": {"anyOf": [{"type": "string", "enum": ["none", "auto", "required"]}, {"type": "object"},
                              {"type": "null"}]},
    "parallel_tool_calls": _nullable({"type": "boolean"}, "passed on when tools are given"),
    "max_output_tokens": _nullable({"type": "integer", "minimum": 1}, "the upstream's max_tokens"),
    "temperature": _nullable({"type": "number", "minimum": 0, "maximum": 2}, "sampling temperature"),
    "top_p": _nullable({"type": "number", "minimum": 0, "maximum": 1}, "nucleus sampling"),
    "text": _nullable({"type": "object"}, "format: text, json_object or json_schema (the upstream's "
                                          "response_format); verbosity"),
    "reasoning": _nullable({"type": "object"}, "effort becomes the upstream's reasoning_effort"),
    "metadata": _nullable({"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 16},
                          "kept with the response"),
    "user": {**_NULLABLE_STRING, "description": "names the caller in the ledger (without a client key)"},
}

REQUEST_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {
        "type": "object",
        "properties": PROPERTIES,
        # Other fields of OpenAI's API are read as well (include, truncation, prompt_cache_key, ...);
        # a field OpenAI's API does not have is refused.
        "additionalProperties": True,
    }}},
}
