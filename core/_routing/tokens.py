"""Count tokens with tiktoken when an upstream reports no usage (a stream without a usage chunk).

The encoding is large and slow to load, and most upstreams report
usage, so it is loaded only when first needed, in a background thread; counts
asked for before it is ready use the character estimate.

tiktoken downloads its BPE files on first use, which an offline gateway cannot
do. The same files ship inside the ``bpe-openai`` package, so they are copied
into tiktoken's cache under the name tiktoken looks for; tiktoken still checks
them against its own SHA-256 before use. If anything fails, counting falls back
to a character-based estimate; every count made here is marked as estimated.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import tempfile
import threading
from importlib import resources
from typing import Any

log = logging.getLogger("modelbroker")

ENCODING = "o200k_base"
_URL = f"https://openaipublic.blob.core.windows.net/encodings/{ENCODING}.tiktoken"


def count_tokens(text: str) -> int:
    """Tokens in ``text`` under o200k_base (GPT-4o's encoding); about len/4 until it is loaded."""
    if not text:
        return 0
    encoding = _loaded[0] if _loaded else None
    if encoding is None:
        _load_in_background()
        return max(1, (len(text) + 3) // 4)
    return len(encoding.encode_ordinary(text))


_loaded: list[Any] = []  # [encoding] once loaded (None if it cannot be)
_loading = threading.Lock()


def preload() -> None:
    """Load the encoding now, in this thread (tests, or a process that wants exact counts at once)."""
    if _loading.acquire(blocking=False):
        _loaded.append(load_encoding())
    while not _loaded:  # another thread is loading it
        threading.Event().wait(0.01)


def _load_in_background() -> None:
    if _loading.acquire(blocking=False):  # once per process; the lock is never released
        threading.Thread(target=lambda: _loaded.append(load_encoding()), name="tiktoken-load",
                         daemon=True).start()


@functools.lru_cache(maxsize=1)
def load_encoding() -> Any:
    """The tiktoken encoding, loaded once (slow to load: keep it off the event loop)."""
    try:
        import tiktoken

        _seed_tiktoken_cache()
        return tiktoken.get_encoding(ENCODING)
    except Exception as exc:  # an estimate is better than no answer
        log.warning("tiktoken unavailable (%s); token counts for streams are estimated from length", exc)
        return None


def _seed_tiktoken_cache() -> None:
    cache_dir = (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )
    target = os.path.join(cache_dir, hashlib.sha1(_URL.encode()).hexdigest())
    if os.path.exists(target):
        return
    packed = resources.files("bpe_openai.data").joinpath(f"{ENCODING}.tiktoken.gz").read_bytes()
    os.makedirs(cache_dir, exist_ok=True)
    partial = f"{target}.{os.getpid()}.tmp"
    with open(partial, "wb") as file:
        file.write(gzip.decompress(packed))
    os.replace(partial, target)
