"""The upstreams the targets talk to: nginx with fixed answers, and a 50 ms upstream.

* nginx (Debian's package) with a generated config in a temp dir, run in the
  foreground (``daemon off``), one worker: ``POST /v1/chat/completions`` returns a
  fixed OpenAI chat.completion (with usage) at no cost, ``POST
  /sse/v1/chat/completions`` a fixed stream of ``data:`` chunks ending in ``[DONE]``.
* the delayed upstream (``bench/delay_upstream.py``): the same JSON after 50 ms.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import procs

MODEL = "bench-model"
REPLY = "Hello! I am a fixed answer from the benchmark upstream, the same every time."

COMPLETION = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
}


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> dict:
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
             "model": MODEL, "choices": [] if usage else
             [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage:
        chunk["usage"] = usage
    return chunk


def _sse_body() -> str:
    words = REPLY.split(" ")
    pieces = [" ".join(words[i:i + 4]) + " " for i in range(0, len(words), 4)]
    chunks = [_chunk({"role": "assistant", "content": ""})]
    chunks += [_chunk({"content": p}) for p in pieces]
    chunks += [_chunk({}, "stop"), _chunk({}, usage=COMPLETION["usage"])]
    return "".join(f"data: {json.dumps(c, separators=(',', ':'))}\n\n" for c in chunks) + "data: [DONE]\n\n"


COMPLETION_JSON = json.dumps(COMPLETION, separators=(",", ":"))
SSE_BODY = _sse_body()

NGINX_APT = "apt-get install -y nginx-light wrk"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def _nginx_string(text: str) -> str:
    """``text`` as a single-quoted nginx string (nginx turns \\n back into a newline)."""
    assert "'" not in text and "$" not in text
    return "'" + text.replace("\\", "\\\\").replace("\n", "\\n") + "'"


NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile 16384;
master_process on;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 {json};
        }}
        location = /sse/v1/chat/completions {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            return 200 {sse};
        }}
        location / {{ return 404; }}
    }}
}}
"""


@dataclass
class Upstream:
    """A running upstream: its process and the URLs of its answers."""

    name: str
    proc: procs.Proc
    port: int
    json_path: str
    sse_path: str | None
    delay_s: float = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, stream: bool) -> str:
        return self.base + (self.sse_path if stream and self.sse_path else self.json_path)

    def stop(self) -> None:
        self.proc.stop()


def start_nginx(tmp: Path, cpu: int | None) -> Upstream:
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError(f"nginx is not installed: {NGINX_APT}")
    conf_dir = tmp / "nginx"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf_dir.chmod(0o755)
    port = procs.free_port()
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=conf_dir, port=port, json=_nginx_string(COMPLETION_JSON),
                                      sse=_nginx_string(SSE_BODY)))
    proc = procs.start("nginx", [binary, "-p", str(conf_dir), "-e", str(conf_dir / "nginx-error.log"),
                                 "-c", str(conf)], log_dir=tmp, cpu=cpu)
    procs.wait_listening(proc, port)
    return Upstream("nginx", proc, port, "/v1/chat/completions", "/sse/v1/chat/completions")


def start_delayed(tmp: Path, cpu: int | None, delay_s: float = 0.05) -> Upstream:
    port = procs.free_port()
    cmd = [sys.executable, "-m", "bench.delay_upstream", "--port", str(port), "--delay", str(delay_s)]
    proc = procs.start("delay-upstream", cmd, log_dir=tmp, cpu=cpu, cwd=Path(__file__).resolve().parent.parent)
    procs.wait_listening(proc, port)
    return Upstream(f"delay {delay_s * 1000:.0f} ms", proc, port, "/v1/chat/completions", None, delay_s)


def nginx_version() -> str:
    binary = nginx_binary()
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stderr or out.stdout).strip().split("/")[-1]
