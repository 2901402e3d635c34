"""Load generation with wrk: run one cell, parse the JSON line the Lua script prints.

One wrk thread (it is pinned to one CPU with the upstreams), ``-c`` connections,
``-d`` seconds. Latency percentiles are wrk's own (microsecond histogram). The
target process's CPU time is read from /proc just before and just after wrk, and
its RSS right after, so CPU per request covers exactly the measured requests.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs

WRK_DIR = Path(__file__).resolve().parent / "wrk"
WRK_APT = "apt-get install -y wrk"


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class Cell:
    """One measured cell: wrk's numbers plus the target's CPU and memory."""

    wrk: WrkResult
    cpu_us_per_req: float | None = None
    rss_bytes: int | None = None


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    binary = wrk_binary()
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    first = (out.stdout + out.stderr).strip().splitlines()
    return first[0].split(" [")[0].replace("wrk ", "") if first else "?"


def parse_wrk(output: str) -> WrkResult:
    """The BENCH_RESULT line printed by the Lua ``done()`` hook."""
    for line in output.splitlines():
        if line.startswith("BENCH_RESULT "):
            data = json.loads(line[len("BENCH_RESULT "):])
            break
    else:
        raise RuntimeError(f"wrk printed no BENCH_RESULT line:\n{output[-2000:]}")
    errors = {k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]}
    return WrkResult(
        requests=data["requests"], duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000, p90_ms=data["p90_us"] / 1000, p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000, mean_ms=data["mean_us"] / 1000, errors=errors,
    )


def run_wrk(url: str, body: str, *, connections: int, duration_s: float, cpu: int | None,
            auth: str = "", script: str = "post.lua", extra_env: dict[str, str] | None = None,
            timeout_s: float = 10.0) -> WrkResult:
    """One wrk run against ``url``, POSTing ``body``; bounded by ``duration_s`` plus a margin."""
    binary = wrk_binary()
    if binary is None:
        raise RuntimeError(f"wrk is not installed: {WRK_APT}")
    seconds = max(1, round(duration_s))  # wrk's -d takes whole seconds
    cmd = [*procs.pin_prefix(cpu), binary, "-t1", f"-c{connections}", f"-d{seconds}s",
           f"--timeout={int(timeout_s)}s", "-s", str(WRK_DIR / script), url]
    env = {**os.environ, "BENCH_BODY": body, "BENCH_AUTH": auth, **(extra_env or {})}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + timeout_s + 30)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout[-1000:]}")
    return parse_wrk(out.stdout)


def run_wrk_count(url: str, *, connections: int, limit: int, max_s: float, cpu: int | None,
                  env: dict[str, str], timeout_s: float = 10.0) -> WrkResult:
    """wrk with ``wrk/soak.lua`` until ``limit`` responses (or ``max_s``), then SIGINT so it reports at once."""
    binary = wrk_binary()
    if binary is None:
        raise RuntimeError(f"wrk is not installed: {WRK_APT}")
    cmd = [*procs.pin_prefix(cpu), binary, "-t1", f"-c{connections}", f"-d{max(1, round(max_s))}s",
           f"--timeout={int(timeout_s)}s", "-s", str(WRK_DIR / "soak.lua"), url]
    popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "BENCH_LIMIT": str(limit), **env})
    try:
        deadline = time.monotonic() + max_s + timeout_s
        seen = b""
        while popen.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([popen.stderr], [], [], 0.2)
            if ready:
                data = os.read(popen.stderr.fileno(), 4096)
                seen += data
                if b"BENCH_LIMIT_REACHED" in seen or not data:
                    break
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)
        out, err = popen.communicate(timeout=timeout_s + 10)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    return parse_wrk(out.decode(errors="replace"))


def measure(url: str, body: str, *, pid: int | None, connections: int, duration_s: float,
            cpu: int | None, auth: str = "") -> Cell:
    """Run wrk and read the CPU time and RSS of process ``pid`` (and its children) around it."""
    before = procs.cpu_seconds(pid) if pid else None
    result = run_wrk(url, body, connections=connections, duration_s=duration_s, cpu=cpu, auth=auth)
    cell = Cell(result)
    if pid:
        used = procs.cpu_seconds(pid) - before
        cell.cpu_us_per_req = used * 1e6 / result.requests if result.requests else None
        cell.rss_bytes = procs.rss_bytes(pid)
    return cell
