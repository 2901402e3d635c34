"""Client keys as text: how one is made, hashed, recognised, and read from a request.

A key is ``mb-`` followed by 43 URL-safe characters (32 random bytes). Only its
SHA-256 hash is stored, with a short prefix for people to recognise it by; the
key itself is shown once, when it is created.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

KEY_START = "mb-"
#: Characters of the key kept in the table (``mb-`` and 8 more) so a person can tell keys apart.
PREFIX_LENGTH = len(KEY_START) + 8
#: Key names: they name the client in the ledger and in the shared-state counters.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def new_key() -> str:
    """A fresh key: ``mb-`` + ``secrets.token_urlsafe(32)``."""
    return KEY_START + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The key's SHA-256, as 64 hex digits: what the table holds."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_prefix(key: str) -> str:
    """The start of the key shown by ``modelbroker keys list``."""
    return key[:PREFIX_LENGTH]


def same_hash(stored: str, presented: str) -> bool:
    """Compare two hashes in constant time."""
    return hmac.compare_digest(stored.encode("ascii"), presented.encode("ascii"))


def check_name(name: str) -> str:
    """``name`` if it is a valid key name; else ValueError saying what is allowed."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"invalid key name {name!r}: use 1 to 64 letters, digits, '.', '_', '-' or '@', "
            "starting with a letter or digit"
        )
    return name


def presented_key(authorization: str | None, x_api_key: str | None, *, basic: bool = False) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>`` (the OpenAI SDKs), else
    ``x-api-key: <key>`` (the Anthropic SDKs and Claude Code's ``ANTHROPIC_API_KEY``), else,
    with ``basic``, the password of ``Authorization: Basic`` (a browser's); None if none."""
    token = bearer_token(authorization)
    if token is None and x_api_key:
        token = x_api_key.strip() or None
    if token is None and basic:
        token = basic_password(authorization)
    return token


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def basic_password(authorization: str | None) -> str | None:
    """The password of an ``Authorization: Basic base64(user:password)`` header (the user
    name is ignored), or None. Nothing of a header that does not decode is kept."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password.strip() or None if colon else None
