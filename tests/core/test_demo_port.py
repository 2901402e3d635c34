"""core/_cli/demo.py and serve.py: a port in use stops ``demo`` and ``serve`` in one line, before the
banner and before anything is written (issue #21: the demo printed its banner, then uvicorn's bind
error, and left app.log and modelbroker.db behind)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

MODELBROKER = Path(sys.executable).with_name("modelbroker")


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["demo", "serve"])
def test_a_port_in_use_is_one_line_and_leaves_nothing(command, busy_port, tmp_path, write_config, subprocess_env):
    work = tmp_path / "work"
    work.mkdir()
    config = write_config("providers: []\n")  # beside work/, for serve
    done = subprocess.run([str(MODELBROKER), command, "--port", str(busy_port), *(
        ["--config", str(config)] if command == "serve" else [])], cwd=work, capture_output=True, text=True,
        env=subprocess_env(), timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""  # no banner
    assert done.stderr.strip() == f"modelbroker: port {busy_port} on 127.0.0.1 is in use; choose another with --port N"
    assert list(work.iterdir()) == []  # no app.log, no modelbroker.db


def test_an_address_that_cannot_be_had_says_host(tmp_path, subprocess_env):
    done = subprocess.run([str(MODELBROKER), "demo", "--host", "192.0.2.1", "--port", "8000"], cwd=tmp_path,
                          capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("modelbroker: cannot listen on 192.0.2.1 port 8000: ")
    assert done.stderr.rstrip().endswith("choose another address with --host")
    assert list(tmp_path.iterdir()) == []
