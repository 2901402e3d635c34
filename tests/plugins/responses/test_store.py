"""Where stored responses live: the ledger's database (SQLite, or PostgreSQL), across restarts,
for ``retention_days`` after the last turn of their conversation, then purged."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from datetime import datetime, timezone

import openai
import pytest

from modelbroker import ConfigError
from modelbroker.plugins.responses import tables
from modelbroker.plugins.responses.request import ResponseCall
from modelbroker.plugins.responses.store import RecentResponses, ResponseStore, StoredResponse
from modelbroker.plugins.responses.surface import Responses
from modelbroker.plugins.storage.database import open_database

from .conftest import wait_for
from .test_conversation import stored_ids

DAY_S = 86_400.0


def retention(seconds: float) -> dict:
    return {"responses": {"retention_days": seconds / DAY_S}}


def conversation_survives_a_restart(start, provider, upstream, client, database_url: str) -> None:
    """Three turns across two gateways on one database: the second reads the chain back from it."""
    first_gw = start(provider("a"), database_url=database_url, log=False)
    sdk = client(first_gw)
    first = sdk.responses.create(model="a", input="Turn one.")
    second = sdk.responses.create(model="a", previous_response_id=first.id, input="Turn two.")
    first_gw.stop()  # what waits is written at shutdown

    again = start(provider("a"), database_url=database_url, log=False)
    sdk = client(again)
    assert sdk.responses.retrieve(second.id) == second
    third = sdk.responses.create(model="a", previous_response_id=second.id, input="Turn three.")
    assert [m["content"] for m in upstream.requests[-1]["json"]["messages"]] == [
        "Turn one.", "Fake reply from a: Turn one.", "Turn two.", "Fake reply from a: Turn two.", "Turn three."]
    sdk.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(first.id)
    wait_for(lambda: stored_ids(database_url) == {second.id, third.id}, "the third to be written")


def test_a_conversation_survives_a_restart_on_sqlite(start, provider, upstream, client, tmp_path):
    conversation_survives_a_restart(start, provider, upstream, client,
                                    f"sqlite:///{(tmp_path / 'shared.db').as_posix()}")


def test_a_conversation_survives_a_restart_on_postgresql(start, provider, upstream, client, postgres_url):
    conversation_survives_a_restart(start, provider, upstream, client, postgres_url)


def test_expired_responses_are_not_found_and_are_purged(start, provider, upstream, client):
    gw = start(provider("a"), plugins=retention(1.0))
    url = gw.server.settings.database_url
    sdk = client(gw)
    made = sdk.responses.create(model="a", input="short-lived")
    assert sdk.responses.retrieve(made.id).id == made.id
    wait_for(lambda: made.id in stored_ids(url), "the response to be written")
    time.sleep(2.1)  # the retention, and at most a second more: expiry is kept in whole seconds
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="a", previous_response_id=made.id, input="too late")
    wait_for(lambda: stored_ids(url) == set(), "the periodic purge (every half retention here)")


def test_continuing_a_conversation_keeps_its_beginning(start, provider, upstream, client, tmp_path):
    """The first turn outlives its own retention while the conversation goes on, in memory and
    in the database (read back by a second gateway after the first one's expiry)."""
    url = f"sqlite:///{(tmp_path / 'shared.db').as_posix()}"
    kept = 7.0  # seconds: the second turn must outlive a gateway's stop and start on a loaded machine
    gw = start(provider("a"), plugins=retention(kept), database_url=url, log=False)
    sdk = client(gw)
    first_made = time.monotonic()
    first = sdk.responses.create(model="a", input="Beginning.")
    time.sleep(kept / 2 + 0.2)
    second = sdk.responses.create(model="a", previous_response_id=first.id, input="Middle.")
    gw.stop()
    # the first turn's own retention has passed (expiry is rounded up to a whole second)
    time.sleep(max(0.0, first_made + kept + 1.3 - time.monotonic()))
    again = start(provider("a"), plugins=retention(kept), database_url=url, log=False)
    client(again).responses.create(model="a", previous_response_id=second.id, input="End.")
    assert upstream.requests[-1]["json"]["messages"][0]["content"] == "Beginning."


def test_the_purge_deletes_only_expired_rows(tmp_path):
    url = f"sqlite:///{(tmp_path / 'purge.db').as_posix()}"

    def stored(response_id: str, expires_at: float) -> StoredResponse:
        return StoredResponse.of(response_id, None, None, expires_at, [], {"id": response_id, "created_at": 1})

    async def run() -> tuple[set[str], int]:
        store = ResponseStore(open_database(url), purge_interval_s=3600.0)
        await store.start()
        now = time.time()
        store.add(stored("resp_old", now + 0.3), [])
        store.add(stored("resp_new", now + 3600), [])
        assert await store.writer._write_all()
        await asyncio.sleep(0.4)
        assert await store.writer._purge()
        kept_in_memory = set(store.recent) | set(store.pending)
        async with store.db.writing() as conn:  # nothing left to purge
            again = await tables.purge(conn, datetime.now(timezone.utc))
        await store.on_shutdown()
        return kept_in_memory, again

    in_memory, purged_again = asyncio.run(run())
    assert in_memory == stored_ids(url) == {"resp_new"} and purged_again == 0


@pytest.mark.parametrize("value", [0, -1, True, "soon"])
def test_a_bad_retention_stops_the_gateway(start, provider, value):
    with pytest.raises(ConfigError, match="plugins.responses.retention_days"):
        start(provider("a"), plugins={"responses": {"retention_days": value}})


def test_a_batch_goes_to_sqlite_in_a_few_statements_with_its_extensions(tmp_path):
    """200 responses in four INSERTs (64 + 64 + 64 + 8), not one a row: each statement makes
    SQLite's thread wait for the GIL while the event loop is busy, and a statement a row fell
    behind at a few thousand responses a second. The conversations continued get their new
    expiry in the same transaction."""
    url = f"sqlite:///{(tmp_path / 'batch.db').as_posix()}"
    statements: list[str] = []

    async def run() -> tuple[int, float]:
        store = ResponseStore(open_database(url), purge_interval_s=3600.0)
        await store.start()
        now = time.time()
        first = StoredResponse.of("resp_first", None, None, now + 60, [], {"id": "resp_first", "created_at": now})
        store.add(first, [])
        assert await store.writer._write_all()
        await store.db.write_whole(lambda conn: conn.set_trace_callback(statements.append))
        batch = [StoredResponse.of(f"resp_{i:03d}", "resp_first", None, now + 3600, [{"role": "user", "content": "hi"}],
                                   {"id": f"resp_{i:03d}", "created_at": now}) for i in range(200)]
        for stored in batch:
            store.add(stored, [first])
        assert await store.writer._write_all()
        async with store.db.reading() as conn:
            count = await conn.fetchval("SELECT count(*) FROM stored_responses")
            expiry = await conn.fetchval("SELECT expires_at FROM stored_responses WHERE id = 'resp_first'")
        await store.on_shutdown()
        return count, store.db.read_time(expiry).timestamp() - now

    count, first_expires_in = asyncio.run(run())
    inserts = [sql for sql in statements if sql.startswith("INSERT INTO stored_responses")]
    assert count == 201 and len(inserts) == 4
    assert first_expires_in == pytest.approx(3600, abs=0.01)


def test_under_load_the_writer_waits_for_whole_batches(tmp_path):
    """Full batches are written as soon as they wait; a short one only when the flush interval
    has passed. Writing whatever had come in meanwhile made transactions of a few rows, each
    rewriting the same half-filled pages."""
    url = f"sqlite:///{(tmp_path / 'whole.db').as_posix()}"

    async def run() -> list[int]:
        store = ResponseStore(open_database(url), purge_interval_s=3600.0)
        await store.start()
        writer = store.writer
        writer.batch_size, writer.flush_interval_s = 5, 3600.0
        writer.flushed_at = time.monotonic()
        now = time.time()
        for i in range(12):
            store.add(StoredResponse.of(f"resp_{i:02d}", None, None, now + 60, [], {"created_at": now}), [])
        left = []
        async with writer.busy:
            await writer._cycle()  # not due: two whole batches, two wait
        left.append(len(store.pending))
        writer.flushed_at -= 3600.0
        async with writer.busy:
            await writer._cycle()  # due: the rest
        left.append(len(store.pending))
        await store.on_shutdown()
        return left

    assert asyncio.run(run()) == [2, 0]
    assert len(stored_ids(url)) == 12


def test_a_batch_that_fills_wakes_the_writer(tmp_path):
    """The writer is woken when a batch fills, not for each response after it: a batch
    written at once, whatever waits past it left for the next one to fill."""
    url = f"sqlite:///{(tmp_path / 'wake.db').as_posix()}"

    async def pending_after(store: ResponseStore, count: int, first: int, expected: int) -> int:
        now = time.time()
        for i in range(first, first + count):
            store.add(StoredResponse.of(f"resp_{i:02d}", None, None, now + 60, [], {"created_at": now}), [])
        for _ in range(100):  # up to 2 s
            if len(store.pending) == expected:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # longer than the writer's first wait: nothing else is written
        return len(store.pending)

    async def run() -> list[int]:
        store = ResponseStore(open_database(url), purge_interval_s=3600.0)
        await store.start()
        store.writer.batch_size, store.writer.flush_interval_s = 5, 3600.0
        left = [await pending_after(store, 4, 0, 4), await pending_after(store, 1, 4, 0),
                await pending_after(store, 7, 5, 2)]
        await store.on_shutdown()
        return left

    assert asyncio.run(run()) == [4, 0, 2]
    assert len(stored_ids(url)) == 12


def test_past_max_pending_the_oldest_are_dropped_with_one_error(tmp_path, caplog):
    """With the database away, responses wait in memory up to ``max_pending``; past it the
    oldest go, and the log says so once, not once a response."""
    store = ResponseStore(open_database(f"sqlite:///{(tmp_path / 'away.db').as_posix()}"), purge_interval_s=3600.0)
    store.writer.batch_size, store.writer.max_pending = 2, 5
    now = time.time()
    with caplog.at_level("ERROR", logger="modelbroker"):
        for i in range(8):
            store.add(StoredResponse.of(f"resp_{i}", None, None, now + 60, [], {"created_at": now}), [])
    assert list(store.pending) == [f"resp_{i}" for i in range(3, 8)]
    dropped = [r.getMessage() for r in caplog.records if "the oldest are dropped" in r.getMessage()]
    assert len(dropped) == 1 and "6 (0.0 MiB) wait to be written" in dropped[0]


def test_past_max_pending_bytes_the_oldest_are_dropped(tmp_path, caplog):
    """Bounded by the bytes of their JSON too: ten thousand long responses waiting through an
    outage would have held hundreds of MiB. The count of bytes follows every way out."""
    store = ResponseStore(open_database(f"sqlite:///{(tmp_path / 'away.db').as_posix()}"), purge_interval_s=3600.0)
    store.writer.max_pending_bytes = 5_000
    now = time.time()

    def response(i: int, expires_at: float) -> StoredResponse:
        return StoredResponse(f"resp_{i}", None, None, now, expires_at, b"[]", b"x" * 998)

    with caplog.at_level("ERROR", logger="modelbroker"):
        for i in range(8):
            store.add(response(i, now + 60), [])
    assert list(store.pending) == [f"resp_{i}" for i in range(3, 8)] and store.pending_bytes == 5_000
    assert len([r for r in caplog.records if "6 (0.0 MiB) wait to be written" in r.getMessage()]) == 1
    store.written([store.pending["resp_3"]])
    store.forget_pending("resp_4")
    store.add(response(8, now - 1), [])  # already expired: the purge forgets it

    async def purge() -> None:
        assert await store.writer._purge()
        await store.db.close()

    asyncio.run(purge())
    assert list(store.pending) == ["resp_5", "resp_6", "resp_7"] and store.pending_bytes == 3_000


def test_times_are_written_as_given_each_second_formatted_once(tmp_path):
    """The writer formats a time once for all the rows of the same second (``BoundTimes``);
    fractional seconds (a purge test's, a row read back) are kept as they are."""
    url = f"sqlite:///{(tmp_path / 'times.db').as_posix()}"
    formatted: list[datetime] = []

    async def run() -> dict[str, tuple[float, float]]:
        store = ResponseStore(open_database(url), purge_interval_s=3600.0)
        await store.start()
        bind = store.writer.times.bind_time
        store.writer.times.bind_time = lambda moment: formatted.append(moment) or bind(moment)
        whole = float(int(time.time()))
        for i in range(10):
            store.add(StoredResponse.of(f"resp_{i}", None, None, whole + 3600, [], {"created_at": whole}), [])
        store.add(StoredResponse.of("resp_odd", None, None, whole + 3600.25, [], {"created_at": whole + 0.5}), [])
        assert await store.writer._write_all()
        async with store.db.reading() as conn:
            rows = await conn.fetch("SELECT id, created_at, expires_at FROM stored_responses")
        await store.on_shutdown()
        return {row["id"]: (store.db.read_time(row["created_at"]).timestamp() - whole,
                            store.db.read_time(row["expires_at"]).timestamp() - whole) for row in rows}

    read_back = asyncio.run(run())
    assert read_back["resp_0"] == read_back["resp_9"] == (0.0, 3600.0)
    assert read_back["resp_odd"] == (0.5, 3600.25)
    assert len(formatted) == 4  # two whole seconds, two fractional ones


def test_a_response_waiting_in_memory_holds_about_its_own_size(tmp_path):
    """orjson returns its worst-case buffer, 4 KiB for a short input's JSON: a thousand stored
    responses held 4 MiB more than their bytes, and the gateway's RSS under load showed it."""
    surface = Responses()
    surface.store = ResponseStore(open_database(f"sqlite:///{(tmp_path / 'kept.db').as_posix()}"))  # not started
    calls = [ResponseCall(f"resp_{i:03d}", 1_700_000_000, [{"type": "message", "role": "user", "content": "hi"}],
                          {}, True, None, 60.0) for i in range(100)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for call in calls:
            surface._keep(call, b'{"id":"%s"}' % call.response_id.encode())
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(surface.store.pending) == 100
    assert held < 100 * 500  # the object, its two JSON bytes, its place in the dict


def test_the_recent_responses_are_bounded_by_the_bytes_they_hold():
    """Kept by size, least recently used out first: a thousand long responses would have held
    hundreds of MiB under a bound by count."""
    recent = RecentResponses(max_bytes=10_000)
    now = time.time()

    def response(i: int, size: int) -> StoredResponse:
        return StoredResponse(f"resp_{i}", None, None, now, now + 60, b"[]", b"x" * (size - 2))

    for i in range(5):
        recent.put(response(i, 2_000))
    recent.trim()
    assert list(recent) == [f"resp_{i}" for i in range(5)] and recent.bytes == 10_000
    assert recent.get("resp_0") is not None  # now the most recently used
    recent.put(response(5, 5_000))
    recent.trim()
    assert list(recent) == ["resp_4", "resp_0", "resp_5"] and recent.bytes == 9_000
    recent.put(response(5, 1_000))  # kept again: counted once
    recent.forget("resp_4")
    recent.trim()
    assert list(recent) == ["resp_0", "resp_5"] and recent.bytes == 3_000
    recent.put(response(6, 20_000))  # larger than the bound: not kept
    recent.trim()
    assert len(recent) == 0 and recent.bytes == 0
