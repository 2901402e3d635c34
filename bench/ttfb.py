"""Time to first byte of a streamed answer, which wrk cannot see.

A raw-asyncio HTTP/1.1 client on one keep-alive connection per endpoint sends N
streaming requests one after another and records, for each, the time from
writing the request to the first byte of the body (``ttfb``) and to its last
byte (``total``). Endpoints are interleaved in rounds so drift hits them all.

    python -m bench.ttfb http://127.0.0.1:8000/v1/chat/completions -n 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class TtfbResult:
    label: str
    ttfb_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    errors: int = 0

    @staticmethod
    def _pct(values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def ttfb(self, q: float) -> float:
        return self._pct(self.ttfb_ms, q)

    def total(self, q: float) -> float:
        return self._pct(self.total_ms, q)

    @property
    def count(self) -> int:
        return len(self.ttfb_ms)


class Connection:
    """One keep-alive HTTP/1.1 connection that can time a POST's first and last body byte."""

    def __init__(self, url: str, body: str, auth: str = "") -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        headers = [f"POST {parts.path or '/'} HTTP/1.1", f"host: {parts.netloc}",
                   "content-type: application/json", "accept: text/event-stream",
                   f"content-length: {len(body.encode())}"]
        if auth:
            headers.append(f"authorization: {auth}")
        self.request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body.encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None

    async def once(self, timeout: float = 10.0) -> tuple[float, float]:
        """(ttfb seconds, total seconds) of one request; raises on a bad or incomplete answer."""
        if self.writer is None:
            await self.open()
        started = time.perf_counter()
        self.writer.write(self.request)
        return await asyncio.wait_for(self._read(started), timeout)

    async def _read(self, started: float) -> tuple[float, float]:
        buffer, first, head_end = b"", None, -1
        length, chunked, close = None, False, False
        while True:
            data = await self.reader.read(65536)
            now = time.perf_counter()
            if not data:
                if close and head_end >= 0 and first is not None:
                    await self.close()
                    return first - started, now - started
                raise ConnectionError("connection closed before the answer ended")
            buffer += data
            if head_end < 0:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    continue
                lines = buffer[:head_end].decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                if status != 200:
                    raise RuntimeError(f"status {status}")
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name, value = name.strip().lower(), value.strip().lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "transfer-encoding" and "chunked" in value:
                        chunked = True
                    elif name == "connection" and "close" in value:
                        close = True
            body = len(buffer) - head_end - 4
            if first is None and body > 0:
                first = now
            if length is not None and body >= length:
                return first - started, now - started
            if chunked and buffer.endswith(b"\r\n0\r\n\r\n"):
                return first - started, now - started


async def measure(endpoints: list[tuple[str, str, str, str]], requests: int, *, rounds: int = 10,
                  warmup: int = 20) -> list[TtfbResult]:
    """``endpoints`` are (label, url, body, auth); each gets ``requests`` sequential requests."""
    conns = [Connection(url, body, auth) for _, url, body, auth in endpoints]
    results = [TtfbResult(label) for label, *_ in endpoints]
    per_round = max(1, requests // rounds)
    try:
        for conn in conns:
            for _ in range(warmup):
                try:
                    await conn.once()
                except (OSError, RuntimeError, asyncio.TimeoutError, ConnectionError, ValueError):
                    await conn.close()
        for _ in range(rounds):
            for conn, result in zip(conns, results):
                # A fresh connection each round, primed by one untimed request: a connection left
                # idle while the other endpoints ran may have hit the server's keep-alive timeout.
                await conn.close()
                try:
                    await conn.once()
                except (OSError, RuntimeError, asyncio.TimeoutError, ConnectionError, ValueError):
                    await conn.close()
                for _ in range(per_round):
                    try:
                        ttfb, total = await conn.once()
                    except (OSError, RuntimeError, asyncio.TimeoutError, ConnectionError, ValueError):
                        result.errors += 1
                        await conn.close()
                        continue
                    result.ttfb_ms.append(ttfb * 1000)
                    result.total_ms.append(total * 1000)
    finally:
        for conn in conns:
            await conn.close()
    return results


def run(endpoints: list[tuple[str, str, str, str]], requests: int, **kwargs) -> list[TtfbResult]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(measure(endpoints, requests, **kwargs))
    return uvloop.run(measure(endpoints, requests, **kwargs))


def main() -> None:
    parser = argparse.ArgumentParser(description="TTFB of streamed POSTs, sequentially")
    parser.add_argument("urls", nargs="+")
    parser.add_argument("-n", "--requests", type=int, default=200)
    parser.add_argument("--body", default='{"model": "bench-model", "stream": true, '
                                          '"messages": [{"role": "user", "content": "Hello"}]}')
    args = parser.parse_args()
    for r in run([(u, u, args.body, "") for u in args.urls], args.requests):
        print(f"{r.label}: n={r.count} errors={r.errors} ttfb p50 {r.ttfb(0.5):.3f} ms "
              f"p99 {r.ttfb(0.99):.3f} ms; total p50 {r.total(0.5):.3f} ms (mean {statistics.fmean(r.total_ms or [0]):.3f})")


if __name__ == "__main__":
    main()
