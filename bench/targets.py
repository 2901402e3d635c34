"""The targets under test, each its own process pinned to the target CPU.

* ``direct``: no proxy, the client talks to the upstream itself (the baseline);
* ``modelbroker``: ``uvicorn main:app --workers 1 --no-access-log`` with a generated
  providers.yaml whose one provider is the upstream, and full logging to a temp app.log;
  endpoints ``/generate``, ``/v1/chat/completions``, ``/v1/messages`` and ``/v1/responses``
  (the same request in each API, the last two translated to the same chat upstream; the
  Responses one stored, as by default, and again with ``store: false``);
* ``reference``: ``bench/reference_proxy.py`` (FastAPI + one aiohttp session), same uvicorn flags;
* ``litellm``: LiteLLM's proxy, only if ``bench/.litellm-venv`` exists.

uvicorn picks uvloop and httptools when they are installed (they are, with
``uvicorn[standard]``); every Python target runs the same way.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.upstreams import MODEL, Upstream

REPO = Path(__file__).resolve().parent.parent
LITELLM_VENV = REPO / "bench" / ".litellm-venv"
LITELLM_KEY = "sk-bench-not-secret"
PROMPT = "Hello, how are you today? Please answer in one short sentence."

ALL_TARGETS = ("direct", "modelbroker", "reference", "litellm")
#: The interpreter that runs modelbroker and the reference (``--python``): by default this one.
#: A venv with only the runtime dependencies (``pip install -e .``) shows the RSS a user sees;
#: the test extra adds packages (rich, pygments) that httpx imports when they are present.
TARGET_PYTHON = sys.executable

MODELBROKER_CONFIG = """\
# Written by python -m bench: one provider, the benchmark upstream.
strategy: priority
providers:
  - name: bench
    endpoint: "{url}"
    model: {model}
    priority: 1
    cost_per_1k_tokens: 0.001
    api_key: "bench-key-not-secret"
"""

LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: "{api_base}"
      api_key: "bench-key-not-secret"
general_settings:
  master_key: "{key}"
litellm_settings:
  telemetry: false
"""


def chat_body(stream: bool) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    if stream:
        body["stream"] = True
    return json.dumps(body)


def messages_body(stream: bool) -> str:
    """The same request in Anthropic's Messages API (``/v1/messages``)."""
    body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    return json.dumps(body)


def responses_body(stream: bool, store: bool = True) -> str:
    """The same request in OpenAI's Responses API (``/v1/responses``): stored, as by default,
    or not (``store: false``, the surface's translation alone)."""
    body = {"model": MODEL, "input": PROMPT, "max_output_tokens": 64}
    if not store:
        body["store"] = False
    if stream:
        body["stream"] = True
    return json.dumps(body)


def generate_body(stream: bool) -> str:
    body = {"prompt": PROMPT, "max_tokens": 64}
    if stream:
        body["stream"] = True
    return json.dumps(body)


@dataclass
class Endpoint:
    """One thing to load: a target's URL and the body to POST there."""

    target: str
    name: str
    url: str
    body: str
    pid: int | None = None
    auth: str = ""

    @property
    def label(self) -> str:
        return f"{self.target} {self.name}"


@dataclass
class Target:
    name: str
    proc: procs.Proc | None = None
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def litellm_available() -> bool:
    return (LITELLM_VENV / "bin" / "litellm").exists()


def _uvicorn(app: str, port: int) -> list[str]:
    return [TARGET_PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--no-access-log", "--log-level", "warning"]


def start_target(name: str, upstream: Upstream, stream: bool, tmp: Path, cpu: int | None,
                 extra_env: dict[str, str] | None = None) -> Target:
    """Start target ``name`` in front of ``upstream`` (its SSE answer when ``stream``);
    ``extra_env`` is added to the target's environment (``python -m bench.profile --env``)."""
    upstream_url = upstream.url(stream)
    if name == "direct":
        return Target(name, None, [Endpoint(name, "upstream", upstream_url, chat_body(stream))])
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    work = tmp / name
    work.mkdir(parents=True, exist_ok=True)
    if name == "modelbroker":
        config = work / "providers.yaml"
        config.write_text(MODELBROKER_CONFIG.format(url=upstream_url, model=MODEL))
        env = {"MODELBROKER_CONFIG": str(config), "MODELBROKER_LOG_FILE": str(work / "app.log"), **(extra_env or {})}
        proc = procs.start(name, _uvicorn("main:app", port), log_dir=work, cpu=cpu, env=env, cwd=REPO)
        endpoints = [Endpoint(name, "/generate", base + "/generate", generate_body(stream)),
                     Endpoint(name, "/v1/chat/completions", base + "/v1/chat/completions", chat_body(stream)),
                     Endpoint(name, "/v1/messages", base + "/v1/messages", messages_body(stream)),
                     Endpoint(name, "/v1/responses", base + "/v1/responses", responses_body(stream)),
                     Endpoint(name, "/v1/responses store:false", base + "/v1/responses",
                              responses_body(stream, store=False))]
    elif name == "reference":
        env = {"BENCH_UPSTREAM_URL": upstream_url, **(extra_env or {})}
        proc = procs.start(name, _uvicorn("bench.reference_proxy:app", port), log_dir=work, cpu=cpu,
                           env=env, cwd=REPO)
        endpoints = [Endpoint(name, "/v1/chat/completions", base + "/v1/chat/completions", chat_body(stream))]
    elif name == "litellm":
        api_base = upstream_url.rsplit("/chat/completions", 1)[0]
        config = work / "config.yaml"
        config.write_text(LITELLM_CONFIG.format(model=MODEL, api_base=api_base, key=LITELLM_KEY))
        env = {"LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "LITELLM_TELEMETRY_DISABLED": "true", "LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE": "true"}
        cmd = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
               "--port", str(port), "--num_workers", "1"]
        proc = procs.start(name, cmd, log_dir=work, cpu=cpu, env=env, cwd=work)
        endpoints = [Endpoint(name, "/v1/chat/completions", base + "/v1/chat/completions", chat_body(stream),
                              auth=f"Bearer {LITELLM_KEY}")]
    else:
        raise ValueError(f"unknown target {name!r}; targets: {', '.join(ALL_TARGETS)}")
    target = Target(name, proc, endpoints)
    try:
        procs.wait_listening(proc, port, timeout=120 if name == "litellm" else 30)
        for endpoint in endpoints:
            endpoint.pid = proc.pid
            check(endpoint)
    except BaseException:
        target.stop()
        raise
    return target


def check(endpoint: Endpoint, timeout: float = 10.0) -> None:
    """One request must answer 200 with the upstream's text in it, before anything is measured."""
    headers = {"content-type": "application/json"}
    if endpoint.auth:
        headers["authorization"] = endpoint.auth
    request = urllib.request.Request(endpoint.url, data=endpoint.body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    if status != 200 or b"Hello!" not in body:
        raise RuntimeError(f"{endpoint.label} answered {status} without the upstream's text: {body[:300]!r}")
