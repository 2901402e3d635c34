"""Surface ``embeddings``: ``POST /v1/embeddings``, OpenAI's embeddings API over the providers
of ``kind: embeddings`` (also answered without ``/v1``).

The request is checked cheaply (the shape of ``input``, ``dimensions``, ``encoding_format``,
``user``; a 400 names the field) and routed as a chat request is: ``model`` picks among the
embeddings providers (id, model name, provider name, ``auto``, a strategy), with fallback,
retries and cooldowns. It is never streamed. The answer is OpenAI's list, from the adapter's
``Completion.raw``, with each vector in the ``encoding_format`` the client asked for
(``float`` by default; the SDKs ask for ``base64``): the adapters forward the client's
choice, so a conversion happens only when an upstream answered in the other form (Gemini
always sends floats, a server may ignore ``base64``, or a provider's ``options`` fix the form).
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from modelbroker import (
    APIError,
    ChatRequest,
    Incoming,
    Routed,
    error_responses,
    hookimpl,
    invalid_fields,
    json_object,
    request_body_schema,
)

NAME = "embeddings"
#: OpenAI's limit on the inputs of one request (a token array is one input).
MAX_INPUTS = 2048
#: Request fields the gateway reads itself and does not pass on.
OWNED_FIELDS = frozenset({"model"})
LITTLE_ENDIAN = sys.byteorder == "little"

Text = Annotated[str, Field(min_length=1)]
#: Token ids are checked to be integers, not to be in the model's vocabulary (which only the
#: upstream knows; a negative id is one more id outside it). A bound on each id would also cost
#: several times the check itself: a long token array is thousands of them.
TokenArray = Annotated[list[int], Field(min_length=1)]


@with_config(ConfigDict(extra="allow", strict=True))
class EmbeddingsFields(TypedDict):
    """The fields besides ``input``; others are allowed and passed through."""

    model: NotRequired[Annotated[str, Field(min_length=1, json_schema_extra={"default": "auto"})]]
    dimensions: NotRequired[Annotated[int, Field(ge=1)] | None]
    encoding_format: NotRequired[Literal["float", "base64"] | None]
    user: NotRequired[str | None]


# For /openapi.json. A request is checked against the one shape its ``input`` has (the four
# below): checked against the union, a mismatch would be reported once for every shape.
class EmbeddingsBody(EmbeddingsFields):
    """OpenAI's embeddings request; other fields are allowed and passed on to OpenAI-style upstreams."""

    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] | TokenArray | Annotated[
        list[TokenArray], Field(min_length=1, max_length=MAX_INPUTS)]


class OneText(EmbeddingsFields):
    input: Text


class Texts(EmbeddingsFields):
    input: Annotated[list[Text], Field(max_length=MAX_INPUTS)]


class Tokens(EmbeddingsFields):
    input: TokenArray


class TokenArrays(EmbeddingsFields):
    input: Annotated[list[TokenArray], Field(max_length=MAX_INPUTS)]


ONE_TEXT, TEXTS, TOKENS, TOKEN_ARRAYS = (TypeAdapter(shape) for shape in (OneText, Texts, Tokens, TokenArrays))
SHAPES = "a string, a list of strings, a token array (a list of integers) or a list of token arrays"


class Embeddings:
    """The OpenAI embeddings API."""

    paths = ("/v1/embeddings", "/embeddings")
    summary = "Embeddings (OpenAI)"
    openapi = {
        **request_body_schema(TypeAdapter(EmbeddingsBody)),
        "responses": {
            200: {"description": "An OpenAI embeddings `list`: one `embedding` per input, in order, as numbers "
                                 "or (with `encoding_format: base64`) little-endian float32 in base64."},
            **error_responses(400, 401, 403, 404, 413, 415, 429, 500, 502, 503, 504),
        },
    }

    def parse(self, body: bytes, incoming: Incoming) -> ChatRequest:
        data = parse_embeddings_body(body)
        user = data.get("user")
        return ChatRequest(
            messages=[],
            kind="embeddings",
            model=data.get("model") or "auto",
            client=user if isinstance(user, str) else None,
            extra={k: v for k, v in data.items() if k not in OWNED_FIELDS},
        )

    def answer(self, request: ChatRequest, routed: Routed) -> dict[str, Any]:
        return embeddings_body(request, routed)

    def stream(self, request: ChatRequest, routed: Routed):
        raise RuntimeError("an embeddings request is never streamed (parse never sets stream)")


@hookimpl
def register_surfaces(register):
    register(NAME, Embeddings)


def parse_embeddings_body(raw: bytes) -> dict[str, Any]:
    """The request as a dict, after checking it; raises APIError 400 naming the field."""
    data = json_object(raw, "an OpenAI embeddings request")
    try:
        shape_of(data.get("input")).validate_python(data)
    except ValidationError as exc:
        raise invalid_fields(exc) from None
    return data


def shape_of(value: Any) -> TypeAdapter:
    """The check for the shape ``input`` has, told from its first item; raises APIError for an
    ``input`` of no shape at all."""
    if isinstance(value, list):
        if not value:
            raise APIError(400, f"input: must not be empty; give {SHAPES}", code="invalid_field", param="input")
        first = value[0]
        if isinstance(first, list):
            return TOKEN_ARRAYS
        return TOKENS if isinstance(first, int) and not isinstance(first, bool) else TEXTS
    if value is None or isinstance(value, str):
        return ONE_TEXT  # also says that a missing input is required
    raise APIError(400, f"input: must be {SHAPES}", code="invalid_field", param="input")


def embeddings_body(request: ChatRequest, routed: Routed) -> dict[str, Any]:
    """OpenAI's list from the adapter's answer, each vector in the form the client asked for."""
    completion = routed.completion
    body = completion.raw
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise APIError(502, f"provider {routed.provider.id!r} answered without embeddings: its adapter "
                            "gave no OpenAI embeddings list in Completion.raw", code="bad_upstream_answer")
    as_base64 = request.extra.get("encoding_format") == "base64"
    try:
        for index, item in enumerate(items):
            vector = item["embedding"]
            if as_base64 and isinstance(vector, list):
                item["embedding"] = to_base64(vector)
            elif not as_base64 and isinstance(vector, str):
                item["embedding"] = to_floats(vector)
            if "index" not in item:
                item["index"] = index
            if "object" not in item:
                item["object"] = "embedding"
    except (KeyError, TypeError, ValueError, OverflowError, binascii.Error):
        raise APIError(502, f"provider {routed.provider.id!r} answered an embedding that is neither a list "
                            "of numbers nor base64 float32", code="bad_upstream_answer") from None
    body["object"] = "list"
    if not body.get("model"):
        body["model"] = completion.model
    if not isinstance(body.get("usage"), dict):
        usage = completion.usage
        body["usage"] = {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens}
    return body


def to_base64(vector: list[float]) -> str:
    """Little-endian float32 in base64, as OpenAI encodes ``encoding_format: base64``."""
    packed = array("f", vector)
    if not LITTLE_ENDIAN:
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def to_floats(text: str) -> list[float]:
    """The numbers of a base64 vector (little-endian float32)."""
    packed = array("f")
    packed.frombytes(base64.b64decode(text, validate=True))
    if not LITTLE_ENDIAN:
        packed.byteswap()
    return packed.tolist()
