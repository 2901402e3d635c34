"""OpenAI's embeddings wire format, for ``type: openai`` providers of ``kind: embeddings``.

Pure functions, no I/O (``plugins.openai_http`` makes the call): the body posted to the
provider's ``endpoint`` (its embeddings URL: ``https://api.openai.com/v1/embeddings``, a local
vLLM, Ollama or TEI server's ``.../v1/embeddings``), and the answer read back as a
``Completion`` whose ``raw`` is OpenAI's embeddings list, which the ``embeddings`` surface relays.

The client's ``encoding_format`` is forwarded as it came: the SDKs ask for base64 by
default, so the vectors usually travel as base64 from the upstream to the client, and the
gateway never decodes them. ``options.encoding_format`` (``float`` or ``base64``) overrides it
for a server that lacks one of the two; the surface converts to what the client asked for.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelbroker import ChatRequest, Completion, ErrorKind, ProviderError, Usage, snippet

FORMATS = ("float", "base64")


def request_body(model: str, request: ChatRequest, options: dict[str, Any]) -> dict[str, Any]:
    """The upstream body: the client's fields (``input``, ``dimensions``, ``encoding_format``,
    ``user``, any other), with the provider's model and, if set, its ``encoding_format``."""
    body = dict(request.extra)
    body["model"] = model
    forced = options.get("encoding_format")
    if forced in FORMATS:
        body["encoding_format"] = forced
    return body


def input_count(value: Any) -> int:
    """How many vectors ``input`` asks for: a string or one token array is one input."""
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


def parse_embeddings(content: bytes, fallback_model: str, expected: int, secret: str | None = None) -> Completion:
    """Read an OpenAI embeddings list holding ``expected`` vectors (each a list of numbers or a
    base64 string); raises ProviderError(malformed) for anything else. A body without usage
    gives ``Usage()``, which the caller replaces with an estimate."""
    try:
        data = orjson.loads(content)
        items = data["data"]
        readable = isinstance(items, list) and all(isinstance(item["embedding"], (list, str)) for item in items)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        readable = False
    if not readable:
        raise ProviderError(ErrorKind.MALFORMED,
                            f"not an OpenAI embeddings list (body starts {snippet(content, secret)!r})")
    if len(items) != expected:
        raise ProviderError(ErrorKind.MALFORMED, f"the upstream answered {len(items)} embeddings for "
                                                 f"{expected} inputs")
    return Completion(text="", model=str(data.get("model") or fallback_model), usage=parse_usage(data.get("usage")),
                      raw=data)


def parse_usage(usage: Any) -> Usage:
    """``{"prompt_tokens", "total_tokens"}``; an embedding has no completion tokens."""
    if not isinstance(usage, dict):
        return Usage()
    prompt = usage.get("prompt_tokens")
    prompt = prompt if isinstance(prompt, int) and prompt >= 0 else 0
    total = usage.get("total_tokens")
    return Usage(prompt_tokens=prompt, total_tokens=total if isinstance(total, int) and total >= prompt else prompt)
