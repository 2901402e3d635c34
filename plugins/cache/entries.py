"""A kept answer as bytes (the same in memory and in Redis), and back.

The bytes hold the id of the provider that answered, the completion (text, model, usage,
the OpenAI body, the native body, its cost) and, for a stream, every chunk. A hit decodes
them afresh, so no two answers share a dict that a surface could change.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelbroker import Completion, Native, ProviderConfig, Stored, StreamChunk, Usage


def encode(provider: ProviderConfig, completion: Completion, chunks: list[StreamChunk] | None) -> bytes:
    """The entry's bytes, copied out of orjson's buffer: ``dumps`` returns bytes in a buffer
    sized for the worst case (4 KiB at least, ~13 times a long answer's length) and never
    shrunk, which the memory store's ``max_bytes`` would not see."""
    native = completion.native
    return memoryview(orjson.dumps({
        "provider": provider.id,
        "completion": {
            "text": completion.text, "model": completion.model, "usage": completion.usage,
            "raw": completion.raw, "cost": completion.cost,
            "native": None if native is None else {"format": native.format, "body": native.body},
        },
        "chunks": None if chunks is None else [_chunk(chunk) for chunk in chunks],
    })).tobytes()


def _chunk(chunk: StreamChunk) -> dict[str, Any]:
    return {"raw": chunk.raw, "text": chunk.text, "has_content": chunk.has_content, "usage": chunk.usage,
            "model": chunk.model, "finish_reason": chunk.finish_reason, "native": chunk.native}


def decode(data: bytes, providers: dict[str, ProviderConfig]) -> Stored | None:
    """The stored answer, or None when its provider is no longer configured."""
    entry = orjson.loads(data)
    provider = providers.get(entry["provider"])
    if provider is None:
        return None
    c = entry["completion"]
    native = c["native"]
    completion = Completion(
        text=c["text"], model=c["model"], usage=Usage(**c["usage"]), raw=c["raw"], cost=c["cost"],
        native=None if native is None else Native(native["format"], native["body"]),
    )
    chunks = entry["chunks"]
    if chunks is not None:
        chunks = [StreamChunk(**{**chunk, "usage": None if chunk["usage"] is None else Usage(**chunk["usage"])})
                  for chunk in chunks]
    return Stored(provider, completion, chunks)
