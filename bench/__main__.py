"""python -m bench: measure the gateway against going direct and a minimal reference proxy.

Scenarios (``--scenarios``, default all):
  json    nginx's fixed chat.completion, concurrency 1, 16, 64
  stream  nginx's fixed SSE stream, concurrency 1, 16, 64 (full response time)
  ttfb    time to first byte of the stream, N sequential requests per endpoint
  delay   an upstream answering after 50 ms, concurrency 256 (ideal 5,120 rps)
For each concurrency the targets run back to back (direct, modelbroker /generate,
modelbroker /v1, reference, litellm), so drift hits them all alike; with ``--repeat``
each run starts the list one endpoint later.

``--soak N`` instead runs N requests (default 100,000) through the gateway and
reports its RSS along the way. The markdown report goes to stdout and to
bench/results/<timestamp>.md; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from bench import load, procs, report, targets, ttfb, upstreams

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
APT_PACKAGES = ["nginx-light", "wrk"]


@dataclass
class Plan:
    duration_s: float
    warmup_s: float
    concurrency: list[int]
    delay_concurrency: int
    delay_s: float
    ttfb_requests: int
    repeat: int
    target_cpu: int | None
    load_cpu: int | None
    targets: list[str]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s cells, 1 s warm-up, 100 TTFB requests")
    parser.add_argument("--scenarios", type=_csv, default=["json", "stream", "ttfb", "delay"],
                        help="comma-separated: json,stream,ttfb,delay (default: all)")
    parser.add_argument("--targets", type=_csv, default=list(targets.ALL_TARGETS),
                        help="comma-separated: direct,modelbroker,reference,litellm (default: all; "
                             "litellm only if bench/.litellm-venv exists)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per cell (default 5, --quick 2)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per endpoint (default 2, --quick 1)")
    parser.add_argument("--concurrency", type=lambda v: [int(x) for x in _csv(v)], default=[1, 16, 64],
                        help="concurrencies for json and stream (default 1,16,64)")
    parser.add_argument("--delay-concurrency", type=int, default=256)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--ttfb-requests", type=int, default=None, help="streamed requests per endpoint (default 500)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every cell N times (interleaved) and report the median run by rps; the "
                             "surfaces' CPU target is judged on the median of the runs' own ratios")
    parser.add_argument("--soak", type=int, nargs="?", const=100_000, default=None, metavar="N",
                        help="memory soak: N requests through the gateway (default 100000), RSS along the way")
    parser.add_argument("--soak-concurrency", type=int, default=16)
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter for modelbroker and the reference (default: this one); a venv with "
                             "only `pip install -e .` shows the RSS a user sees")
    parser.add_argument("--install", action="store_true", help=f"apt-get install -y {' '.join(APT_PACKAGES)} if missing")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for the report (default bench/results)")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - {"json", "stream", "ttfb", "delay"}
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    unknown = set(args.targets) - set(targets.ALL_TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return args


def prerequisites(install: bool) -> list[str]:
    """Problems that stop the run (nginx or wrk missing), after installing them if asked."""
    missing = [name for name, found in (("nginx", upstreams.nginx_binary()), ("wrk", load.wrk_binary())) if not found]
    if missing and install:
        log(f"installing {' '.join(APT_PACKAGES)} with apt-get")
        subprocess.run(["apt-get", "install", "-y", *APT_PACKAGES], check=False, timeout=600)
        missing = [name for name, found in (("nginx", upstreams.nginx_binary()), ("wrk", load.wrk_binary()))
                   if not found]
    if missing:
        return [f"{' and '.join(missing)} not installed. Install with:\n"
                f"    sudo apt-get update && sudo apt-get install -y {' '.join(APT_PACKAGES)}\n"
                f"or run python -m bench --install (as root)."]
    return []


def choose_targets(wanted: list[str], notes: list[str]) -> list[str]:
    chosen = []
    for name in wanted:
        if name == "reference" and importlib.util.find_spec("aiohttp") is None:
            notes.append("reference proxy skipped: aiohttp is not installed (pip install aiohttp)")
            continue
        if name == "litellm" and not targets.litellm_available():
            notes.append("LiteLLM skipped: bench/.litellm-venv not found (docs/performance.md shows how to make it)")
            continue
        chosen.append(name)
    return chosen


# ---------------------------------------------------------------- scenarios

def start_targets(names: list[str], upstream: upstreams.Upstream, stream: bool, tmp: Path, plan: Plan,
                  notes: list[str]) -> list[targets.Target]:
    started = []
    for name in names:
        try:
            started.append(targets.start_target(name, upstream, stream, tmp, plan.target_cpu))
            if started[-1].pid:
                log(f"  {name}: pid {started[-1].pid}, {urlsplit(started[-1].endpoints[0].url).netloc}")
        except RuntimeError as exc:
            notes.append(f"{name} skipped in front of {upstream.name}{' (stream)' if stream else ''}: {exc}")
            log(f"  ! {name} failed to start: {exc}")
    return started


def warm_up(endpoints: list[targets.Endpoint], connections: int, plan: Plan) -> None:
    for ep in endpoints:
        if plan.warmup_s > 0:
            try:
                load.run_wrk(ep.url, ep.body, connections=connections, duration_s=plan.warmup_s,
                             cpu=plan.load_cpu, auth=ep.auth)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                log(f"  ! warm-up of {ep.label} failed: {exc}")
            procs.wait_idle(ep.pid)


def rotated(items: list, by: int) -> list:
    """``items`` starting at position ``by`` (modulo its length): each run of a cell list starts
    one later, so a machine slowing down (or warming up) during a run does not always weigh on
    the same endpoints, the last ones of the list."""
    if not items:
        return items
    by %= len(items)
    return items[by:] + items[:by]


def run_cells(scenario: str, endpoints: list[targets.Endpoint], concurrencies: list[int], plan: Plan,
              notes: list[str], delay_ms: float = 0.0) -> list[report.Row]:
    runs: dict[tuple[int, int], list[report.Row]] = {}
    foreign = procs.ForeignLoad()
    for c, repeat, (index, ep) in ((c, r, e) for c in concurrencies for r in range(plan.repeat)
                                   for e in rotated(list(enumerate(endpoints)), r)):
        foreign.start()
        try:
            cell = load.measure(ep.url, ep.body, pid=ep.pid, connections=c, duration_s=plan.duration_s,
                                cpu=plan.load_cpu, auth=ep.auth)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            notes.append(f"{scenario} c={c} {ep.label}: not measured: {exc}")
            log(f"  ! [{scenario} c={c}] {ep.label} failed: {exc}")
            procs.wait_idle(ep.pid)
            continue
        row = report.Row(scenario, ep.target, ep.name, c, cell.wrk, cell.cpu_us_per_req, cell.rss_bytes,
                         foreign.stop(), delay_ms)
        runs.setdefault((c, index), []).append(row)
        procs.wait_idle(ep.pid)  # a backlog of abandoned requests must not slow the next cell
        cpu = f", {row.cpu_us:,.0f} µs CPU/req" if row.cpu_us else ""
        run = f" (run {repeat + 1}/{plan.repeat})" if plan.repeat > 1 else ""
        log(f"  [{scenario} c={c}]{run} {ep.label}: {cell.wrk.rps:,.0f} rps, p50 {cell.wrk.p50_ms:.2f} ms, "
            f"p99 {cell.wrk.p99_ms:.2f} ms{cpu}" + (f", errors {cell.wrk.errors}" if cell.wrk.errors else "")
            + (f", other load {row.foreign_pct:.0f}%" if row.foreign_pct > report.FOREIGN_WARN_PCT else ""))
    # With --repeat, each cell reports its median run by throughput (all its columns from that run),
    # and keeps every run's CPU for the ratios between cells of the same run (report.paired_ratios).
    medians = []
    for found in runs.values():
        median = sorted(found, key=lambda r: r.wrk.rps)[len(found) // 2]
        if len(found) > 1:
            median = dataclasses.replace(median, run_cpu_us=[r.cpu_us for r in found])
        medians.append(median)
    return medians


def run_ttfb(endpoints: list[targets.Endpoint], plan: Plan) -> list[report.TtfbRow]:
    log(f"  [ttfb] {plan.ttfb_requests} sequential streamed requests per endpoint, interleaved")
    results = ttfb.run([(ep.label, ep.url, ep.body, ep.auth) for ep in endpoints], plan.ttfb_requests)
    rows = [report.TtfbRow(ep.target, ep.name, r.count, r.errors, r.ttfb(0.5), r.ttfb(0.99), r.total(0.5),
                           r.total(0.99)) for ep, r in zip(endpoints, results)]
    direct = next((r for r in rows if r.target == "direct"), None)
    for row in rows:
        if direct is not None and row is not direct:
            row.delta_p50 = row.ttfb_p50 - direct.ttfb_p50
        log(f"  [ttfb] {row.target} {row.endpoint}: TTFB p50 {row.ttfb_p50:.3f} ms, p99 {row.ttfb_p99:.3f} ms")
    return rows


def run_group(kind: str, scenarios: list[str], plan: Plan, tmp: Path, notes: list[str]):
    """One upstream and its targets, then the scenarios that use them; always stopped after."""
    rows: list[report.Row] = []
    ttfb_rows: list[report.TtfbRow] = []
    stream = kind == "stream"
    work = tmp / kind
    work.mkdir()
    if kind == "delay":
        upstream = upstreams.start_delayed(work, plan.load_cpu, plan.delay_s)
    else:
        upstream = upstreams.start_nginx(work, plan.load_cpu)
    started: list[targets.Target] = []
    try:
        log(f"== {kind}: upstream {upstream.name} on {upstream.url(stream)}")
        started = start_targets(plan.targets, upstream, stream, work, plan, notes)
        endpoints = [ep for t in started for ep in t.endpoints]
        if kind == "delay":
            warm_up(endpoints, plan.delay_concurrency, plan)
            rows = run_cells("delay", endpoints, [plan.delay_concurrency], plan, notes, plan.delay_s * 1000)
        else:
            if kind in scenarios:
                warm_up(endpoints, max(plan.concurrency), plan)
                rows = run_cells(kind, endpoints, plan.concurrency, plan, notes)
            if stream and "ttfb" in scenarios:
                ttfb_rows = run_ttfb(endpoints, plan)
    finally:
        for target in started:
            target.stop()
        upstream.stop()
    return rows, ttfb_rows


# ---------------------------------------------------------------- soak

def run_soak(total: int, concurrency: int, plan: Plan, tmp: Path) -> dict:
    upstream = upstreams.start_delayed(tmp, plan.load_cpu, 0.0)
    gateway = None
    try:
        gateway = targets.start_target("modelbroker", upstream, False, tmp, plan.target_cpu)
        base = gateway.endpoints[0].url.rsplit("/", 1)[0]
        mix = [("/generate", targets.generate_body(False)), ("/v1/chat/completions", targets.chat_body(False)),
               ("/generate", targets.generate_body(True)), ("/v1/chat/completions", targets.chat_body(True))]
        spec = "\n".join(f"{path}|{body}" for path, body in mix)
        segments = 10
        per_segment = max(1, total // segments)
        samples = [(0, procs.rss_bytes(gateway.pid))]
        seg_stats = []
        done = 0
        log(f"== soak: {total:,} requests through modelbroker, c={concurrency}, RSS every {per_segment:,}")
        for _ in range(segments):
            cap = max(60.0, per_segment / 50)  # bounded even if the gateway is very slow
            result = load.run_wrk_count(base + "/", connections=concurrency, limit=per_segment, max_s=cap,
                                        cpu=plan.load_cpu, env={"BENCH_SOAK": spec})
            done += result.requests
            samples.append((done, procs.rss_bytes(gateway.pid)))
            seg_stats.append((result.rps, result.error_count))
            log(f"  {done:,} requests: RSS {samples[-1][1] / report.MIB:.1f} MiB ({result.rps:,.0f} rps"
                + (f", errors {result.errors}" if result.errors else "") + ")")
        return {"samples": samples, "segments": seg_stats, "concurrency": concurrency,
                "upstream": "bench/delay_upstream.py with no delay",
                "endpoint_mix": "/generate, /v1/chat/completions, each plain and streamed, in turn"}
    finally:
        if gateway is not None:
            gateway.stop()
        upstream.stop()


# ---------------------------------------------------------------- main

def make_plan(args: argparse.Namespace, chosen: list[str]) -> Plan:
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    return Plan(
        duration_s=args.duration or (2.0 if args.quick else 5.0),
        warmup_s=args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0),
        concurrency=args.concurrency,
        delay_concurrency=args.delay_concurrency,
        delay_s=args.delay_ms / 1000,
        ttfb_requests=args.ttfb_requests or (100 if args.quick else 500),
        repeat=max(1, args.repeat),
        target_cpu=0 if pin else None,
        load_cpu=1 if pin else None,
        targets=chosen,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    targets.TARGET_PYTHON = args.python
    problems = prerequisites(args.install)
    if problems:
        for problem in problems:
            print(f"python -m bench: {problem}", file=sys.stderr)
        return 2
    procs.install_cleanup()
    notes: list[str] = []
    chosen = choose_targets(["modelbroker"] if args.soak else args.targets, notes)
    plan = make_plan(args, chosen)
    if plan.load_cpu is not None:
        os.sched_setaffinity(0, {plan.load_cpu})  # this process runs the TTFB client
    idle = procs.ForeignLoad()
    idle.start()
    time.sleep(1.0)
    foreign_idle = idle.stop()
    if foreign_idle > report.FOREIGN_WARN_PCT:
        log(f"warning: other processes use {foreign_idle:.0f}% of a CPU right now; results will be noisy")
    started_at = datetime.now()
    tmp = Path(tempfile.mkdtemp(prefix="modelbroker-bench-"))
    rows: list[report.Row] = []
    ttfb_rows: list[report.TtfbRow] = []
    soak = None
    try:
        if args.soak:
            soak = run_soak(args.soak, args.soak_concurrency, plan, tmp)
        else:
            for kind, needs in (("json", {"json"}), ("stream", {"stream", "ttfb"}), ("delay", {"delay"})):
                if needs & set(args.scenarios):
                    got, got_ttfb = run_group(kind, args.scenarios, plan, tmp, notes)
                    rows += got
                    ttfb_rows += got_ttfb
    finally:
        procs.cleanup_all()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = (datetime.now() - started_at).total_seconds()
    text = render(args, plan, rows, ttfb_rows, soak, notes, foreign_idle, started_at, elapsed)
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    suffix = "-soak" if args.soak else ("-quick" if args.quick else "")
    path = args.output / f"{started_at:%Y%m%d-%H%M%S}{suffix}.md"
    path.write_text(text, encoding="utf-8")
    log(f"report written to {path}")
    return 0


def render(args, plan: Plan, rows, ttfb_rows, soak, notes, foreign_idle, started_at, elapsed) -> str:
    litellm = None
    if "litellm" in plan.targets:
        out = subprocess.run([str(targets.LITELLM_VENV / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True, timeout=30)
        litellm = out.stdout.strip() or "?"
    mode = "soak" if soak else ("quick" if args.quick else "full")
    lines = [f"# modelbroker benchmark, {started_at:%Y-%m-%d %H:%M} ({mode} run, {elapsed:.0f} s)", "",
             *report.machine(REPO, upstreams.nginx_version(), load.wrk_version(), litellm,
                             plan.target_cpu is not None, args.python), ""]
    if not soak:
        repeats = f", each run {plan.repeat} times (the median run by rps is shown)" if plan.repeat > 1 else ""
        lines.append(f"Cells of {plan.duration_s:g} s{repeats} after a {plan.warmup_s:g} s warm-up per endpoint; "
                     "wrk with 1 thread. overhead p50 = p50 minus direct's p50 in the same scenario and concurrency.")
        lines.append("")
    if rows:
        report.fill_overheads(rows)
        lines += report.results_table(rows) + [""]
    if ttfb_rows:
        lines += [f"Streaming time to first byte ({plan.ttfb_requests} sequential requests per endpoint "
                  "through nginx's SSE answer):", ""] + report.ttfb_table(ttfb_rows) + [""]
    if soak:
        lines += report.soak_table(soak) + [""]
    ideal = plan.delay_concurrency / plan.delay_s if plan.delay_s else float("inf")
    high_c = max(plan.concurrency)
    verdicts = report.soak_verdict(soak) if soak else \
        report.target_lines(rows, ttfb_rows, ideal, high_c, plan.delay_concurrency)
    lines += ["Targets:", ""] + verdicts
    extra = report.noise_lines(rows, foreign_idle) + [f"- {n}" for n in notes]
    if extra:
        lines += ["", "Notes:", ""] + extra
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
