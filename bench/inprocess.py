"""python -m bench.inprocess: the gateway's own cost per request, without an HTTP server in front.

Sends requests through the ASGI app in this process (no uvicorn, no client sockets)
to nginx's fixed JSON answer, ``--concurrency`` at a time, and prints the CPU µs per
request (this process, all its threads). With ``--instructions`` it runs itself
twice under ``valgrind --tool=callgrind`` (N and 3N requests) and prints the
instructions per request, the difference over 2N. Instruction counts repeat to
within about 1 % whatever else the machine is doing, where CPU time moves by 10 %
or more between runs here: judge a change of a few percent by them.

    python -m bench.inprocess                       # CPU µs per request
    python -m bench.inprocess --instructions        # instructions per request (~2.5 min)
    python -m bench.inprocess --instructions --env MODELBROKER_DISABLED_PLUGINS=ledger
    python -m bench.inprocess --body conversation.json   # the cost with a body of your own
    python -m bench.inprocess --surface messages    # the same request through /v1/messages
    python -m bench.inprocess --stream              # streamed, from nginx's fixed SSE answer
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import targets, upstreams

BODY = b'{"model": "auto", "messages": [{"role": "user", "content": "hello"}]}'
#: The same short request in each API: surface -> (path, body). All go to nginx's chat answer.
SURFACES = {
    "chat": ("/v1/chat/completions", BODY),
    "messages": ("/v1/messages",
                 b'{"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}'),
    "responses": ("/v1/responses", b'{"model": "auto", "input": "hello"}'),
    "generate": ("/generate", b'{"prompt": "hello"}'),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=12_800, help="requests measured")
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3_200, help="requests sent before measuring")
    parser.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    parser.add_argument("--body", type=Path, help="a file holding the chat request body to send "
                        "(default: one short user message)")
    parser.add_argument("--surface", choices=sorted(SURFACES), default="chat",
                        help="the API the requests go through (default chat: /v1/chat/completions)")
    parser.add_argument("--stream", action="store_true", help="ask for a stream (nginx's fixed SSE answer)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the gateway (repeatable)")
    parser.add_argument("--upstream", help=argparse.SUPPRESS)  # given to the runs under callgrind
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.update(dict(item.split("=", 1) for item in args.env))
    with tempfile.TemporaryDirectory(prefix="modelbroker-inprocess-") as tmp:
        upstream = None
        if args.upstream is None:
            upstream = upstreams.start_nginx(Path(tmp), cpu=None)
            args.upstream = upstream.url(stream=args.stream)
        try:
            if args.instructions:
                print(f"{instructions_per_request(args):,.0f} instructions per request")
            else:
                print(f"{asyncio.run(measure(args, Path(tmp))):.1f} µs CPU per request (in-process)")
        finally:
            if upstream is not None:
                upstream.stop()


def instructions_per_request(args: argparse.Namespace) -> float:
    """Two runs under callgrind, N and 3N requests, after the same short warm-up."""
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: sudo apt-get install -y valgrind")
    counts = []
    sizes = [sent_by(requests, args.concurrency) for requests in (args.requests // 4, 3 * args.requests // 4)]
    for requests in sizes:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m",
               "bench.inprocess", "--upstream", args.upstream, "-n", str(requests), "-c", str(args.concurrency),
               "--warmup", str(args.concurrency * 2), *(f"--env={item}" for item in args.env),
               "--surface", args.surface, *(["--stream"] if args.stream else []), *(["--body", str(args.body.resolve())] if args.body else [])]
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        found = re.search(r"Collected : (\d+)", run.stderr)
        if run.returncode != 0 or found is None:
            sys.exit(f"the run under callgrind failed:\n{run.stdout}\n{run.stderr[-2000:]}")
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / (sizes[1] - sizes[0])


async def measure(args: argparse.Namespace, tmp: Path) -> float:
    config = tmp / "providers.yaml"
    config.write_text(targets.MODELBROKER_CONFIG.format(url=args.upstream, model=targets.MODEL))
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
    try:
        path, body = SURFACES[args.surface]
        body = args.body.read_bytes() if args.body else body
        if args.stream:
            body = json.dumps({**json.loads(body), "stream": True}).encode()
        await send_all(app, args.warmup, args.concurrency, body, path)
        before = time.process_time()
        sent = await send_all(app, args.requests, args.concurrency, body, path)
        return (time.process_time() - before) / sent * 1e6
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await lifespan


def sent_by(requests: int, concurrency: int) -> int:
    """How many requests ``send_all`` sends for ``requests``: a whole number per client."""
    return max(1, requests // concurrency) * concurrency


async def send_all(app, requests: int, concurrency: int, body: bytes = BODY, path: str = SURFACES["chat"][0]) -> int:
    sent = sent_by(requests, concurrency)
    await asyncio.gather(*(send_some(app, sent // concurrency, body, path) for _ in range(concurrency)))
    return sent


async def send_some(app, count: int, body: bytes, path: str) -> None:
    for _ in range(count):
        await send_one(app, body, path)


async def send_one(app, body: bytes, path: str = SURFACES["chat"][0]) -> None:
    """One POST to ``path`` as uvicorn would hand it over; the client then waits quietly."""
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000), "scheme": "http", "method": "POST",
             "root_path": "", "path": path, "raw_path": path.encode(),
             "query_string": b"", "state": {},
             "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    body_sent = False
    status = 0

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays until the answer is sent
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    if status != 200:
        sys.exit(f"the gateway answered {status}")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        uvloop.install()
    main()
