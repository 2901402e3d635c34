"""Child processes for the benchmark: start pinned, wait until listening, always stop.

Every process is started in its own session (its own process group), so stopping
it kills the whole group: uvicorn's children, nginx's workers. ``cleanup_all``
runs at exit and on SIGINT/SIGTERM, so an interrupted run leaves nothing behind.
CPU time and RSS are read from /proc for the process and all its descendants.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
_RUNNING: list[Proc] = []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pin_prefix(cpu: int | None) -> list[str]:
    """``taskset -c CPU`` when pinning is wanted and possible, else nothing."""
    if cpu is None or shutil.which("taskset") is None or cpu >= (os.cpu_count() or 1):
        return []
    return ["taskset", "-c", str(cpu)]


@dataclass
class Proc:
    """A started child process (leader of its own process group) and its log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the group, then SIGKILL it if it is still there after ``timeout``."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # stragglers in the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(2)


def start(name: str, cmd: list[str], *, log_dir: Path, cpu: int | None = None,
          env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Proc:
    """Start ``cmd`` pinned to ``cpu`` in a new session; output goes to ``log_dir/name.log``."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            [*pin_prefix(cpu), *cmd], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )
    proc = Proc(name, popen, log_path)
    _RUNNING.append(proc)
    return proc


def wait_listening(proc: Proc, port: int, timeout: float = 30.0) -> None:
    """Return once 127.0.0.1:port accepts connections; raise with the log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on port {port} within {timeout:.0f} s:\n{proc.log_tail()}")


def cleanup_all() -> None:
    for proc in list(_RUNNING):
        proc.stop(timeout=3)


def install_cleanup() -> None:
    """Stop every child at exit and on SIGINT/SIGTERM."""
    atexit.register(cleanup_all)

    def on_signal(signum, _frame):
        cleanup_all()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


# ---------------------------------------------------------------- /proc readings

def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()  # fields from 'state' (field 3) on


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its live descendants, plus its reaped children's (cutime+cstime)."""
    ticks = 0
    for index, member in enumerate(descendants(pid)):
        fields = _stat_fields(member)
        if fields is None:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if index == 0:
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK_TCK


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` plus its live descendants."""
    total = 0
    for member in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


# ---------------------------------------------------------------- other load on the machine

def _all_ticks() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime) for every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                found[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return found


class ForeignLoad:
    """CPU used by processes that are not this run's (nor kernel threads) between start() and stop().

    Other people's test runs on a shared machine skew a benchmark; this makes them visible.
    """

    def __init__(self) -> None:
        self._before: dict[int, tuple[int, int]] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._before, self._t0 = _all_ticks(), time.monotonic()

    def stop(self) -> float:
        """Percent of one CPU used by foreign processes over the interval."""
        after, elapsed = _all_ticks(), time.monotonic() - self._t0
        ours = set(descendants(os.getpid()))
        kernel = set(descendants(2)) | {2}
        ticks = 0
        for pid, (_, now) in after.items():
            if pid in ours or pid in kernel:
                continue
            ticks += now - self._before.get(pid, (0, 0))[1] if pid in self._before else now
        return 100.0 * ticks / CLK_TCK / elapsed if elapsed > 0 else 0.0


def wait_idle(pid: int | None, timeout: float = 15.0, interval: float = 0.2) -> float:
    """Wait until ``pid`` (and children) use < 10% of a CPU, so a backlog left by the last
    cell does not eat into the next target's CPU; returns the seconds waited."""
    if not pid:
        return 0.0
    started = time.monotonic()
    before = cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        time.sleep(interval)
        now = cpu_seconds(pid)
        if now - before < 0.1 * interval:
            break
        before = now
    return time.monotonic() - started
