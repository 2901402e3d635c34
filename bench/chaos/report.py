"""The chaos run's report: the load table, the records table, the goals, and what broke.

The goals, each checked by ``goals``:

* no 5xx, and no request left without an answer, while a healthy provider was configured
  (it always is);
* nothing lost: the ledger has a row for every attempt app.log has a line for, request by
  request, and no record is left in a spill file;
* every attempt recorded: app.log's lines equal the upstreams' calls, provider by
  provider (an attempt is one upstream call);
* /metrics counts the attempts and requests app.log has;
* the gateway stops by itself on SIGTERM.
"""

from __future__ import annotations

import math
import os
import platform
import signal
from collections import Counter
from dataclasses import dataclass, field

from bench.chaos import config
from bench.chaos.faults import Scheduled
from bench.chaos.load import Outcome
from bench.chaos.records import Records

MIB = 1024 * 1024


@dataclass
class Run:
    """Everything the report reads."""

    command: str
    duration_s: float
    outcomes: list[Outcome]
    schedule: list[Scheduled]
    upstream_calls: dict[str, int]  # by model
    app_log: Records
    ledger: Records
    spilled: int
    rss_before: int
    rss_after: int
    rss_max: int
    shutdown_s: float
    exit_code: int | None
    lags: list[float] = field(default_factory=list)  # the load's event loop, seconds late
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds used, by process
    metrics_attempts: Counter = field(default_factory=Counter)  # /metrics' attempts, by provider
    metrics_requests: int = 0  # /metrics' requests ended
    rss_phases: list[tuple[int, int]] = field(default_factory=list)  # (concurrency, RSS at the phase's end)
    foreign_pct: float = 0.0  # CPU other processes used during the load, percent of one CPU
    gateway_errors: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank, as /usage computes it."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _failed(o: Outcome) -> bool:
    return (o.status is not None and o.status >= 500) or (o.status is None and not o.disconnected)


def load_rows(run: Run) -> list[list[str]]:
    groups: dict[str, list[Outcome]] = {}
    for outcome in run.outcomes:
        groups.setdefault(str(outcome.concurrency), []).append(outcome)
    groups["all"] = run.outcomes
    rows = []
    for label, group in groups.items():
        latencies = [o.latency_s * 1000 for o in group if not o.disconnected and o.status is not None]
        rows.append([
            label, f"{len(group):,}", f"{sum(o.ok for o in group):,}",
            f"{sum(1 for o in group if o.status is not None and o.status >= 500):,}",
            f"{sum(1 for o in group if o.status is None and not o.disconnected):,}",
            f"{sum(1 for o in group if o.status is not None and 400 <= o.status < 500):,}",
            f"{sum(o.disconnected for o in group):,}", f"{sum(o.cut for o in group):,}",
            f"{percentile(latencies, 0.5):,.0f}", f"{percentile(latencies, 0.99):,.0f}",
        ])
    return rows


def record_rows(run: Run) -> list[list[str]]:
    names = sorted({*run.app_log.by_provider, *run.ledger.by_provider,
                    *(m.removeprefix("chaos-") for m in run.upstream_calls)}, key=str)
    rows = []
    for name in names:
        calls = run.upstream_calls.get(config.model_of(name), 0)
        rows.append([str(name), f"{calls:,}", f"{run.app_log.by_provider[name]:,}", f"{run.ledger.by_provider[name]:,}",
                     f"{run.metrics_attempts[name]:,}"])
    rows.append(["total", f"{sum(run.upstream_calls.values()):,}", f"{run.app_log.attempts:,}",
                 f"{run.ledger.attempts:,}", f"{sum(run.metrics_attempts.values()):,}"])
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def mismatches(run: Run) -> dict[str, list[str]]:
    """Request ids whose records disagree, by what disagrees."""
    app, ledger = run.app_log.by_request, run.ledger.by_request
    found: dict[str, list[str]] = {
        "app.log lines differ from ledger rows": sorted(r for r in {*app, *ledger} if app[r] != ledger[r]),
        "answered, but no ledger row at all": sorted(
            o.request_id for o in run.outcomes if o.status is not None and not ledger[o.request_id]
            and not run.ledger.rejected_by_request[o.request_id]),
        "x-modelbroker-attempts differs from ledger rows": sorted(
            o.request_id for o in run.outcomes if o.status == 200 and o.attempts is not None
            and ledger[o.request_id] != o.attempts),
    }
    return found


def goals(run: Run) -> list[tuple[str, bool, str]]:
    fivexx = sum(1 for o in run.outcomes if o.status is not None and o.status >= 500)
    no_answer = sum(1 for o in run.outcomes if o.status is None and not o.disconnected)
    calls = {name: run.upstream_calls.get(config.model_of(name), 0) for name in run.app_log.by_provider}
    uncalled = {m: n for m, n in run.upstream_calls.items() if m.removeprefix("chaos-") not in calls and n}
    per_provider = {str(name): (calls[name], run.app_log.by_provider[name]) for name in calls
                    if calls[name] != run.app_log.by_provider[name]}
    differ = mismatches(run)
    metrics_attempts = Counter({p: n for p, n in run.metrics_attempts.items() if n})
    lost = len(differ["app.log lines differ from ledger rows"]) + len(differ["answered, but no ledger row at all"])
    return [
        ("5xx while a healthy provider existed", fivexx == 0, f"{fivexx}"),
        ("requests left without an answer", no_answer == 0, f"{no_answer}"),
        ("ledger rows = app.log lines, request by request", lost == 0 and run.spilled == 0
         and run.ledger.attempts == run.app_log.attempts,
         f"{run.ledger.attempts:,} rows, {run.app_log.attempts:,} lines, {lost} requests differ, "
         f"{run.spilled} records left spilled"),
        ("app.log lines = upstream calls, by provider", not per_provider and not uncalled,
         ", ".join(f"{p}: {c} calls, {n} lines" for p, (c, n) in per_provider.items()) or "equal"),
        ("/metrics counts every attempt and request", metrics_attempts == run.app_log.by_provider
         and run.metrics_requests == len(run.app_log.by_request),
         f"{sum(metrics_attempts.values()):,} attempts, {run.metrics_requests:,} requests "
         f"(app.log: {run.app_log.attempts:,} attempts of {len(run.app_log.by_request):,} requests)"),
        # uvicorn re-raises SIGTERM once it has shut down: -15 is a clean exit too
        ("clean shutdown", run.exit_code in (0, -signal.SIGTERM), f"exit code {run.exit_code}, {run.shutdown_s:.1f} s"),
    ]


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    return (f"{os.cpu_count()} CPUs ({model or platform.machine()}), {memory:.0f} GiB, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


def errors_seen(run: Run, limit: int = 12) -> list[str]:
    """The distinct failures clients saw (5xx, no answer), most frequent first, with examples:
    request id, seconds into the run, and the attempts app.log has for it."""
    seen: dict[str, list[Outcome]] = {}
    for outcome in run.outcomes:
        if _failed(outcome):
            seen.setdefault(f"{outcome.kind}: {outcome.error or outcome.status}", []).append(outcome)
    ordered = sorted(seen.items(), key=lambda kv: -len(kv[1]))[:limit]
    return [f"{len(found)} × {text} (e.g. {_example(run, found[0])})" for text, found in ordered]


def _example(run: Run, outcome: Outcome) -> str:
    steps = "; ".join(run.app_log.steps.get(outcome.request_id, [])) or "no line in app.log"
    first = run.app_log.first_call.get(outcome.request_id)
    before = f", first attempt {(first - outcome.sent_at) * 1000:.0f} ms after sending" if first else ""
    return f"{outcome.request_id} at {outcome.started_s:.1f} s, {outcome.latency_s * 1000:.0f} ms{before}: {steps}"


def slowest(run: Run, count: int = 5) -> list[str]:
    answered = [o for o in run.outcomes if o.status is not None and not o.disconnected]
    return [f"{o.kind}, {o.status}: {_example(run, o)}"
            for o in sorted(answered, key=lambda o: -o.latency_s)[:count]]


def render(run: Run) -> str:
    """The whole report, in markdown."""
    out = [f"## Chaos run: {run.duration_s:.0f} s of load", "", f"Command: `{run.command}`", "",
           f"Machine: {machine()}", "",
           table(["concurrency", "requests", "successes", "5xx", "no answer", "4xx", "left on purpose",
                  "cut streams", "p50 ms", "p99 ms"], load_rows(run)), "",
           table(["provider", "upstream calls", "app.log lines", "ledger rows", "/metrics attempts"],
                 record_rows(run)), "",
           f"Ledger rows of refused requests (attempt 0): {run.ledger.rejected:,}; attempts by how they ended: "
           + ", ".join(f"{k} {v:,}" for k, v in run.ledger.outcomes.most_common()), "",
           f"Gateway RSS: {run.rss_before / MIB:.1f} MiB before the first fault, "
           f"{run.rss_after / MIB:.1f} MiB after the load (peak {run.rss_max / MIB:.1f} MiB); "
           "at the end of each phase: "
           + ", ".join(f"c={c} {rss / MIB:.0f}" for c, rss in run.rss_phases) + " MiB", "",
           f"Other processes on the machine used {run.foreign_pct:.0f} % of a CPU during the load; the load's "
           f"own event loop woke late by {percentile(run.lags, 0.99) * 1000:.0f} ms at p99, "
           f"{max(run.lags, default=0) * 1000:.0f} ms at worst. CPU used: "
           + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in run.cpu_s.items()) + ".", "",
           "Goals:", ""]
    out += [f"- {'ok  ' if met else 'MISS'} {name}: {detail}" for name, met, detail in goals(run)]
    failures = errors_seen(run)
    if failures:
        out += ["", "What the failed requests got:", "", *[f"- {line}" for line in failures]]
    out += ["", "Slowest answers:", "", *[f"- {line}" for line in slowest(run)]]
    for what, ids in mismatches(run).items():
        if ids:
            out += ["", f"{what}: {len(ids)} (first: {', '.join(ids[:8])})"]
    if run.gateway_errors:
        out += ["", "Gateway log, errors and tracebacks:", "", *[f"- {line}" for line in run.gateway_errors]]
    out += ["", "Faults (seconds into the run, held for):", ""]
    out += [f"- {s.at_s:6.1f} s, {s.hold_s:.1f} s: {s.fault.name}" + (f" (! {s.error})" if s.error else "")
            for s in run.schedule]
    return "\n".join(out) + "\n"


def all_met(run: Run) -> bool:
    return all(met for _, met, _ in goals(run))
