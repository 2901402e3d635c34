"""Headless Chromium for the tests that draw a page (the dashboard, /docs and /redoc), driven over
the DevTools protocol:

    with Browser(chromium_path(), tmp_path) as browser:
        tab = browser.open(gw.url + "/docs")
        tab.wait_for("!!document.querySelector('.opblock')")  # polled, at most 15 s
        tab.dom(), tab.screenshot(path), tab.requested       # every URL the page asked for
        tab.blocked                                          # those the browser refused to send
        browser.outside                                      # every request that left the machine

Each tab has a browser context of its own (no cookie or password shared with another),
whose requests for loopback addresses go directly and every other one to a recorder on
127.0.0.1 (``Outside``), which answers 502: ``outside`` lists them. Chromium's own requests
(the component updater, Google sign-in, which no flag turns off) go to another such proxy,
``chromium_own``, and are no page's doing.

Chromium is the Debian package ``chromium``. Without it ``chromium_path()`` skips the test,
or fails it when ``CI`` or ``MODELBROKER_TEST_REDIS_URL`` is set (CI sets them and installs
Chromium), so that CI never passes without having drawn the pages.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import socketserver
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

INSTALL = "apt-get update && apt-get install -y chromium"
#: Read on import: the session's fixtures clear every MODELBROKER_* variable before the tests run.
REQUIRED = bool(os.environ.get("CI") or os.environ.get("MODELBROKER_TEST_REDIS_URL"))
#: Headless, and as few of Chromium's own requests (updates, safe browsing, metrics...) as flags allow.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-client-side-phishing-detection", "--disable-domain-reliability", "--no-pings",
    "--disable-extensions", "--disable-component-extensions-with-background-pages", "--disable-breakpad",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,NetworkTimeServiceQuerying",
    "--metrics-recording-only", "--hide-scrollbars", "--mute-audio", "--enable-automation",
]
WIDTH, HEIGHT = 1280, 900
STARTUP_S = 30


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = f"chromium is not installed; to draw the pages in a browser: {INSTALL}"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return path


class Outside(socketserver.ThreadingTCPServer):
    """A proxy on 127.0.0.1 that forwards nothing: it records each request's first line
    (``GET http://host/path HTTP/1.1``, ``CONNECT host:443 HTTP/1.1``) and answers 502."""

    daemon_threads = True

    def __init__(self) -> None:
        self.seen: list[str] = []
        super().__init__(("127.0.0.1", 0), _Refuse)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Refuse(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1").strip()
        if line:
            self.server.seen.append(line)
        self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")


class Browser:
    """One headless Chromium, its profile in ``directory``; ``open(url)`` gives a ``Tab``."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.outside_proxy = Outside()
        self.chromium_own = Outside()
        profile = directory / "chromium-profile"
        self.log = directory / "chromium.log"
        command = [executable, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                   f"--proxy-server={self.chromium_own.url}", f"--window-size={WIDTH},{HEIGHT}", "about:blank"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.closing = contextlib.ExitStack()
        self.ids = itertools.count(1)
        self.events: dict[str, list[dict[str, Any]]] = {}  # session id -> its events
        try:
            endpoint = self._endpoint(profile / "DevToolsActivePort")
            self.ws = self.closing.enter_context(connect(endpoint, max_size=None, open_timeout=STARTUP_S))
        except BaseException:
            self.close()
            raise

    def _endpoint(self, announced: Path) -> str:
        """Chromium writes its port and the browser's path there once it listens."""
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            lines = announced.read_text().split() if announced.exists() else []
            if len(lines) == 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"chromium did not start: {self.log.read_text(errors='replace')[-3000:]}")

    @property
    def outside(self) -> list[str]:
        """Every request that would have left the machine."""
        return list(self.outside_proxy.seen)

    def open(self, url: str) -> Tab:
        context = self.send("Target.createBrowserContext", proxyServer=self.outside_proxy.url)["browserContextId"]
        target = self.send("Target.createTarget", url="about:blank", browserContextId=context)["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.events[session] = []
        tab = Tab(self, session)
        tab.send("Network.enable")
        tab.send("Page.enable")
        tab.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
        tab.send("Page.navigate", url=url)
        return tab

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """A command's result; events read meanwhile are kept for their session."""
        number = next(self.ids)
        message = {"id": number, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            answer = self.read(deadline - time.monotonic())
            if answer is None:
                raise TimeoutError(f"chromium did not answer {method} within {timeout} s")
            if answer.get("id") == number:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The next message (an event is also kept); None after ``timeout`` seconds without one."""
        try:
            message = json.loads(self.ws.recv(timeout=max(0.0, timeout)))
        except TimeoutError:
            return None
        if "method" in message:
            self.events.setdefault(message.get("sessionId", ""), []).append(message)
        return message

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, keeping the events that come meanwhile."""
        deadline = time.monotonic() + seconds
        while self.read(deadline - time.monotonic()) is not None and time.monotonic() < deadline:
            pass

    def close(self) -> None:
        self.closing.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.outside_proxy.shutdown()
        self.outside_proxy.server_close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tab:
    """One page of a ``Browser``."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, self.session, **params)

    @property
    def requested(self) -> list[str]:
        """Every URL the page asked for, itself included, in order."""
        return [event["params"]["request"]["url"] for event in self.browser.events[self.session]
                if event["method"] == "Network.requestWillBeSent"]

    @property
    def blocked(self) -> dict[str, str]:
        """URL -> why, for each request the browser did not send (``csp``: the page's
        Content-Security-Policy forbids it)."""
        events = self.browser.events[self.session]
        urls = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in events
                if e["method"] == "Network.requestWillBeSent"}
        return {urls[e["params"]["requestId"]]: e["params"]["blockedReason"] for e in events
                if e["method"] == "Network.loadingFailed" and e["params"].get("blockedReason")
                and e["params"]["requestId"] in urls}

    def document(self, timeout: float = 15) -> dict[str, Any]:
        """The response to the page's own request (``status``, ``headers``...), once it has come: even
        a page the browser then holds back (a 401 asking for a password) has one."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.browser.events[self.session]
            asked = [e["params"]["requestId"] for e in events
                     if e["method"] == "Network.requestWillBeSent" and e["params"].get("type") == "Document"]
            for event in events:
                if event["method"] == "Network.responseReceived" and asked and event["params"]["requestId"] == asked[0]:
                    return event["params"]["response"]
            if time.monotonic() > deadline:
                raise AssertionError(f"after {timeout} s, no answer to the page's request; requested: {self.requested}")
            self.browser.pause(0.05)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        answer = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression}: {answer['exceptionDetails'].get('text')}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15) -> Any:
        """Poll ``expression`` until it is truthy and return it; AssertionError after ``timeout`` seconds
        with the page's text. A page still loading (no document yet) is polled again."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the document is being replaced
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText : ''") or ""
                raise AssertionError(f"after {timeout} s, still not {expression}; the page says:\n{text[:3000]}")
            self.browser.pause(0.05)

    def dom(self) -> str:
        """The page's HTML as its scripts left it (polled while a document is being replaced)."""
        return self.wait_for("document.documentElement && document.documentElement.outerHTML")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path
