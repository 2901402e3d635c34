"""plugins/file_log.py across log rotation: app.log moved or deleted under a running gateway.

Each test runs ``modelbroker serve`` in a process of its own and loads it with a bounded
number of requests from a few concurrent clients; every request makes one attempt, so
app.log and the moved file hold one line per request between them. The process is
stopped (SIGTERM: every line flushed) before the files are counted.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from modelbroker.plugins.file_log import FLUSH_INTERVAL_S

REQUESTS = 300
CLIENTS = 4
TIMEOUT = 10.0
DOCS = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


@pytest.fixture
def served(tmp_path, provider, upstream, gateway_process, subprocess_env):
    """A gateway process writing app.log in ``tmp_path``; returns (process, app.log's path)."""
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump({"providers": [provider("a")]}), encoding="utf-8")
    log = tmp_path / "logs" / "app.log"
    return gateway_process(path, subprocess_env(MODELBROKER_LOG_FILE=str(log))), log


def request_ids(*paths: Path) -> list[str]:
    """The request ids of every line of ``paths`` (a missing file has none)."""
    ids: list[str] = []
    for path in paths:
        if path.exists():
            ids += re.findall(r'"request_id":"([^"]+)"', path.read_text(encoding="utf-8"))
    return ids


async def load(url: str, count: int, prefix: str, midway: Callable[[], None] | None = None) -> None:
    """``count`` requests over CLIENTS concurrent clients, all of them answered 200; ``midway``
    is called once half of them are answered, while the others are still being sent."""
    numbers = iter(range(count))
    done = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal done
        for number in numbers:
            answer = await http.post("/generate", json={"prompt": "hi"}, headers={"x-request-id": f"{prefix}-{number}"})
            assert answer.status_code == 200, answer.text
            done += 1
            if done == count // 2 and midway is not None:
                midway()

    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(CLIENTS))), 60)


def wait_for_lines(path: Path, count: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(request_ids(path)) >= count:
            return True
        time.sleep(FLUSH_INTERVAL_S / 2)
    return len(request_ids(path)) >= count


async def test_no_line_is_lost_when_app_log_is_moved_under_load(served):
    process, log = served
    moved = log.with_name("app.log.1")

    def move() -> None:
        assert wait_for_lines(log, 1)  # some lines are in the file to be moved
        log.rename(moved)

    await load(process.url, REQUESTS, "req", midway=move)
    await load(process.url, 1, "after")  # sent once the move is long noticed: must be in the new app.log
    assert wait_for_lines(log, 1), "nothing was written to a new app.log after the move"
    process.stop()

    old, new = request_ids(moved), request_ids(log)
    assert old and new
    assert sorted(old + new) == sorted([f"req-{n}" for n in range(REQUESTS)] + ["after-0"])
    assert "after-0" in new


async def test_lines_go_to_a_new_file_when_app_log_is_deleted(served):
    process, log = served
    await load(process.url, REQUESTS // 2, "before")
    assert wait_for_lines(log, REQUESTS // 2)
    log.unlink()
    await load(process.url, REQUESTS // 2, "after")
    process.stop()
    assert sorted(request_ids(log)) == sorted(f"after-{n}" for n in range(REQUESTS // 2))


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
async def test_logrotate_with_the_documented_stanza_loses_no_line(served, tmp_path):
    """docs/reliability.md's stanza, its path made this app.log's, run by logrotate midway."""
    process, log = served
    stanza = documented_stanza().replace("/var/log/modelbroker/app.log", str(log))
    conf = tmp_path / "logrotate.conf"
    conf.write_text(stanza, encoding="utf-8")

    def rotate() -> None:
        assert wait_for_lines(log, 1)  # notifempty: an empty app.log would not be rotated
        subprocess.run(["logrotate", "--state", str(tmp_path / "logrotate.state"), "--force", str(conf)],
                       check=True, capture_output=True, timeout=TIMEOUT)

    await load(process.url, REQUESTS, "req", midway=rotate)
    await load(process.url, 1, "after")
    assert wait_for_lines(log, 1), "nothing was written to a new app.log after the rotation"
    process.stop()
    rotated = log.with_name("app.log.1")
    assert rotated.exists(), sorted(p.name for p in log.parent.iterdir())
    assert sorted(request_ids(rotated) + request_ids(log)) == sorted([f"req-{n}" for n in range(REQUESTS)] + ["after-0"])
    assert "after-0" in request_ids(log)


def documented_stanza() -> str:
    """The logrotate stanza of docs/reliability.md (the code block that rotates app.log)."""
    found = re.findall(r"^```\n(/var/log/modelbroker/app\.log \{\n.*?)^```$", DOCS.read_text(encoding="utf-8"),
                       flags=re.S | re.M)
    assert len(found) == 1, "docs/reliability.md should show one logrotate stanza for app.log"
    return found[0]
