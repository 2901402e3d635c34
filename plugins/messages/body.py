"""The Messages API request, checked: its fields here, its content blocks in ``convert.py``.

Strict, as the chat surface is: ``"max_tokens": "5"`` is refused, since the body goes to an
Anthropic upstream as sent. Fields not listed are allowed and pass through to Anthropic
(``thinking``, ``service_tier``, ``mcp_servers``, ...). ``system`` and message contents
may each be a string or a list of blocks; they are checked where they are read, so a bad one
is named once (``messages[2].content[0].source``), not once per form it could have taken.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import NotRequired, TypedDict

from modelbroker import checked_json


@with_config(ConfigDict(extra="allow", strict=True))
class MessageParam(TypedDict):
    role: Literal["user", "assistant"]
    #: A string or a list of content blocks (``text``, ``image``, ``tool_use``, ``tool_result``, ...).
    content: Any


@with_config(ConfigDict(extra="allow", strict=True))
class ToolChoice(TypedDict):
    type: Literal["auto", "any", "tool", "none"]
    name: NotRequired[Annotated[str, Field(min_length=1)]]
    disable_parallel_tool_use: NotRequired[bool]


@with_config(ConfigDict(extra="allow", strict=True))
class Tool(TypedDict):
    """A tool of the client's (``input_schema``), or one of Anthropic's own (a ``type`` such as
    ``web_search_20250305``), which only an Anthropic upstream can run."""

    name: Annotated[str, Field(min_length=1)]
    type: NotRequired[str | None]
    description: NotRequired[str]
    input_schema: NotRequired[dict[str, Any]]


@with_config(ConfigDict(extra="allow", strict=True))
class Metadata(TypedDict):
    user_id: NotRequired[str | None]


@with_config(ConfigDict(extra="allow", strict=True))
class MessagesBody(TypedDict):
    """Anthropic's ``POST /v1/messages`` body; fields not listed here are allowed and passed on."""

    model: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)]
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    #: A string or a list of ``text`` blocks.
    system: NotRequired[Any]
    tools: NotRequired[list[Tool] | None]
    tool_choice: NotRequired[ToolChoice | None]
    stop_sequences: NotRequired[list[str] | None]
    temperature: NotRequired[Annotated[float, Field(ge=0, le=1)] | None]
    top_p: NotRequired[Annotated[float, Field(ge=0, le=1)] | None]
    top_k: NotRequired[Annotated[int, Field(ge=0)] | None]
    metadata: NotRequired[Metadata | None]
    stream: NotRequired[bool | None]


@with_config(ConfigDict(extra="allow", strict=True))
class CountTokensBody(TypedDict):
    """``POST /v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[MessageParam], Field(min_length=1)]
    system: NotRequired[Any]
    tools: NotRequired[list[Tool] | None]
    tool_choice: NotRequired[ToolChoice | None]


MESSAGES_BODY = TypeAdapter(MessagesBody)
COUNT_TOKENS_BODY = TypeAdapter(CountTokensBody)


def checked(raw: bytes, adapter: TypeAdapter = MESSAGES_BODY) -> dict[str, Any]:
    """The body as a dict once ``adapter`` has checked it; raises APIError 400 naming the fields."""
    return checked_json(raw, adapter, "an Anthropic Messages request")
