"""Every attempt through a real gateway is exactly one row, with every column filled as documented."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import httpx
import pytest

from modelbroker.plugins.ledger import STORE_NAME
from modelbroker.plugins.storage.database import open_database

from .helpers import read_rows

PRICE = 0.001  # the provider fixture's cost per 1k tokens
NO_RETRY = {"retries": 0, "failure_threshold": 1000}
PROMPT = "one two three"  # the fake upstream counts words: 3 in, "Fake reply from b: one two three" 7 out
HELLO = [{"role": "user", "content": PROMPT}]


def new_id() -> str:
    return f"l-{uuid.uuid4().hex[:12]}"


def of(rows: list[dict], request_id: str) -> list[dict]:
    return [row for row in rows if row["request_id"] == request_id]


def test_a_fallback_request_is_two_rows_with_every_column(gateway, provider, upstream, database_url):
    gw = gateway({"reliability": NO_RETRY, "providers": [
        provider("a", model="fail-500", priority=1), provider("b", priority=2)]}, database_url=database_url)
    rid = new_id()
    before = datetime.now(timezone.utc)
    answer = gw.client.post("/v1/chat/completions", headers={"x-request-id": rid},
                            json={"model": "auto", "messages": HELLO, "user": "alice"})
    assert answer.status_code == 200
    gw.stop()
    after = datetime.now(timezone.utc)

    failed, ok = read_rows(database_url)
    for row, number in ((failed, 1), (ok, 2)):
        assert (row["request_id"], row["attempt"], row["client"]) == (rid, number, "alice")
        assert before <= row["time"] <= after and row["time"].utcoffset().total_seconds() == 0
        assert row["route"] == "/v1/chat/completions"
        assert row["latency_ms"] > 0
    assert failed == failed | {
        "provider": "a", "provider_id": "a/fail-500", "model": "fail-500", "model_used": None,
        "success": False, "outcome": "failed", "error_kind": "status", "status": 500,
        "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": None,
        "reasoning_tokens": None, "tokens_estimated": False, "cost": 0.0, "overhead_ms": None,
    }
    assert "500" in failed["error"]
    assert ok == ok | {
        "provider": "b", "provider_id": "b/b", "model": "b", "model_used": "b", "success": True,
        "outcome": "ok", "error_kind": None, "status": None, "error": None,
        "prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10, "cached_tokens": None,
        "reasoning_tokens": None, "tokens_estimated": False,
    }
    assert ok["cost"] == pytest.approx(10 * PRICE / 1000)
    assert float(answer.headers["x-modelbroker-cost"]) == pytest.approx(ok["cost"], abs=1e-8)
    assert 0 <= ok["overhead_ms"] < ok["latency_ms"] + 1000


def test_two_requests_with_the_same_x_request_id_are_two_requests_in_the_ledger(
        gateway, provider, upstream, database_url):
    """A client (or a retrying proxy) that reuses its x-request-id pays twice: both are recorded."""
    gw = gateway({"reliability": NO_RETRY, "providers": [provider("b")]}, database_url=database_url)
    rid = new_id()
    for _ in range(2):
        assert gw.generate({"prompt": PROMPT}, headers={"x-request-id": rid}).status_code == 200
    usage = gw.client.get("/usage").json()["totals"]
    gw.stop()

    rows = of(read_rows(database_url), rid)
    assert [(row["attempt"], row["success"]) for row in rows] == [(1, True), (1, True)]
    assert len({row["request_uid"] for row in rows}) == 2 and rid not in {row["request_uid"] for row in rows}
    assert (usage["requests"], usage["attempts"]) == (2, 2)
    assert usage["cost"] == pytest.approx(2 * 10 * PRICE / 1000)


def test_the_default_database_is_modelbroker_db_beside_app_log(gateway, provider, upstream, tmp_path):
    gw = gateway({"providers": [provider("a")]}, database_url="")  # empty: the default
    rid = new_id()
    assert gw.generate({"prompt": PROMPT}, headers={"x-request-id": rid}).status_code == 200
    gw.stop()
    assert gw.log_file.parent == tmp_path
    rows = read_rows(f"sqlite:///{tmp_path / 'modelbroker.db'}")
    assert [(r["request_id"], r["outcome"]) for r in rows] == [(rid, "ok")]


def test_refused_requests_are_one_row_each_with_attempt_zero(gateway, provider, upstream, sqlite_url):
    gw = gateway({"providers": [provider("a")]}, database_url=sqlite_url)
    unknown, bad_json, empty = new_id(), new_id(), new_id()
    assert gw.client.post("/v1/chat/completions", headers={"x-request-id": unknown},
                          json={"model": "nope", "messages": HELLO, "user": "carol"}).status_code == 404
    assert gw.generate(content=b"{not json", headers={"x-request-id": bad_json,
                                                      "content-type": "application/json"}).status_code == 400
    assert gw.generate({"prompt": ""}, headers={"x-request-id": empty}).status_code == 422
    gw.stop()

    rows = {row["request_id"]: row for row in read_rows(sqlite_url)}
    assert set(rows) == {unknown, bad_json, empty}
    for row in rows.values():
        assert (row["attempt"], row["success"], row["outcome"]) == (0, False, "rejected")
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"], row["cost"]) == (0, 0, 0, 0.0)
        assert row["provider"] is None and row["latency_ms"] is None
    assert (rows[unknown]["route"], rows[unknown]["status"], rows[unknown]["client"]) == (
        "/v1/chat/completions", 404, "carol")
    assert "'nope'" in rows[unknown]["error"]
    assert (rows[bad_json]["route"], rows[bad_json]["status"], rows[bad_json]["client"]) == ("/generate", 400, None)
    assert rows[empty]["status"] == 422


def test_a_stream_cut_after_content_is_one_partial_row(gateway, provider, upstream, sqlite_url):
    gw = gateway({"reliability": NO_RETRY, "providers": [provider("a"), provider("b", priority=5)]},
                 database_url=sqlite_url)
    upstream.set_behavior("a", {"kind": "stream_cut", "chunks": 4, "cut_after": 2})
    rid = new_id()
    with gw.client.stream("POST", "/generate", json={"prompt": PROMPT, "stream": True},
                          headers={"x-request-id": rid}) as r:
        body = r.read().decode()
    assert "stream_interrupted" in body
    gw.stop()
    (row,) = of(read_rows(sqlite_url), rid)
    assert (row["attempt"], row["provider"], row["success"], row["outcome"], row["error_kind"]) == (
        1, "a", False, "partial", "partial")
    assert row["completion_tokens"] > 0 and row["tokens_estimated"] is True
    assert row["cost"] == pytest.approx(row["total_tokens"] * PRICE / 1000)
    assert upstream.calls["b"] == 0


def test_a_client_leaving_mid_stream_is_one_cancelled_row(gateway, provider, upstream, sqlite_url):
    gw = gateway({"reliability": NO_RETRY, "providers": [provider("a")]}, database_url=sqlite_url)
    upstream.set_behavior("a", {"kind": "ok", "chunks": 6, "chunk_delay_s": 0.4})
    rid = new_id()
    with httpx.Client(timeout=10) as client, client.stream(
        "POST", gw.url + "/generate", json={"prompt": PROMPT, "stream": True}, headers={"x-request-id": rid},
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and "delta" in json.loads(line[6:]):
                break
    gw.stop()
    (row,) = of(read_rows(sqlite_url), rid)
    assert (row["attempt"], row["success"], row["outcome"], row["error_kind"]) == (1, False, "cancelled", "cancelled")


def test_a_whole_stream_is_one_ok_row(gateway, provider, upstream, sqlite_url):
    gw = gateway({"providers": [provider("a")]}, database_url=sqlite_url)
    rid = new_id()
    with gw.client.stream("POST", "/generate", json={"prompt": PROMPT, "stream": True},
                          headers={"x-request-id": rid}) as r:
        r.read()
    gw.stop()
    (row,) = of(read_rows(sqlite_url), rid)
    assert (row["outcome"], row["success"], row["total_tokens"]) == ("ok", True, 10)


def test_many_requests_are_flushed_while_the_gateway_runs(gateway, provider, upstream, sqlite_url):
    gw = gateway({"providers": [provider("a")]}, database_url=sqlite_url, ledger_batch_size=10)
    ids = [new_id() for _ in range(25)]
    for rid in ids:
        assert gw.generate({"prompt": PROMPT}, headers={"x-request-id": rid}).status_code == 200
    store = gw.gateway.pm.get_plugin(STORE_NAME)
    gw.client.get("/usage")  # flushes this process's queue before it reads
    assert store.writer.written == 25 and not store.writer.queue
    assert sorted(row["request_id"] for row in read_rows(sqlite_url)) == sorted(ids)


def test_a_row_has_every_column_from_the_cores_record():
    """row_of turns the core's AttemptRecord into the ledger's row: every column, rounded and cut as stored."""
    from datetime import timezone
    from types import SimpleNamespace as NS

    from modelbroker._routing.records import failure_record, rejected_record, result_record, stored_record
    from modelbroker._routing.types import ChatRequest, Completion, ErrorKind, ProviderError, Usage
    from modelbroker.plugins.ledger.records import MAX_ERROR_CHARS, row_of
    from modelbroker.plugins.ledger.schema import RECORD_COLUMNS

    provider = NS(name="p", id="p/m", model="m")
    request = ChatRequest(messages=[], request_id="r-1", route="/generate", client="team-a", surface="generate")
    result = Completion(text="", model="m-2025", usage=Usage(3, 4, 7, cached_tokens=1, reasoning_tokens=2,
                                                               estimated=True), cost=0.25, overhead_ms=0.12345)
    ok = row_of(result_record(provider, request, result, 12.34567, 2))
    assert ok.pop("time").tzinfo is timezone.utc
    assert ok == {
        "request_id": "r-1", "attempt": 2, "route": "/generate", "client": "team-a", "provider": "p",
        "provider_id": "p/m", "model": "m", "model_used": "m-2025", "success": True, "outcome": "ok",
        "error_kind": None, "status": None, "error": None, "prompt_tokens": 3, "completion_tokens": 4,
        "total_tokens": 7, "cached_tokens": 1, "reasoning_tokens": 2, "tokens_estimated": True, "cost": 0.25,
        "latency_ms": 12.346, "overhead_ms": 0.123, "request_uid": request.uid, "surface": "generate",
        "cache_hit": False, "saved_cost": 0.0}
    error = ProviderError(ErrorKind.PARTIAL, "x" * 600, status=502, usage=Usage(1, 2, 3))
    failed = row_of(failure_record(provider, request, error, 5.0, 1))
    assert (failed["success"], failed["outcome"], failed["error_kind"], failed["status"]) == (
        False, "partial", "partial", 502)
    assert len(failed["error"]) == MAX_ERROR_CHARS and failed["error"].endswith("…")
    assert (failed["total_tokens"], failed["model_used"], failed["overhead_ms"]) == (3, None, None)
    assert failed["surface"] == "generate"
    refused = row_of(rejected_record(None, "r-2", "/generate", 401, "no key", "generate"))
    assert (refused["attempt"], refused["outcome"], refused["status"], refused["provider"], refused["surface"]) == (
        0, "rejected", 401, None, "generate")
    hit = row_of(stored_record(provider, request, result, 0.5))
    assert (hit["attempt"], hit["outcome"], hit["cache_hit"], hit["cost"], hit["saved_cost"], hit["total_tokens"]) == (
        0, "ok", True, 0.0, 0.25, 0)
    for row in (ok | {"time": None}, failed, refused, hit):
        assert set(row) == set(RECORD_COLUMNS)


@pytest.mark.parametrize("count", [1, 3, 63, 64, 65, 127, 500])
def test_a_batch_of_any_size_is_written_once_and_again_ignored(database_url, count):
    """SQLite inserts 64 rows a statement, then the rest by powers of two; every row lands once, in every column."""
    from .helpers import insert, record

    rows = [record(f"r-{i:04d}", attempt=1 + i % 3, prompt_tokens=i, error=None if i % 2 else f"e{i}",
                   tokens_estimated=bool(i % 5)) for i in range(count)]
    insert(database_url, rows)
    insert(database_url, rows[: count // 2 + 1])  # a batch written twice
    found = read_rows(database_url)
    assert [(r["request_id"], r["attempt"], r["prompt_tokens"], r["error"], r["tokens_estimated"]) for r in found] == [
        (r["request_id"], r["attempt"], r["prompt_tokens"], r["error"], r["tokens_estimated"]) for r in rows]


def test_a_sqlite_batch_is_one_hand_over_and_a_few_statements(sqlite_url, monkeypatch):
    """Under load each hand-over to SQLite's thread, and each statement, waits up to 5 ms for
    the GIL (bulk.py): a batch of 500 is one hand-over and ten statements, not ~40."""
    from modelbroker.plugins.ledger.bulk import BulkInsert
    from modelbroker.plugins.storage.sqlite_db import SQLiteDatabase, _Lane

    from .helpers import insert, record, run, with_db

    insert(sqlite_url, [])  # the schema
    rows = [record(f"h-{i:04d}") for i in range(500)]
    hand_overs, statements = [], []
    real_run = _Lane.run

    async def counted_run(lane, work, **how):
        hand_overs.append(work)

        def traced(conn):
            conn.set_trace_callback(statements.append)
            try:
                return work(conn)
            finally:
                conn.set_trace_callback(None)
        return await real_run(lane, traced, **how)

    monkeypatch.setattr(_Lane, "run", counted_run)
    run(with_db(sqlite_url, lambda db: BulkInsert(db).write(rows)))

    assert len(hand_overs) == 1
    largest = SQLiteDatabase.rows_per_statement
    sizes = [size for size, _ in BulkInsert(open_database(sqlite_url)).row_groups(rows, largest)]
    assert sum(sizes) == 500 and all(size <= largest and size & (size - 1) == 0 for size in sizes)
    if largest == 64:  # SQLite 3.32 or later
        assert sizes == [64] * 7 + [32, 16, 4]
    inserts = [sql for sql in statements if sql.startswith("INSERT")]
    assert [sql.count("), (") + 1 for sql in inserts] == sizes
    assert statements[0].startswith("BEGIN") and statements[-1] == "COMMIT"
    assert len(statements) == len(sizes) + 2
    monkeypatch.undo()
    assert len(read_rows(sqlite_url)) == 500


def _writer_run(tmp_path, monkeypatch, first: int, arriving: int = 0):
    """``first`` records, then 1, through a LedgerWriter (batches of 500) into a fresh SQLite
    file; ``arriving`` more come in while the first background batch is being written. Returns
    the (batch length, background, records written) of every write, and the rows in the end."""
    from modelbroker.plugins.ledger.bulk import BulkInsert
    from modelbroker.plugins.ledger.options import LedgerOptions
    from modelbroker.plugins.ledger.spill import SpillFile
    from modelbroker.plugins.ledger.writer import LedgerWriter

    from .helpers import insert, record, run, with_db

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    insert(url, [])  # the schema
    seen = []
    real_write = BulkInsert.write
    writers = []

    async def write(self, batch, *, background=False, hurry=None):
        if background and arriving and not any(bg for _, bg, _ in seen):
            for i in range(arriving):
                writers[0].add(record(f"late-{i:05d}"))
        written = await real_write(self, batch, background=background, hurry=hurry)
        seen.append((len(batch), background, written))
        return written

    monkeypatch.setattr(BulkInsert, "write", write)

    async def work(db):
        writer = LedgerWriter(db, SpillFile(tmp_path / "spill.jsonl"),
                              LedgerOptions(database_url=url, spill_file=tmp_path / "spill.jsonl", batch_size=500))
        writers.append(writer)
        writer.migrated = True
        for i in range(first):
            writer.add(record(f"w-{i:05d}"))
        assert await writer._write_queue()
        writer.add(record("w-last"))
        assert await writer._write_queue()

    run(with_db(url, work))
    return seen, read_rows(url)


def test_the_writer_writes_in_the_background_while_it_keeps_up(tmp_path, monkeypatch):
    """A batch goes to SQLite's low-priority thread unless a whole batch waits behind it; once
    one does, the rest of that queue goes at the usual priority."""
    seen, rows = _writer_run(tmp_path, monkeypatch, first=300)
    assert seen == [(300, True, 300), (1, True, 1)]
    (tmp_path / "behind").mkdir()
    seen, rows = _writer_run(tmp_path / "behind", monkeypatch, first=1_200)
    assert seen == [(500, False, 500), (500, False, 500), (200, False, 200), (1, True, 1)]
    assert len(rows) == 1_201


def test_a_background_batch_stops_early_once_a_whole_batch_waits(tmp_path, monkeypatch):
    """Records that pile up during a background write cut it short after its statement under
    way (64 rows); the rest goes first in the next batch, at the usual priority."""
    seen, rows = _writer_run(tmp_path, monkeypatch, first=300, arriving=500)
    assert seen == [(300, True, 64), (500, False, 500), (236, False, 236), (1, True, 1)]
    assert len(rows) == 801 and len({row["request_id"] for row in rows}) == 801


def test_shutdown_with_a_database_that_hangs_takes_the_timeout_in_all(tmp_path, monkeypatch):
    """A write that never ends (a locked or unreachable database) holds the shutdown for the
    writer's timeout once, not once for the batch under way and once more for the rest; what
    was not written goes to the spill file."""
    import asyncio
    import time

    from modelbroker.plugins.ledger.bulk import BulkInsert
    from modelbroker.plugins.ledger.options import LedgerOptions
    from modelbroker.plugins.ledger.spill import SpillFile
    from modelbroker.plugins.ledger.writer import LedgerWriter

    from .helpers import insert, record, run, with_db

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    insert(url, [])  # the schema

    async def hang(self, batch, *, background=False, hurry=None):
        await asyncio.sleep(3600)

    monkeypatch.setattr(BulkInsert, "write", hang)
    spill = tmp_path / "spill.jsonl"

    async def work(db):
        writer = LedgerWriter(db, SpillFile(spill), LedgerOptions(database_url=url, spill_file=spill, batch_size=5))
        writer.migrated = True
        writer.start()
        for i in range(12):
            writer.add(record(f"h-{i:02d}"))
        await asyncio.sleep(0.05)  # the task is inside its first write
        began = time.monotonic()
        await writer.stop(timeout=0.5)
        return time.monotonic() - began

    took = run(with_db(url, work))
    assert 0.5 <= took < 0.8, took
    assert sorted(line["request_id"] for line in map(json.loads, spill.read_text().splitlines())) == [
        f"h-{i:02d}" for i in range(12)]
