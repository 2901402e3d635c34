"""A provider's key never reaches a message whole or in pieces: ``modelbroker._upstream.errors.redact`` and
the messages built from what an upstream answered (status errors, snippets of bodies); and
the settings' URLs, which may hold a password, stay out of their repr."""

from __future__ import annotations

import pytest

from modelbroker._config.settings import Settings
from modelbroker._upstream.errors import redact, snippet, status_error

KEY = "sk-proj-Zq7pW9aB3cD4eF5gH6iJ7kL8mN9oP0qR1sT2uV3wX4"


@pytest.mark.parametrize("shown", [
    KEY,  # whole
    KEY[:24],  # a prefix, as some upstreams echo a key back
    KEY[-12:],  # a suffix
    KEY[10:30],  # a piece from the middle
], ids=["whole", "prefix", "suffix", "middle"])
def test_the_key_and_any_run_sharing_eight_characters_with_it_are_masked(shown):
    text = f"Incorrect API key provided: {shown}. You can find your API key at https://example.com."
    masked = redact(text, KEY)
    assert masked == "Incorrect API key provided: ***. You can find your API key at https://example.com."


def test_words_that_share_nothing_with_the_key_stay():
    text = "upstream answered 401: invalid_api_key (organization-1234567 is not allowed)"
    assert redact(text, KEY) == text


def test_a_short_key_is_masked_whole_only():
    assert redact("key abcd, and abcdefgh", "abcd") == "key ***, and ***efgh"


@pytest.mark.parametrize("cut", [100, 115, 120, 130])
def test_a_text_body_cut_inside_the_key_leaves_no_piece_of_it(cut):
    """The upstream's text is cut to 120 characters; cut first and redacted after, the piece
    of the key left at the cut matched nothing."""
    body = ("x" * (cut - 20) + " key=" + KEY + " rest").encode()
    error = status_error(401, {}, body, KEY)
    for start in range(len(KEY) - 7):
        assert KEY[start:start + 8] not in error.message, error.message


def test_a_snippet_is_masked_before_it_is_cut():
    body = ("<html>" + "y" * 60 + KEY + "</html>").encode()
    text = snippet(body, KEY)
    assert len(text) <= 80
    assert not any(KEY[i:i + 8] in text for i in range(len(KEY) - 7)), text


def test_the_settings_repr_leaves_out_the_redis_and_database_urls():
    settings = Settings(redis_url="redis://:Zq7pW9-pass@cache:6379/0",
                        database_url="postgresql://app:Zq7pW9-pass@db/ledger")
    assert "Zq7pW9" not in repr(settings) and "Zq7pW9" not in str(settings)
    assert settings.redis_url.startswith("redis://")  # the value itself is unchanged
