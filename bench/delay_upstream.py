"""The delayed upstream: a fixed OpenAI answer exactly ``--delay`` seconds after each request.

A minimal HTTP/1.1 server on a raw asyncio Protocol with uvloop, so it keeps up
with 256 connections at 50 ms (ideal 5,120 requests/s) on one core with room to
spare. ``modelbroker.fake_upstream.FakeUpstream`` with ``Behavior(delay_s=0.05)`` reached
only 91-94 % of that here, which would have hidden the gateway's own share.
The delay is a timer per request (``loop.call_later``, what ``asyncio.sleep``
does underneath, without a task per request). A body with ``"stream": true``
gets the SSE answer, after the same delay.

    python -m bench.delay_upstream --port 8101 --delay 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import re

from bench.upstreams import COMPLETION_JSON, SSE_BODY

_STREAM = re.compile(rb'"stream"\s*:\s*true')
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)


def _response(body: str, content_type: str) -> bytes:
    data = body.encode()
    head = (f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(data)}\r\nconnection: keep-alive\r\n\r\n")
    return head.encode() + data


JSON_RESPONSE = _response(COMPLETION_JSON, "application/json")
SSE_RESPONSE = _response(SSE_BODY, "text/event-stream")
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n"


class DelayProtocol(asyncio.Protocol):
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end]
            match = _LENGTH.search(head)
            total = end + 4 + (int(match.group(1)) if match else 0)
            if len(self.buffer) < total:
                return
            body, self.buffer = self.buffer[end + 4:total], self.buffer[total:]
            if not head.startswith(b"POST "):
                answer = NOT_FOUND
            else:
                answer = SSE_RESPONSE if _STREAM.search(body) else JSON_RESPONSE
            self.loop.call_later(self.delay_s, self._send, answer, bool(_CLOSE.search(head)))

    def _send(self, answer: bytes, close: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)
            if close:
                self.transport.close()


async def serve(host: str, port: int, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: DelayProtocol(delay_s), host, port, backlog=4096)
    print(f"delay upstream on http://{host}:{port} ({delay_s * 1000:.0f} ms)", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds before each answer")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # plain asyncio still works, with less headroom
        asyncio.run(serve(args.host, args.port, args.delay))
    else:
        uvloop.run(serve(args.host, args.port, args.delay))


if __name__ == "__main__":
    main()
