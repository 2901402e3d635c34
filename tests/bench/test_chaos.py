"""python -m bench.chaos: its goals catch what they should, and a short run meets them.

The short run starts Redis, PostgreSQL, four fake upstreams and a gateway, and takes about
35 s: it runs only with ``MODELBROKER_TEST_CHAOS=1`` (and redis-server, initdb and pg_ctl
installed).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not installed: it runs from the checkout
    sys.path.insert(0, str(REPO_ROOT))

from bench.chaos import faults, report  # noqa: E402
from bench.chaos.load import Outcome  # noqa: E402
from bench.chaos.records import Records  # noqa: E402

RUN_CHAOS = os.environ.get("MODELBROKER_TEST_CHAOS") == "1"  # read at import: conftest clears MODELBROKER_*


def records(per_request: dict[str, str]) -> Records:
    """Records with one attempt for each request id, at the provider given."""
    return Records(by_provider=Counter(per_request.values()), by_request=Counter(per_request))


def a_run(outcomes: list[Outcome], app_log: Records, ledger: Records, calls: dict[str, int]) -> report.Run:
    """A run whose /metrics agree with its app.log."""
    return report.Run(command="python -m bench.chaos", duration_s=10, outcomes=outcomes, schedule=[],
                      upstream_calls=calls, app_log=app_log, ledger=ledger, spilled=0, rss_before=1, rss_after=1,
                      rss_max=1, shutdown_s=0.1, exit_code=0, metrics_attempts=Counter(app_log.by_provider),
                      metrics_requests=len(app_log.by_request))


def ok(request_id: str, status: int = 200) -> Outcome:
    return Outcome(request_id, "chat", 4, 0.0, 0.1, status=status, ok=status == 200, attempts=1)


def missed(run: report.Run) -> list[str]:
    return [name for name, met, _ in report.goals(run) if not met]


def test_a_clean_run_meets_every_goal():
    both = {"chaos-1": "steady", "chaos-2": "a"}
    run = a_run([ok("chaos-1"), ok("chaos-2")], records(both), records(both), {"chaos-steady": 1, "chaos-a": 1})
    assert missed(run) == []
    assert report.all_met(run)


def test_a_5xx_and_a_request_without_answer_are_misses():
    both = {"chaos-1": "steady", "chaos-3": "a"}
    lost = Outcome("chaos-2", "chat", 4, 0.0, 1.0, error="ReadError: ")
    run = a_run([ok("chaos-1"), ok("chaos-3", 502), lost], records(both), records(both),
                {"chaos-steady": 1, "chaos-a": 1})
    assert missed(run) == ["5xx while a healthy provider existed", "requests left without an answer"]
    assert "ReadError" in report.render(run)


def test_a_ledger_row_missing_for_one_request_is_a_miss_even_when_totals_agree():
    app_log = records({"chaos-1": "a", "chaos-2": "a"})
    ledger = Records(by_provider=Counter({"a": 2}), by_request=Counter({"chaos-1": 2}))
    run = a_run([ok("chaos-1"), ok("chaos-2")], app_log, ledger, {"chaos-a": 2})
    assert missed(run) == ["ledger rows = app.log lines, request by request"]


def test_an_upstream_call_without_an_app_log_line_is_a_miss():
    both = {"chaos-1": "a"}
    run = a_run([ok("chaos-1")], records(both), records(both), {"chaos-a": 2})
    assert missed(run) == ["app.log lines = upstream calls, by provider"]


def test_an_attempt_missing_from_metrics_is_a_miss():
    both = {"chaos-1": "a", "chaos-2": "a"}
    run = a_run([ok("chaos-1"), ok("chaos-2")], records(both), records(both), {"chaos-a": 2})
    run.metrics_attempts["a"] -= 1
    assert missed(run) == ["/metrics counts every attempt and request"]


def test_the_schedule_spreads_every_fault_over_the_run_one_at_a_time():
    plan = faults.schedule(600, seed=7)
    assert len(plan) == len(faults.catalogue(random.Random(7)))
    ends = [item.at_s + item.hold_s for item in plan]
    assert all(end <= nxt.at_s for end, nxt in zip(ends, plan[1:])) and ends[-1] < 600
    assert not any("steady" in item.fault.name for item in plan)


@pytest.mark.skipif(not RUN_CHAOS, reason="a 35 s run of four servers: set MODELBROKER_TEST_CHAOS=1")
def test_a_short_chaos_run_meets_its_goals(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench.chaos", "--duration", "20", "--concurrency", "4,16",
                           "--output", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "MISS" not in done.stdout and "| all |" in done.stdout
