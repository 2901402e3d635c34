"""plugins/storage/shared.py: the ledger, the keys and the stored responses on one database object."""

from __future__ import annotations

import asyncio

from modelbroker.plugins.keys import GUARD_NAME
from modelbroker.plugins.ledger import STORE_NAME as LEDGER
from modelbroker.plugins.responses import STORE_NAME as RESPONSES
from modelbroker.plugins.storage.shared import shared_database

from .helpers import run


def test_handles_on_one_url_share_a_connection_until_the_last_is_closed(sqlite_url, tmp_path):
    other_url = f"sqlite:///{(tmp_path / 'other.db').as_posix()}"

    async def scenario():
        first, second, other = shared_database(sqlite_url), shared_database(sqlite_url), shared_database(other_url)
        assert first._db is second._db and other._db is not first._db
        async with first.writing() as conn:
            await conn.execute("CREATE TABLE t (n INTEGER)")
            await conn.execute("INSERT INTO t VALUES (1)")
        await first.close()
        await first.close()  # a second close lets go of nothing more
        async with second.reading() as conn:  # still open for the other handle
            assert await conn.fetchval("SELECT count(*) FROM t") == 1
        before = second._db
        await second.close()
        assert before._writes._conn is None  # the last handle closed the connection
        third = shared_database(sqlite_url)
        assert third._db is not before
        async with third.reading() as conn:
            assert await conn.fetchval("SELECT n FROM t") == 1
        await third.close()
        await other.close()

    run(scenario())


def test_another_event_loop_gets_a_database_of_its_own(sqlite_url):
    """A database's locks and futures belong to one loop: a handle left open on an earlier
    loop (a gateway that never shut down) is not handed to the next one."""
    left_open = []

    async def first_loop():
        db = shared_database(sqlite_url)
        async with db.writing() as conn:
            await conn.execute("CREATE TABLE t (n INTEGER)")
        left_open.append(db)

    async def second_loop():
        db = shared_database(sqlite_url)
        assert db._db is not left_open[0]._db
        async with db.writing() as conn:
            await conn.execute("INSERT INTO t VALUES (2)")
        await db.close()

    run(first_loop())
    run(second_loop())
    asyncio.run(left_open[0].close())


def test_one_gateway_writes_its_ledger_responses_and_keys_through_one_database(gateway, provider):
    gw = gateway({"providers": [provider("a")]})
    pm = gw.gateway.pm
    ledger, responses, keys = pm.get_plugin(LEDGER), pm.get_plugin(RESPONSES), pm.get_plugin(GUARD_NAME)
    db = ledger.db._db
    assert responses.db._db is db and keys.db._db is db
    assert gw.post("/v1/responses", json={"model": "a", "input": "hi"}).status_code == 200
    assert gw.chat("hi", model="a").status_code == 200
    gw.stop()
    assert db._writes._conn is None and db._writes._thread is None  # closed once the last of the three let go
