"""The key table's background refresh stops when the gateway shuts down, whatever it was doing."""

from __future__ import annotations

import asyncio

from modelbroker.plugins.keys.cache import KeyCache


def test_stop_ends_the_refresher_even_when_its_read_finishes_as_it_is_cancelled():
    """Before Python 3.12, ``wait_for`` swallows a cancellation that arrives in the same turn
    of the loop as the end of what it waits for. The refresher then went back to sleep and
    ``stop()`` (the gateway's shutdown) waited for it forever: seen as gateways that never
    stopped in the test suite. The read here is the real one's stand-in, timed to finish in
    the very turn ``stop()`` cancels it."""

    async def scenario() -> None:
        cache = KeyCache(db=None, refresh_s=0.001)  # the database is never touched: refresh is replaced
        reading, finish = asyncio.Event(), asyncio.Event()

        async def refresh() -> None:
            reading.set()
            await finish.wait()

        cache.refresh = refresh
        cache._task = asyncio.create_task(cache._refresh_forever())
        await asyncio.wait_for(reading.wait(), 5)
        finish.set()  # the read ends in the next turn of the loop...
        stopping = asyncio.create_task(cache.stop())  # ...the turn in which stop() cancels the task
        done, _ = await asyncio.wait({stopping}, timeout=5)
        refresher = cache._task
        if not done:  # the bug: let the test end, then fail it
            refresher.cancel()
            await asyncio.wait({stopping}, timeout=5)
        assert done and refresher.done(), "stop() was still waiting for the refresher after 5 s"

    asyncio.run(scenario())
