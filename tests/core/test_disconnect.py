"""The client-left watcher (core/_server/disconnect.py): started only for work that lasts."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelbroker._server import disconnect
from modelbroker._server.disconnect import ClientGone, unless_disconnected


class Client:
    """An ASGI ``receive`` after the body: nothing until the client leaves at ``leaves_at``."""

    def __init__(self, leaves_after_s: float | None = None) -> None:
        self.leaves_after_s = leaves_after_s
        self.calls = 0

    async def receive(self) -> dict:
        self.calls += 1
        if self.leaves_after_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.leaves_after_s)
        return {"type": "http.disconnect"}


async def test_quick_work_never_watches_the_client():
    client = Client()
    tasks_before = len(asyncio.all_tasks())
    assert await unless_disconnected(client.receive, asyncio.sleep(0.01, "answer")) == "answer"
    assert client.calls == 0
    assert len(asyncio.all_tasks()) == tasks_before


async def test_work_that_lasts_is_cancelled_once_the_client_leaves(monkeypatch):
    monkeypatch.setattr(disconnect, "WATCH_AFTER_S", 0.05)
    client = Client(leaves_after_s=0.0)
    work_cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            work_cancelled.set()
            raise

    started = time.monotonic()
    with pytest.raises(ClientGone):
        await unless_disconnected(client.receive, work())
    assert work_cancelled.is_set()
    assert 0.04 <= time.monotonic() - started < 1.0
    assert client.calls == 1


async def test_the_watcher_ends_with_the_work(monkeypatch):
    monkeypatch.setattr(disconnect, "WATCH_AFTER_S", 0.01)
    client = Client()
    tasks_before = len(asyncio.all_tasks())
    assert await unless_disconnected(client.receive, asyncio.sleep(0.1, "late answer")) == "late answer"
    assert client.calls == 1
    await asyncio.sleep(0)  # the cancelled watcher finishes
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_cancellation_from_elsewhere_stays_a_cancellation(monkeypatch):
    monkeypatch.setattr(disconnect, "WATCH_AFTER_S", 0.01)
    task = asyncio.ensure_future(unless_disconnected(Client().receive, asyncio.sleep(5)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
