"""python -m bench.cache: what a response cache hit costs the gateway, beside a miss.

One gateway in this process (as ``bench.inprocess``: the ASGI app, no HTTP server in
front), with the cache on in memory, over nginx's fixed JSON answer. In the same run it
sends ``-n`` misses (each request its own prompt, with ``temperature`` 0: looked up, routed
to nginx, answer kept) and ``-n`` hits (one prompt, answered from the cache, no upstream
call), ``--concurrency`` at a time, and prints the CPU µs per request of each. With
``--stream`` the requests stream: a miss relays nginx's fixed SSE answer and keeps its
chunks, a hit replays them.

    python -m bench.cache
    python -m bench.cache --stream
    python -m bench.cache --surface messages
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench import targets, upstreams
from bench.inprocess import SURFACES, send_one

CACHE_CONFIG = "plugins:\n  cache:\n    ttl_s: 3600\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=6_400, help="requests measured, of each kind")
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1_600, help="misses sent before measuring")
    parser.add_argument("--surface", choices=sorted(SURFACES), default="chat")
    parser.add_argument("--stream", action="store_true", help="ask for streams (nginx's fixed SSE answer)")
    return parser.parse_args(argv)


def bodies(surface: str, stream: bool, count: int, tag: str) -> list[bytes]:
    """``count`` requests of ``surface``, each with a prompt of its own, and ``temperature`` 0."""
    base = json.loads(SURFACES[surface][1])
    made = []
    for i in range(count):
        body = {**base, "temperature": 0, **({"stream": True} if stream else {})}
        text = f"hello {tag} {i}"
        if "messages" in body:
            body["messages"] = [{"role": "user", "content": text}]
        elif "input" in body:
            body["input"] = text
        else:
            body["prompt"] = text
        made.append(json.dumps(body).encode())
    return made


async def cpu_per_request(app, path: str, batch: list[bytes], concurrency: int) -> float:
    """CPU µs per request for sending ``batch``, ``concurrency`` at a time."""
    queue = iter(batch)

    async def client() -> None:
        for body in queue:
            await send_one(app, body, path)

    before = time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return (time.process_time() - before) / len(batch) * 1e6


async def measure(args: argparse.Namespace, tmp: Path, upstream_url: str) -> dict[str, float]:
    config = tmp / "providers.yaml"
    config.write_text(targets.MODELBROKER_CONFIG.format(url=upstream_url, model=targets.MODEL) + CACHE_CONFIG)
    os.environ["MODELBROKER_CONFIG"] = str(config)
    os.environ["MODELBROKER_LOG_FILE"] = str(tmp / "app.log")
    from main import app  # after the settings are in the environment

    to_app: asyncio.Queue = asyncio.Queue()
    from_app: asyncio.Queue = asyncio.Queue()
    lifespan = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                         to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    if started["type"] != "lifespan.startup.complete":
        sys.exit(f"the gateway did not start: {started.get('message')}")
    path = SURFACES[args.surface][0]
    try:
        await cpu_per_request(app, path, bodies(args.surface, args.stream, args.warmup, "warm"), args.concurrency)
        one = bodies(args.surface, args.stream, 1, "hit")
        await cpu_per_request(app, path, one, 1)  # kept
        await asyncio.sleep(0.1)  # the answer is written by a task of its own
        miss = await cpu_per_request(app, path, bodies(args.surface, args.stream, args.requests, "miss"),
                                     args.concurrency)
        hit = await cpu_per_request(app, path, one * args.requests, args.concurrency)
        return {"miss": miss, "hit": hit}
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await lifespan


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelbroker-cache-") as tmp:
        upstream = upstreams.start_nginx(Path(tmp), cpu=None)
        try:
            cells = asyncio.run(measure(args, Path(tmp), upstream.url(stream=args.stream)))
        finally:
            upstream.stop()
    what = f"{args.surface}{' streamed' if args.stream else ''}"
    for name, micros in cells.items():
        print(f"{what}, cache {name}: {micros:.1f} µs CPU per request (in-process)")
    print(f"a hit costs {cells['hit'] / cells['miss']:.0%} of a miss")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        uvloop.install()
    main()
