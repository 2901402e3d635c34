"""Request ids and uids: unique, and in the order they were made (see modelbroker._routing.types.unique_id)."""

import re
import time

from modelbroker._routing.types import unique_id
from modelbroker._server.request_ids import request_id


def test_unique_id_is_32_hex_digits_and_never_repeats():
    ids = [unique_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_later_ids_sort_later():
    earlier = [unique_id() for _ in range(50)]
    time.sleep(0.002)  # past the next millisecond, the ids' time part
    later = [unique_id() for _ in range(50)]
    assert max(earlier) < min(later)


def test_unique_id_starts_with_the_time_in_milliseconds():
    before = time.time_ns() // 1_000_000
    made = int(unique_id()[:12], 16)
    after = time.time_ns() // 1_000_000
    assert before <= made <= after


def test_generated_request_ids_are_unique_ids():
    assert re.fullmatch(r"[0-9a-f]{32}", request_id(None))
    assert re.fullmatch(r"[0-9a-f]{32}", request_id("has spaces"))
    assert request_id("trace-1") == "trace-1"
