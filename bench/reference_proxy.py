"""The reference proxy: the least a Python gateway can do. FastAPI + one aiohttp session.

Forwards each POST body to BENCH_UPSTREAM_URL and returns the upstream's bytes
(streamed through when the upstream answers text/event-stream). Run like the
gateway: ``BENCH_UPSTREAM_URL=... uvicorn bench.reference_proxy:app --workers 1 --no-access-log``.
"""

import os
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "http://127.0.0.1:8101/v1/chat/completions")
state = {}


@asynccontextmanager
async def lifespan(_app):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as session:
        state["session"] = session
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/v1/chat/completions")
async def proxy(request: Request):
    upstream = await state["session"].post(UPSTREAM, data=await request.body(),
                                           headers={"content-type": "application/json"})
    ctype = upstream.headers.get("content-type", "application/json")
    if not ctype.startswith("text/event-stream"):
        return Response(await upstream.read(), status_code=upstream.status, media_type=ctype)

    async def relay():
        async with upstream:
            async for chunk in upstream.content.iter_any():
                yield chunk

    return StreamingResponse(relay(), status_code=upstream.status, media_type=ctype)
