"""The faults of a chaos run, and their schedule.

Each fault is switched on, held for some seconds, then healed. Provider faults set a
behaviour of the fake upstream (``POST /_fake/behavior``) for one provider's model, or
for several at once; the healthy provider ``steady`` never gets one. The others restart
Redis or PostgreSQL, reload a changed providers.yaml with SIGHUP, or make many clients
leave mid-request. The schedule spreads them evenly over the run, in an order drawn
from the seed, and never two at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.chaos import config

if TYPE_CHECKING:
    from bench.chaos.rig import Rig

#: How a healthy upstream answers: after 0.1 s; a stream in 10 pieces 50 ms apart, long enough
#: for a client that leaves after the first piece to leave mid-stream.
BASELINE = {"kind": "ok", "delay_s": 0.1, "chunks": 10, "chunk_delay_s": 0.05}
#: The longest a fault is held (a short run holds each for a part of its slot).
MAX_HOLD_S = 20.0
STORM_DISCONNECT_RATE = 0.5


@dataclass
class Fault:
    name: str
    start: Callable[[Rig], None]
    heal: Callable[[Rig], None]


@dataclass
class Scheduled:
    fault: Fault
    at_s: float
    hold_s: float
    error: str | None = None


def _behaviour(**fields) -> dict:
    return {**BASELINE, "delay_s": 0.0, **fields}


def _on(behaviours: dict[str, dict]) -> Callable[[Rig], None]:
    def start(rig: Rig) -> None:
        for name, behaviour in behaviours.items():
            rig.upstreams[name].behave(config.model_of(name), behaviour)
    return start


def _off(names) -> Callable[[Rig], None]:
    def heal(rig: Rig) -> None:
        for name in names:
            rig.upstreams[name].behave(config.model_of(name), BASELINE)
    return heal


def provider_fault(name: str, behaviours: dict[str, dict]) -> Fault:
    targets = ", ".join(behaviours)
    return Fault(f"{name} ({targets})", _on(behaviours), _off(list(behaviours)))


#: name -> the fake upstream's behaviour for it
PROVIDER_FAULTS = {
    "500s": _behaviour(kind="status", status=500),
    "hang past timeout_s": _behaviour(kind="ok", delay_s=60.0),
    "drop the connection": _behaviour(kind="drop"),
    "stall mid-stream": _behaviour(kind="stream_stall", cut_after=1),
    "stream cut before content": _behaviour(kind="stream_cut", cut_after=0),
    "stream cut after content": _behaviour(kind="stream_cut", cut_after=2),
    "429 with Retry-After": _behaviour(kind="status", status=429, headers={"retry-after": "5"}),
    "garbage body": _behaviour(kind="malformed"),
    "empty choices": _behaviour(kind="empty_choices"),
    "reset mid-body": _behaviour(kind="reset_mid_body"),
    "error event in the stream": _behaviour(kind="stream_error_event", cut_after=0),
    "slow first byte (1.5 s)": _behaviour(kind="slow_first_byte", delay_s=1.5),
}


def _restart(service: str, mode: str | None = None) -> Fault:
    def start(rig: Rig) -> None:
        getattr(rig, service).stop(**({"mode": mode} if mode else {}))

    def heal(rig: Rig) -> None:
        getattr(rig, service).start()

    label = {"redis": "Redis restart", "postgres": "PostgreSQL restart"}[service]
    return Fault(label + (f" ({mode} stop)" if mode else ""), start, heal)


def _reload() -> Fault:
    def start(rig: Rig) -> None:
        rig.reload(changed=True)

    def heal(rig: Rig) -> None:
        rig.reload(changed=False)

    return Fault("SIGHUP reload of a changed providers.yaml, and back", start, heal)


def _bad_reload() -> Fault:
    def start(rig: Rig) -> None:
        rig.config_path.write_text("providers:\n  - name: broken\n    priority: high\n")
        rig.gateway.reload()

    def heal(rig: Rig) -> None:
        rig.reload(changed=False)

    return Fault("SIGHUP reload of an invalid providers.yaml (refused), then of the good one", start, heal)


def _freeze(name: str) -> Fault:
    def start(rig: Rig) -> None:
        rig.upstreams[name].proc.popen.send_signal(signal.SIGSTOP)

    def heal(rig: Rig) -> None:
        rig.upstreams[name].proc.popen.send_signal(signal.SIGCONT)

    return Fault(f"upstream process frozen, SIGSTOP ({name})", start, heal)


def _freeze_service(service: str) -> Fault:
    """Every process of the service stopped: connections hang rather than fail (a network black hole)."""
    def signal_all(rig: Rig, signum: int) -> None:
        for pid in getattr(rig, service).pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    label = {"redis": "Redis", "postgres": "PostgreSQL"}[service]
    return Fault(f"{label} frozen (SIGSTOP)", lambda rig: signal_all(rig, signal.SIGSTOP),
                 lambda rig: signal_all(rig, signal.SIGCONT))


def _storm() -> Fault:
    def start(rig: Rig) -> None:
        rig.load.disconnect_rate = STORM_DISCONNECT_RATE

    def heal(rig: Rig) -> None:
        rig.load.disconnect_rate = rig.base_disconnect_rate

    return Fault(f"client disconnects ({STORM_DISCONNECT_RATE:.0%} of requests leave early)", start, heal)


def catalogue(rng: random.Random) -> list[Fault]:
    """Every fault once, provider faults on providers drawn from ``rng``, in a drawn order."""
    faulty = list(config.FAULTY)
    faults = [provider_fault(name, {rng.choice(faulty): behaviour}) for name, behaviour in PROVIDER_FAULTS.items()]
    pair = rng.sample(faulty, 2)
    faults.append(provider_fault("503s on two at once", {p: _behaviour(kind="status", status=503) for p in pair}))
    a, b, c = rng.sample(faulty, 3)
    faults.append(provider_fault("all three faulty at once", {
        a: PROVIDER_FAULTS["hang past timeout_s"], b: PROVIDER_FAULTS["500s"],
        c: PROVIDER_FAULTS["drop the connection"]}))
    faults += [_freeze(rng.choice(faulty)), _restart("redis"), _freeze_service("redis"), _restart("postgres", "fast"),
               _restart("postgres", "immediate"), _freeze_service("postgres"), _reload(), _bad_reload(), _storm()]
    rng.shuffle(faults)
    return faults


def schedule(duration_s: float, seed: int, only: list[str] | None = None) -> list[Scheduled]:
    """The faults spread over ``duration_s``: one per slot, held for most of it, a quiet start.
    ``only``: the faults whose names contain one of these words (case-insensitive)."""
    faults = catalogue(random.Random(seed))
    if only:
        faults = [f for f in faults if any(word.lower() in f.name.lower() for word in only)]
    if not faults:
        return []
    slot = duration_s / (len(faults) + 1)
    hold = min(slot * 0.6, MAX_HOLD_S)
    return [Scheduled(fault, slot * (i + 0.5), hold) for i, fault in enumerate(faults)]


async def run(rig: Rig, plan: list[Scheduled], t0: float, log: Callable[[str], None]) -> None:
    """Switch each fault on and off at its time (seconds after monotonic ``t0``)."""
    for item in plan:
        await _sleep_until(t0 + item.at_s)
        log(f"  [{time.monotonic() - t0:6.1f} s] fault on: {item.fault.name}")
        try:
            await asyncio.to_thread(item.fault.start, rig)
        except Exception as exc:  # noqa: BLE001 - a fault that could not be made is reported, not fatal
            item.error = f"start: {type(exc).__name__}: {exc}"
        await _sleep_until(t0 + item.at_s + item.hold_s)
        try:
            await asyncio.to_thread(item.fault.heal, rig)
        except Exception as exc:  # noqa: BLE001
            item.error = (item.error or "") + f" heal: {type(exc).__name__}: {exc}"
        log(f"  [{time.monotonic() - t0:6.1f} s] healed: {item.fault.name}"
            + (f" (! {item.error})" if item.error else ""))


async def _sleep_until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - time.monotonic()))
