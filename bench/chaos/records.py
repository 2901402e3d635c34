"""What the gateway recorded: app.log's lines and the ledger's rows, read after it stopped.

Both are counted by provider and by request id, so the report can hold them against the
upstreams' call counts and against what each client was told.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson


@dataclass
class Records:
    """Counts of one record keeper (app.log or the ledger)."""

    by_provider: Counter = field(default_factory=Counter)  # attempts, by provider id
    by_request: Counter = field(default_factory=Counter)  # attempts, by request id
    outcomes: Counter = field(default_factory=Counter)  # attempts: "ok" or the error kind
    rejected: int = 0  # refused requests (the ledger's attempt-0 rows)
    rejected_by_request: Counter = field(default_factory=Counter)
    unreadable: int = 0  # lines that do not parse
    steps: dict = field(default_factory=dict)  # request id -> its attempts, "provider outcome ms" each
    first_call: dict = field(default_factory=dict)  # request id -> when its first attempt began (epoch s)

    @property
    def attempts(self) -> int:
        return sum(self.by_provider.values())


def read_app_log(path: Path) -> Records:
    found = Records()
    if not path.exists():
        return found
    with path.open("rb") as lines:
        for line in lines:
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                found.unreadable += 1
                continue
            found.by_provider[data.get("provider_id")] += 1
            found.by_request[data.get("request_id")] += 1
            outcome = "ok" if data.get("success") else data.get("error_kind")
            found.outcomes[outcome] += 1
            if data.get("attempt") == 1 and "time" in data:
                ended = datetime.fromisoformat(data["time"]).timestamp()
                found.first_call[data.get("request_id")] = ended - data.get("latency_ms", 0) / 1000
            overhead = f", gateway's own {data['overhead_ms']:.0f} ms" if data.get("overhead_ms") else ""
            found.steps.setdefault(data.get("request_id"), []).append(
                f"{data.get('provider_id')} {outcome} {data.get('latency_ms', 0):.0f} ms{overhead}")
    return found


async def _ledger_rows(url: str) -> list:
    import asyncpg

    connection = await asyncpg.connect(url, timeout=10)
    try:
        return await connection.fetch("SELECT request_id, provider_id, attempt, outcome, error_kind FROM attempts")
    finally:
        await connection.close()


def read_ledger(url: str) -> Records:
    found = Records()
    for row in asyncio.run(_ledger_rows(url)):
        if row["attempt"] == 0:
            found.rejected += 1
            found.rejected_by_request[row["request_id"]] += 1
            continue
        found.by_provider[row["provider_id"]] += 1
        found.by_request[row["request_id"]] += 1
        found.outcomes["ok" if row["outcome"] == "ok" else row["error_kind"]] += 1
    return found


def read_metrics(base_url: str) -> tuple[Counter, int]:
    """Attempts by provider and requests ended, from the gateway's ``GET /metrics``."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    attempts: Counter = Counter()
    requests = 0
    text = httpx.get(f"{base_url}/metrics", timeout=30).raise_for_status().text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelbroker_attempts_total":
                attempts[sample.labels["provider"]] += int(sample.value)
            elif sample.name == "modelbroker_requests_total":
                requests += int(sample.value)
    return attempts, requests


def spilled_lines(work: Path) -> int:
    """Ledger records left in spill files: written nowhere else yet."""
    total = 0
    for spill in work.glob("ledger-spill.jsonl*"):
        with spill.open("rb") as lines:
            total += sum(1 for _ in lines)
    return total
