"""OpenAI embeddings requests <-> Gemini's ``embedContent`` and ``batchEmbedContents``, for
``plugins.gemini`` (a ``type: gemini`` provider of ``kind: embeddings``).

Pure functions on dicts, no I/O. One input goes to ``models/{model}:embedContent``, several to
``:batchEmbedContents``, at most 100 a call (Gemini refuses more), so a long list takes several
calls. ``dimensions`` becomes ``outputDimensionality``; a task type (``RETRIEVAL_QUERY``,
``RETRIEVAL_DOCUMENT``, ``SEMANTIC_SIMILARITY``...) comes from the request's ``task_type`` field,
else ``options.task_type``. Gemini reports no usage, so the tokens are estimated. It embeds
text only: token arrays are refused with a 400, which moves the request on to a provider that
takes them, and is the client's answer when none does.
"""

from __future__ import annotations

from typing import Any

from modelbroker import ChatRequest, ErrorKind, ProviderError, Usage

#: The most requests Gemini takes in one ``batchEmbedContents`` call.
MAX_BATCH = 100
SINGLE, BATCH = "embedContent", "batchEmbedContents"


def input_texts(value: Any, provider_id: str = "gemini") -> list[str]:
    """The texts to embed; raises a 400 ProviderError for token arrays, which Gemini cannot take."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    message = (f"provider {provider_id!r} (type gemini) embeds text only, and this input is token ids: send the "
               "text itself, or add an embeddings provider that takes token arrays (type openai)")
    raise ProviderError(ErrorKind.STATUS, message, status=400, code="unsupported_input", detail=message,
                        error_type="invalid_request_error", param="input")


def embed_calls(request: ChatRequest, model: str, options: dict[str, Any],
                provider_id: str = "gemini") -> list[tuple[str, dict[str, Any]]]:
    """``(method, body)`` of each upstream call, in input order."""
    texts = input_texts(request.extra.get("input"), provider_id)
    settings = embed_settings(request.extra, options)
    if len(texts) == 1:
        return [(SINGLE, {"content": {"parts": [{"text": texts[0]}]}, **settings})]
    name = "models/" + model.removeprefix("models/")
    requests = [{"model": name, "content": {"parts": [{"text": text}]}, **settings} for text in texts]
    return [(BATCH, {"requests": requests[start:start + MAX_BATCH]}) for start in range(0, len(requests), MAX_BATCH)]


def embed_settings(extra: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    task = extra.get("task_type") or options.get("task_type")
    if isinstance(task, str) and task:
        settings["taskType"] = task.upper()
    if extra.get("dimensions") is not None:
        settings["outputDimensionality"] = extra["dimensions"]
    return settings


def read_vectors(data: Any, method: str, expected: int) -> list[list[float]]:
    """The vectors of an ``EmbedContentResponse`` (``{"embedding": {"values"}}``) or a
    ``BatchEmbedContentsResponse`` (``{"embeddings": [...]}``), ``expected`` of them; raises
    ProviderError(malformed) otherwise."""
    found = None
    if isinstance(data, dict):
        found = [data.get("embedding")] if method == SINGLE else data.get("embeddings")
    if not isinstance(found, list) or not all(isinstance(e, dict) and isinstance(e.get("values"), list)
                                              for e in found):
        raise ProviderError(ErrorKind.MALFORMED, f"not a Gemini {method} response (no embedding values)")
    if len(found) != expected:
        raise ProviderError(ErrorKind.MALFORMED, f"the upstream answered {len(found)} embeddings for "
                                                 f"{expected} inputs")
    return [e["values"] for e in found]


def embeddings_list(vectors: list[list[float]], model: str, usage: Usage) -> dict[str, Any]:
    """OpenAI's embeddings list, as the ``embeddings`` surface relays it."""
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
    }
