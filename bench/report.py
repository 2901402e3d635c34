"""The markdown report: machine, results table, TTFB table, the issue's targets with PASS/FAIL."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench.load import WrkResult

MIB = 1024 * 1024
# The targets.
TARGET_RPS_VS_REFERENCE = 0.75
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 3.0
TARGET_IDEAL_FRACTION = 0.90
TARGET_TTFB_DELTA_MS = 2.0
TARGET_RSS_MIB = 80.0
TARGET_TIMES_LITELLM = 20.0  # its throughput at high concurrency, and 1/x of its added latency at c=1
#: The translated surfaces' CPU per request, at most this times /v1/chat/completions' in the same run.
TARGET_SURFACE_CPU_RATIO = 1.15
SOAK_GROWTH_TOLERANCE_MIB = 1.0
FOREIGN_WARN_PCT = 10.0


@dataclass
class Row:
    scenario: str          # json, stream, delay
    target: str
    endpoint: str
    concurrency: int
    wrk: WrkResult
    cpu_us: float | None
    rss_bytes: int | None
    foreign_pct: float
    delay_ms: float = 0.0
    overhead_ms: float | None = None
    #: With ``--repeat``: the CPU µs per request of each of the cell's runs, in the order run
    #: (run i of every cell of one concurrency ran back to back, within a minute).
    run_cpu_us: list[float | None] | None = None

    @property
    def streaming(self) -> bool:
        return self.scenario == "stream"


@dataclass
class TtfbRow:
    target: str
    endpoint: str
    count: int
    errors: int
    ttfb_p50: float
    ttfb_p99: float
    total_p50: float
    total_p99: float
    delta_p50: float | None = None


# ---------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _git_revision(repo: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return f"{rev}{' (with uncommitted changes)' if dirty else ''}" if rev else "?"


def machine(repo: Path, nginx: str, wrk: str, litellm: str | None, pinned: bool, python: str) -> list[str]:
    packages = ", ".join(f"{p} {_version(p)}" for p in (
        "uvicorn", "fastapi", "starlette", "httpx", "pydantic", "uvloop", "httptools", "orjson", "aiohttp"))
    lines = [
        f"- CPU: {_cpu_model()}, {os.cpu_count()} cores; kernel {platform.release()}",
        f"- Python {platform.python_version()}; {packages}",
        f"- nginx {nginx}; wrk {wrk}" + (f"; LiteLLM {litellm}" if litellm else ""),
        f"- modelbroker {_version('modelbroker')} at git {_git_revision(repo)}; targets run by {python}",
        "- pinning: targets on CPU 0; wrk, upstreams and the TTFB client on CPU 1" if pinned
        else "- pinning: off",
    ]
    return lines


# ---------------------------------------------------------------- tables

def _f(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def fill_overheads(rows: list[Row]) -> None:
    """overhead p50 = the row's p50 minus direct's p50 in the same scenario and concurrency."""
    direct = {(r.scenario, r.concurrency): r for r in rows if r.target == "direct"}
    for row in rows:
        base = direct.get((row.scenario, row.concurrency))
        if base is not None and row.target != "direct" and row.wrk.requests:
            row.overhead_ms = row.wrk.p50_ms - base.wrk.p50_ms


def results_table(rows: list[Row]) -> list[str]:
    out = ["| target | endpoint | concurrency | rps | p50 ms | p99 ms | overhead p50 ms | CPU µs/req | RSS MiB |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        endpoint = r.endpoint + (" (stream)" if r.streaming else "")
        conc = f"{r.concurrency}" + (f" @{r.delay_ms:.0f} ms" if r.delay_ms else "")
        rps = _f(r.wrk.rps, 0) + (" ⚠" if r.wrk.error_count or not r.wrk.requests else "")
        p50, p99 = (r.wrk.p50_ms, r.wrk.p99_ms) if r.wrk.requests else (None, None)
        out.append(f"| {r.target} | {endpoint} | {conc} | {rps} | {_f(p50)} | {_f(p99)} | "
                   f"{_f(r.overhead_ms)} | {_f(r.cpu_us, 0)} | "
                   f"{_f(r.rss_bytes / MIB if r.rss_bytes else None, 1)} |")
    return out


def ttfb_table(rows: list[TtfbRow]) -> list[str]:
    out = ["| target | endpoint (stream) | requests | TTFB p50 ms | TTFB p99 ms | total p50 ms | total p99 ms "
           "| TTFB delta p50 ms |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        count = f"{r.count}" + (f" ({r.errors} errors)" if r.errors else "")
        out.append(f"| {r.target} | {r.endpoint} | {count} | {_f(r.ttfb_p50, 3)} | {_f(r.ttfb_p99, 3)} | "
                   f"{_f(r.total_p50, 3)} | {_f(r.total_p99, 3)} | {_f(r.delta_p50, 3)} |")
    return out


# ---------------------------------------------------------------- targets

def _surfaces_against_chat(rows: list[Row], high_c: int) -> list[str]:
    """CPU per request of /v1/messages and /v1/responses against /v1/chat/completions, cell by cell.

    With ``--repeat`` the verdict is on the median of the runs' own ratios: each divides two
    cells measured back to back, so the machine's drift between runs (a cell here moved by
    up to a quarter from one run to the next) cancels out, as "in the same run" means. The
    ratio of the two median cells, which may come from different runs, is shown beside it."""
    lines = []
    for scenario in ("json", "stream"):
        chat = _find(rows, scenario, "modelbroker", high_c, "/v1/chat/completions")
        for ep in TRANSLATED_ENDPOINTS:
            mb = _find(rows, scenario, "modelbroker", high_c, ep)
            if chat is None or mb is None or not chat.cpu_us or not mb.cpu_us:
                continue
            cells = mb.cpu_us / chat.cpu_us
            paired = paired_ratios(mb, chat)
            ratio = statistics.median(paired) if paired else cells
            detail = f"{mb.cpu_us:,.0f} / {chat.cpu_us:,.0f} µs = {cells:.0%}"
            if paired:
                detail = (f"median of the {len(paired)} runs' ratios {ratio:.0%} (each: "
                          f"{', '.join(f'{r:.0%}' for r in paired)}); the median cells {detail}")
            lines.append(f"- {_verdict(ratio <= TARGET_SURFACE_CPU_RATIO)} CPU per request at c={high_c} ({scenario}), "
                         f"modelbroker {ep} vs /v1/chat/completions: {detail} "
                         f"(target <= {TARGET_SURFACE_CPU_RATIO:.0%})")
    return lines


def paired_ratios(row: Row, base: Row) -> list[float]:
    """``row``'s CPU per request over ``base``'s, run by run (empty unless both were repeated alike)."""
    if not row.run_cpu_us or not base.run_cpu_us or len(row.run_cpu_us) != len(base.run_cpu_us) \
            or len(row.run_cpu_us) < 2:
        return []
    return [a / b for a, b in zip(row.run_cpu_us, base.run_cpu_us) if a and b]


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _find(rows: list[Row], scenario: str, target: str, concurrency: int, endpoint: str | None = None) -> Row | None:
    for r in rows:
        if (r.scenario, r.target, r.concurrency) == (scenario, target, concurrency) and \
                (endpoint is None or r.endpoint == endpoint):
            return r
    return None


MB_ENDPOINTS = ("/generate", "/v1/chat/completions")
#: The surfaces that answer another API over the same chat upstream, held to chat's CPU cost.
TRANSLATED_ENDPOINTS = ("/v1/messages", "/v1/responses", "/v1/responses store:false")


def target_lines(rows: list[Row], ttfb: list[TtfbRow], ideal_rps: float,
                 high_c: int, delay_c: int) -> list[str]:
    lines = []
    ref = _find(rows, "json", "reference", high_c)
    for ep in MB_ENDPOINTS:
        mb = _find(rows, "json", "modelbroker", high_c, ep)
        if mb and ref and ref.wrk.rps:
            ratio = mb.wrk.rps / ref.wrk.rps
            lines.append(f"- {_verdict(ratio >= TARGET_RPS_VS_REFERENCE)} throughput at c={high_c}, modelbroker "
                         f"{ep} vs reference proxy: {mb.wrk.rps:,.0f} / {ref.wrk.rps:,.0f} rps = {ratio:.0%} "
                         f"(target >= {TARGET_RPS_VS_REFERENCE:.0%})")
        else:
            lines.append(f"- n/a throughput at c={high_c}, modelbroker {ep} vs reference (not measured)")
    direct = _find(rows, "json", "direct", 1)
    for ep in MB_ENDPOINTS:
        mb = _find(rows, "json", "modelbroker", 1, ep)
        if mb and direct:
            d50, d99 = mb.wrk.p50_ms - direct.wrk.p50_ms, mb.wrk.p99_ms - direct.wrk.p99_ms
            ok = d50 <= TARGET_ADDED_P50_MS and d99 <= TARGET_ADDED_P99_MS
            lines.append(f"- {_verdict(ok)} added latency at c=1, modelbroker {ep}: p50 +{d50:.2f} ms, "
                         f"p99 +{d99:.2f} ms (target <= {TARGET_ADDED_P50_MS:g} ms / {TARGET_ADDED_P99_MS:g} ms)")
        else:
            lines.append(f"- n/a added latency at c=1, modelbroker {ep} (not measured)")
    ref1 = _find(rows, "json", "reference", 1)
    if ref1 and direct:
        lines.append(f"- info added latency at c=1, reference proxy: p50 +{ref1.wrk.p50_ms - direct.wrk.p50_ms:.2f} ms, "
                     f"p99 +{ref1.wrk.p99_ms - direct.wrk.p99_ms:.2f} ms")
    lines += _against_litellm(rows, high_c)
    lines += _surfaces_against_chat(rows, high_c)
    delay_rows = [r for r in rows if r.scenario == "delay" and r.concurrency == delay_c]
    for r in delay_rows:
        frac = r.wrk.rps / ideal_rps
        verdict = _verdict(frac >= TARGET_IDEAL_FRACTION) if r.target == "modelbroker" else "info"
        lines.append(f"- {verdict} {r.target} {r.endpoint} at c={delay_c} on the {r.delay_ms:.0f} ms upstream: "
                     f"{r.wrk.rps:,.0f} rps = {frac:.1%} of ideal {ideal_rps:,.0f}"
                     + (f" (target >= {TARGET_IDEAL_FRACTION:.0%})" if r.target == "modelbroker" else ""))
    if not delay_rows:
        lines.append(f"- n/a % of ideal at c={delay_c} on the delayed upstream (not measured)")
    for t in ttfb:
        if t.target == "direct" or t.delta_p50 is None:
            continue
        ok = t.delta_p50 <= TARGET_TTFB_DELTA_MS if t.target == "modelbroker" else None
        lines.append(f"- {_verdict(ok) if ok is not None else 'info'} streaming TTFB, {t.target} {t.endpoint}: "
                     f"p50 {t.ttfb_p50:.3f} ms, +{t.delta_p50:.3f} ms over direct"
                     + (f" (target <= {TARGET_TTFB_DELTA_MS:g} ms)" if t.target == "modelbroker" else ""))
    if not ttfb:
        lines.append("- n/a streaming TTFB (not measured)")
    mb_rss = [r.rss_bytes for r in rows if r.target == "modelbroker" and r.rss_bytes]
    if mb_rss:
        peak = max(mb_rss) / MIB
        lines.append(f"- {_verdict(peak <= TARGET_RSS_MIB)} modelbroker RSS, highest after any cell: "
                     f"{peak:.1f} MiB (target <= {TARGET_RSS_MIB:g} MiB)")
    return lines


def _against_litellm(rows: list[Row], high_c: int) -> list[str]:
    """Throughput at ``high_c`` and added latency at c=1 against LiteLLM's proxy, when it ran."""
    lines = []
    litellm, direct = _find(rows, "json", "litellm", high_c), _find(rows, "json", "direct", 1)
    litellm1 = _find(rows, "json", "litellm", 1)
    for ep in MB_ENDPOINTS:
        mb = _find(rows, "json", "modelbroker", high_c, ep)
        if mb and litellm and litellm.wrk.rps:
            times = mb.wrk.rps / litellm.wrk.rps
            lines.append(f"- {_verdict(times >= TARGET_TIMES_LITELLM)} throughput at c={high_c}, modelbroker {ep} "
                         f"vs LiteLLM: {mb.wrk.rps:,.0f} / {litellm.wrk.rps:,.0f} rps = {times:.1f}x "
                         f"(target >= {TARGET_TIMES_LITELLM:g}x)")
        mb1 = _find(rows, "json", "modelbroker", 1, ep)
        if mb1 and litellm1 and direct:
            ours, theirs = mb1.wrk.p50_ms - direct.wrk.p50_ms, litellm1.wrk.p50_ms - direct.wrk.p50_ms
            if ours > 0 and theirs > 0:
                lines.append(f"- {_verdict(theirs / ours >= TARGET_TIMES_LITELLM)} added latency p50 at c=1, "
                             f"modelbroker {ep} vs LiteLLM: {ours:.2f} / {theirs:.2f} ms = 1/{theirs / ours:.1f} "
                             f"(target <= 1/{TARGET_TIMES_LITELLM:g})")
    return lines


def soak_verdict(soak: dict) -> list[str]:
    samples = soak["samples"]  # [(requests, rss_bytes)]
    total = samples[-1][0]
    half = min(samples, key=lambda s: abs(s[0] - total / 2))
    end = samples[-1][1] / MIB
    growth = (samples[-1][1] - half[1]) / MIB
    return [
        f"- {_verdict(end <= TARGET_RSS_MIB)} soak RSS after {total:,} requests: {end:.1f} MiB "
        f"(target <= {TARGET_RSS_MIB:g} MiB)",
        f"- {_verdict(growth <= SOAK_GROWTH_TOLERANCE_MIB)} soak RSS growth from {half[0]:,} to {total:,} "
        f"requests: {growth:+.1f} MiB (target: none; tolerance {SOAK_GROWTH_TOLERANCE_MIB:g} MiB)",
    ]


def soak_table(soak: dict) -> list[str]:
    out = [f"Memory soak: {soak['endpoint_mix']}, c={soak['concurrency']}, {soak['upstream']}.", "",
           "| requests | RSS MiB | rps in segment | errors |", "|---:|---:|---:|---:|"]
    for (count, rss), (rps, errors) in zip(soak["samples"], [(None, 0), *soak["segments"]]):
        out.append(f"| {count:,} | {rss / MIB:.1f} | {_f(rps, 0)} | {errors} |")
    return out


def noise_lines(rows: list[Row], foreign_idle: float | None) -> list[str]:
    lines = []
    if foreign_idle is not None and foreign_idle > FOREIGN_WARN_PCT:
        lines.append(f"- ⚠ before the run, other processes used {foreign_idle:.0f}% of a CPU: the machine was "
                     "not idle")
    noisy = [r for r in rows if r.foreign_pct > FOREIGN_WARN_PCT]
    if noisy:
        worst = max(noisy, key=lambda r: r.foreign_pct)
        lines.append(f"- ⚠ other processes used > {FOREIGN_WARN_PCT:.0f}% of a CPU during {len(noisy)} of "
                     f"{len(rows)} cells (worst {worst.foreign_pct:.0f}%, {worst.target} {worst.endpoint} "
                     f"c={worst.concurrency}): those numbers are noisy")
    for r in rows:
        if not r.wrk.requests:
            lines.append(f"- ⚠ {r.target} {r.endpoint} c={r.concurrency}: no request completed within the cell")
        elif r.wrk.error_count:
            lines.append(f"- ⚠ {r.target} {r.endpoint} c={r.concurrency}: wrk errors {r.wrk.errors}")
    return lines
