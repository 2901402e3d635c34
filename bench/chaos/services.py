"""The processes a chaos run starts, each its own, so restarting one disturbs nothing else.

Redis and PostgreSQL are started from their binaries on free ports with their data in
the run's temp dir (never the machine's shared servers); one fake upstream per provider
(``python -m modelbroker.fake_upstream``), so a fault set on one hits one provider; the
gateway as ``modelbroker serve``, the way it runs in production.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench import procs

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/local/bin")


def redis_binary() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.access(p, os.X_OK)), None)


def pg_binary(name: str) -> str | None:
    found = PG_BIN / name
    return str(found) if os.access(found, os.X_OK) else shutil.which(name)


def missing() -> list[str]:
    """The binaries a chaos run needs and cannot find."""
    wanted = {"redis-server": redis_binary(), "initdb": pg_binary("initdb"), "pg_ctl": pg_binary("pg_ctl")}
    return [name for name, path in wanted.items() if path is None]


class Redis:
    """redis-server on a free port, without persistence; ``restart`` stops it for a while."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = procs.free_port()
        self.proc: procs.Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(self.work)]
        self.proc = procs.start("redis", cmd, log_dir=self.work)
        procs.wait_listening(self.proc, self.port, timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []


class Postgres:
    """A PostgreSQL cluster of its own (initdb in a temp dir, pg_ctl), trust auth on 127.0.0.1.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user.
    ``fsync`` is off: a stop or a crash of the server loses nothing the OS has (the machine
    does not crash), and the run writes less to a shared disk.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = procs.free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(list(args), user=self.user, cwd=self.root, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-800:]}")

    def init(self) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(pg_binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=50 -c shared_buffers=16MB")
        self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w",
                  "-t", "30", "-o", options, "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends the sessions and shuts down cleanly; ``immediate`` is a crash."""
        if self.running:
            self.running = False
            self._run(pg_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def pids(self) -> list[int]:
        """The postmaster and every server process under it."""
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return procs.descendants(postmaster)

    def remove(self) -> None:
        for pid in self.pids():  # a frozen server would not stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class FakeUpstream:
    """One ``python -m modelbroker.fake_upstream`` process, for one provider."""

    def __init__(self, name: str, work: Path) -> None:
        self.name = name
        self.port = procs.free_port()
        self.proc = procs.start(f"upstream-{name}", [sys.executable, "-m", "modelbroker.fake_upstream",
                                                     "--port", str(self.port)], log_dir=work, cwd=REPO)
        self.control = httpx.Client(base_url=self.url, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self) -> None:
        procs.wait_listening(self.proc, self.port, timeout=30)

    def behave(self, model: str, behavior: dict) -> None:
        """The behaviour of ``model`` (``*``: of every model not set on its own)."""
        answer = self.control.post("/_fake/behavior", json={"model": model, "behavior": behavior})
        answer.raise_for_status()

    def calls(self) -> dict[str, int]:
        """Requests answered so far, by model: each one upstream call."""
        return self.control.get("/_fake/stats").json()["calls"]

    def stop(self) -> None:
        self.control.close()
        self.proc.stop()


class Gateway:
    """``python -m modelbroker serve`` with the run's Redis, PostgreSQL and app.log."""

    def __init__(self, work: Path, config: Path, env: dict[str, str], grace_s: float) -> None:
        self.port = procs.free_port()
        self.grace_s = grace_s
        self.log_file = work / "app.log"
        env = {"MODELBROKER_LOG_FILE": str(self.log_file), "MODELBROKER_GRACEFUL_SHUTDOWN_S": str(grace_s),
               "MODELBROKER_DISABLED_PLUGINS": "", **env}
        cmd = [sys.executable, "-m", "modelbroker", "serve", "--config", str(config), "--host", "127.0.0.1",
               "--port", str(self.port)]
        self.proc = procs.start("gateway", cmd, log_dir=work, env=env, cwd=work)
        self.exit_code: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self) -> None:
        procs.wait_listening(self.proc, self.port, timeout=60)

    def rss(self) -> int:
        return procs.rss_bytes(self.pid)

    def reload(self) -> None:
        os.kill(self.pid, signal.SIGHUP)

    def shutdown(self) -> float:
        """SIGTERM, then wait for requests in flight and the plugins' flush; the seconds it took."""
        started = time.monotonic()
        if self.proc.alive():
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.exit_code = self.proc.popen.wait(self.grace_s + 30)
        except subprocess.TimeoutExpired:
            self.exit_code = None  # killed below: what it had not flushed is lost, and the report shows it
        self.proc.stop()
        return time.monotonic() - started
