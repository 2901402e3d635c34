"""Helpers for adapters: turn an upstream's failure into a ``ProviderError`` without secrets."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import NamedTuple

import httpx
import orjson

from modelbroker._routing.types import ErrorKind, ProviderError, RateLimit

MAX_MESSAGE = 300


#: A run of characters that may hold a key, or a piece of one.
_KEYLIKE = re.compile(r"[A-Za-z0-9_\-+/=]{8,}")
#: A run sharing this many characters in a row with the secret is masked whole.
_SHARED = 8


def redact(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` masked: whole, and any run of key characters that shares
    8 characters in a row with it (a prefix, a suffix, a piece an upstream echoed back).

    Redact before cutting a text short: a cut can leave a piece of the key behind.
    """
    if not secret or len(secret) < 4:
        return text
    text = text.replace(secret, "***")
    if len(secret) < _SHARED:
        return text
    pieces = {secret[i:i + _SHARED] for i in range(len(secret) - _SHARED + 1)}

    def masked(found: re.Match) -> str:
        run = found.group()
        shares = any(run[i:i + _SHARED] in pieces for i in range(len(run) - _SHARED + 1))
        return "***" if shares else run

    return _KEYLIKE.sub(masked, text)


def safe_message(text: str, secret: str | None) -> str:
    """``text`` fit for a ProviderError's message: the secret masked, then cut to the length
    every error message is held to (MAX_MESSAGE characters)."""
    return redact(text, secret)[:MAX_MESSAGE]


def snippet(body: bytes, secret: str | None, limit: int = 80) -> str:
    """The start of ``body`` as text for a message: the secret masked first, then cut."""
    return redact(body[:4096].decode("utf-8", "replace"), secret)[:limit]


def transport_error(exc: httpx.HTTPError, secret: str | None = None) -> ProviderError:
    """A ProviderError for an httpx failure that produced no HTTP answer."""
    if isinstance(exc, httpx.TimeoutException):
        kind, what = ErrorKind.TIMEOUT, f"{type(exc).__name__}: the upstream did not answer in time"
    elif isinstance(exc, httpx.ConnectError):
        kind, what = ErrorKind.CONNECT, f"cannot connect: {exc}"
    else:
        kind, what = ErrorKind.CONNECTION, f"{type(exc).__name__}: {exc}"
    return ProviderError(kind, safe_message(what, secret))


def status_error(
    status: int, headers: Mapping[str, str], body: bytes, secret: str | None = None
) -> ProviderError:
    """A ProviderError for a non-2xx answer, with the upstream's own message when it gave one."""
    fields = error_fields(body, secret)
    detail, code = fields.message, fields.code
    message = f"upstream answered {status}" + (f": {detail}" if detail else "")
    if status in CONTEXT_STATUSES and code not in CONTEXT_CODES and _CONTEXT_WORDING.search(detail):
        code = CONTEXT_CODE
    return ProviderError(
        ErrorKind.STATUS,
        safe_message(message, secret),
        status=status,
        retry_after=retry_after_seconds(headers),
        code=code,
        rate_limit=rate_limit_of(headers),
        detail=redact(detail, secret)[:MAX_DETAIL] if detail else None,
        error_type=fields.type,
        param=fields.param,
    )


#: The longest upstream message kept whole for the client (the client's own request was at fault).
MAX_DETAIL = 2000


#: The code the retry policy reads for a prompt too long for the model (``_routing/policy.py``).
CONTEXT_CODE = "context_length_exceeded"
CONTEXT_CODES = frozenset({CONTEXT_CODE, "string_above_max_length"})
#: OpenAI-compatible servers that give no such code say so in words, with one of these statuses
#: (vLLM: "This model's maximum context length is 4096 tokens...").
CONTEXT_STATUSES = frozenset({400, 413, 422})
_CONTEXT_WORDING = re.compile(r"context length|context window|maximum context|too many tokens", re.IGNORECASE)


def error_message(body: bytes | str, secret: str | None = None) -> tuple[str, str | None]:
    """The message and the code an upstream put in an error body, whatever its shape.

    Read, in this order: OpenAI's and Anthropic's ``{"error": {"message", "code" or "type"}}``
    (and Google's, whose ``code`` is the status), ``{"error": "text"}``, ``{"message": ...}``,
    ``{"detail": ...}`` (FastAPI servers, a string or a list of problems), ``{"errors": [...]}``,
    ``{"msg": ...}``, any of these as the first item of a JSON array, and a body that is not
    JSON as its start. The secret is masked in the message; either part may be empty or None.
    """
    fields = error_fields(body, secret)
    return fields.message, fields.code


class ErrorFields(NamedTuple):
    """What an upstream's error body says: message, code, and (OpenAI's shape) type and param."""

    message: str
    code: str | None
    type: str | None = None
    param: str | None = None


def error_fields(body: bytes | str, secret: str | None = None) -> ErrorFields:
    """``error_message``'s message and code, with the error's ``type`` and ``param`` when the
    body has OpenAI's or Anthropic's shape (``{"error": {"type", "param"}}``)."""
    raw = body.encode("utf-8", "replace") if isinstance(body, str) else body
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ErrorFields(snippet(raw, secret, 120).strip(), None)
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        return ErrorFields("", None)
    message, code = _message_of(data)
    error = data.get("error")
    kind = param = None
    if isinstance(error, dict):
        kind = error.get("type") if isinstance(error.get("type"), str) else None
        param = error.get("param") if isinstance(error.get("param"), str) else None
    return ErrorFields(redact(message, secret), code, kind, param)


def _message_of(data: dict) -> tuple[str, str | None]:
    error = data.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or error.get("status")
        return _text(error.get("message") or code), _text(code) or None
    if isinstance(error, str):
        return error, _text(data.get("code") or data.get("type")) or None
    for key in ("message", "detail", "msg"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value, _text(data.get("code") or data.get("type")) or None
        if key == "detail" and isinstance(value, list) and value:  # FastAPI: [{"loc", "msg", "type"}]
            return "; ".join(_text(item.get("msg") if isinstance(item, dict) else item) for item in value), None
    errors = data.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return _message_of({"error": errors[0]})
    return "", None


def _text(value: object) -> str:
    return "" if value is None else str(value)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SECONDS_PER = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def rate_limit_of(headers: Mapping[str, str]) -> RateLimit | None:
    """The ``x-ratelimit-remaining-*`` and ``-reset-*`` headers (OpenAI, Groq and others), if any."""
    requests = int_header(headers.get("x-ratelimit-remaining-requests"))
    tokens = int_header(headers.get("x-ratelimit-remaining-tokens"))
    if requests is None and tokens is None:
        return None
    return RateLimit(
        remaining_requests=requests,
        remaining_tokens=tokens,
        reset_requests_s=duration_seconds(headers.get("x-ratelimit-reset-requests")),
        reset_tokens_s=duration_seconds(headers.get("x-ratelimit-reset-tokens")),
    )


def duration_seconds(value: str | None) -> float | None:
    """``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"`` or a plain number of seconds."""
    if not value:
        return None
    if value[-1] not in "hms":  # no float() text ends so; OpenAI's resets ("6ms") skip the exception
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    parts = _DURATION.findall(value)
    if not parts:
        return None
    return sum(float(number) * _SECONDS_PER[unit] for number, unit in parts)


def int_header(value: str | None) -> int | None:
    """An integer header's value, or None if absent or not an integer."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
