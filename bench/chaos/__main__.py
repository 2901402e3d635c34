"""python -m bench.chaos: load the gateway at several concurrencies while faults come and go.

Starts its own Redis, PostgreSQL, fake upstreams and gateway (``modelbroker serve``) in a
temp dir, drives load for ``--duration`` seconds in phases of each ``--concurrency``,
switches faults on and off on a schedule drawn from ``--seed``, then stops the gateway
cleanly and holds what it recorded (app.log, the ledger) against what the upstreams saw
and what the clients were told. The report goes to stdout and to
bench/results/chaos-<timestamp>.md; progress to stderr. The exit status is 1 when a goal
is missed (docs/reliability.md, "Chaos run").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
import orjson

from bench import procs
from bench.chaos import faults, load, records, report, services
from bench.chaos.rig import Rig

RESULTS = Path(__file__).resolve().parents[1] / "results"
#: A run this long or longer is split into rounds of every concurrency, so each meets several faults.
ROUND_S = 200.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",") if x.strip()],
                        default=[4, 16, 64], help="concurrencies, a phase each (default 4,16,64)")
    parser.add_argument("--seed", type=int, default=1, help="draws the fault order, targets and request mix")
    parser.add_argument("--disconnect-rate", type=float, default=0.04,
                        help="share of requests whose client leaves early, outside the disconnect storm")
    parser.add_argument("--only", type=lambda v: [x.strip() for x in v.split(",") if x.strip()], default=None,
                        help="only the faults whose names contain one of these words (comma-separated), "
                             "to look into one: --only postgres,redis")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (app.log, gateway.log, providers.yaml, outcomes.jsonl)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for the report")
    args = parser.parse_args(argv)
    if args.duration < 10 or not args.concurrency or min(args.concurrency) < 1:
        parser.error("--duration must be at least 10 s, and every concurrency at least 1")
    return args


def phases(duration_s: float, concurrencies: list[int]) -> list[tuple[int, float]]:
    """(concurrency, seconds) of each phase: every concurrency once per round of about ``ROUND_S``."""
    rounds = max(1, round(duration_s / ROUND_S))
    length = duration_s / (rounds * len(concurrencies))
    return [(c, length) for _ in range(rounds) for c in concurrencies]


async def drive(rig: Rig, plan: list[faults.Scheduled],
                phases_run: list[tuple[int, float]]) -> tuple[list[tuple[float, int]], float, dict[str, float]]:
    """The load and the faults at once. Returns the gateway's RSS along the way (seconds into
    the run, bytes), the CPU other processes used meanwhile (percent of one CPU), and the CPU
    seconds this run's own processes used."""
    t0 = time.monotonic()
    rig.load.started = t0
    samples: list[tuple[float, int]] = []

    async def sample() -> None:
        while rig.gateway.proc.alive():
            samples.append((time.monotonic() - t0, rig.gateway.rss()))
            await asyncio.sleep(1.0)
        log(f"the gateway exited ({rig.gateway.proc.popen.returncode}); the load stops\n"
            f"{rig.gateway.proc.log_tail()}")
        rig.load.stopped = True

    sampler = asyncio.create_task(sample())
    foreign = procs.ForeignLoad()
    foreign.start()
    try:
        await asyncio.gather(load.run_phases(rig.load, phases_run), faults.run(rig, plan, t0, log))
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    samples.append((time.monotonic() - t0, rig.gateway.rss()))
    cpu_s = {"gateway": procs.cpu_seconds(rig.gateway.pid), "load (this process)": time.process_time(),
             "fake upstreams": sum(procs.cpu_seconds(u.proc.pid) for u in rig.upstreams.values())}
    return samples, foreign.stop(), cpu_s


def rss_by_phase(samples: list[tuple[float, int]], phases_run: list[tuple[int, float]]) -> list[tuple[int, int]]:
    """(concurrency, RSS at the end of the phase) for each phase."""
    found, end = [], 0.0
    for concurrency, seconds in phases_run:
        end += seconds
        found.append((concurrency, next((rss for at, rss in reversed(samples) if at <= end), samples[0][1])))
    return found


def gateway_errors(path: Path, limit: int = 12) -> list[str]:
    """Distinct ERROR lines and exception lines of the gateway's own log (stderr)."""
    seen: dict[str, int] = {}
    with contextlib.suppress(OSError), path.open(errors="replace") as lines:
        for line in lines:
            line = line.rstrip()
            if line.startswith(("ERROR", "CRITICAL")) or (line and not line[0].isspace() and "Error:" in line
                                                          and not line.startswith(("INFO", "WARNING"))):
                seen[line[:300]] = seen.get(line[:300], 0) + 1
    return [f"{count} × {text}" for text, count in sorted(seen.items(), key=lambda kv: -kv[1])[:limit]]


def measure(rig: Rig, args: argparse.Namespace, plan: list[faults.Scheduled], command: str) -> report.Run:
    phases_run = phases(args.duration, args.concurrency)
    samples, foreign_pct, cpu_s = asyncio.run(drive(rig, plan, phases_run))
    quiet = [rss for at, rss in samples if at < plan[0].at_s] or [samples[0][1]]
    try:
        metrics = records.read_metrics(rig.gateway.url)  # every request has ended: no attempt is in flight
    except httpx.HTTPError as exc:
        log(f"GET /metrics failed: {type(exc).__name__}: {exc}")
        metrics = (Counter(), 0)
    log(f"load over: {len(rig.load.outcomes):,} requests; stopping the gateway (SIGTERM)")
    with (rig.work / "outcomes.jsonl").open("wb") as out:
        out.writelines(orjson.dumps(outcome) + b"\n" for outcome in rig.load.outcomes)
    shutdown_s = rig.gateway.shutdown()
    return report.Run(
        command=command, duration_s=args.duration, outcomes=rig.load.outcomes, schedule=plan,
        upstream_calls=rig.upstream_calls(), app_log=records.read_app_log(rig.gateway.log_file),
        ledger=records.read_ledger(rig.postgres.url), spilled=records.spilled_lines(rig.work),
        rss_before=quiet[-1], rss_after=samples[-1][1], rss_max=max(rss for _, rss in samples),
        rss_phases=rss_by_phase(samples, phases_run), foreign_pct=foreign_pct, lags=rig.load.lags,
        cpu_s=cpu_s, metrics_attempts=metrics[0], metrics_requests=metrics[1],
        shutdown_s=shutdown_s, exit_code=rig.gateway.exit_code,
        gateway_errors=gateway_errors(rig.gateway.proc.log_path),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lacking = services.missing()
    if lacking:
        log(f"python -m bench.chaos: not installed: {', '.join(lacking)} (apt-get install redis-server postgresql)")
        return 2
    command = shlex.join(["python", "-m", "bench.chaos", *(sys.argv[1:] if argv is None else argv)])
    plan = faults.schedule(args.duration, args.seed, args.only)
    if not plan:
        log(f"python -m bench.chaos: no fault's name contains any of {args.only}")
        return 2
    procs.install_cleanup()
    work = Path(tempfile.mkdtemp(prefix="modelbroker-chaos-"))
    rig = Rig(work, args.seed, args.disconnect_rate)
    try:
        log(f"starting Redis, PostgreSQL, the fake upstreams and the gateway in {work}")
        rig.start()
        log(f"gateway pid {rig.gateway.pid} on {rig.gateway.url}; {args.duration:.0f} s of load, "
            f"{len(plan)} faults")
        run = measure(rig, args, plan, command)
    finally:
        rig.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            rig.remove()
    text = report.render(run)
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"chaos-{datetime.now():%Y%m%d-%H%M%S}.md").write_text(text)
    return 0 if report.all_met(run) else 1


if __name__ == "__main__":
    sys.exit(main())
