"""Two gateway processes (``python -m modelbroker serve``) writing one ledger under load lose no record."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx

from .helpers import read_rows

REQUESTS_PER_GATEWAY = 200
CONCURRENCY = 16  # in flight per gateway
LOAD_TIMEOUT_S = 60.0


async def load(url: str, ids: list[str]) -> list[int]:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one(rid: str) -> int:
            async with limit:
                answer = await client.post("/generate", json={"prompt": "hi"}, headers={"x-request-id": rid})
                return answer.status_code

        return await asyncio.gather(*(one(rid) for rid in ids))


async def load_all(gateways, ids_of) -> list[int]:
    answers = await asyncio.wait_for(
        asyncio.gather(*(load(gw.url, ids_of[n]) for n, gw in enumerate(gateways))), LOAD_TIMEOUT_S)
    return [status for batch in answers for status in batch]


def test_two_gateway_processes_share_one_ledger_under_load(
    database_url, provider, upstream, write_config, gateway_process, subprocess_env, tmp_path,
):
    config = write_config({"providers": [provider("a")]})

    def start(n: int):
        return gateway_process(config, subprocess_env(MODELBROKER_DATABASE_URL=database_url,
                                                      MODELBROKER_LOG_FILE=str(tmp_path / f"app-{n}.log")))

    with ThreadPoolExecutor(2) as pool:  # both start at once: their migrations race too
        gateways = list(pool.map(start, range(2)))
    ids_of = [[f"gw{n}-{i}" for i in range(REQUESTS_PER_GATEWAY)] for n in range(2)]
    statuses = asyncio.run(load_all(gateways, ids_of))
    assert statuses == [200] * (2 * REQUESTS_PER_GATEWAY)
    for gw in gateways:
        gw.stop()  # SIGTERM: each flushes what it still holds
        assert "Application shutdown complete" in gw.output(), gw.output()  # uvicorn then re-raises SIGTERM
        assert "ledger:" not in gw.output(), gw.output()  # no outage, no spill, no lock error

    rows = read_rows(database_url)
    assert len(rows) == 2 * REQUESTS_PER_GATEWAY
    assert sorted(row["request_id"] for row in rows) == sorted(ids_of[0] + ids_of[1])
    assert {(row["attempt"], row["outcome"]) for row in rows} == {(1, "ok")}
