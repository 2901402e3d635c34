"""bench/report.py: the translated surfaces' CPU target, judged run by run."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # bench/ is not installed: it runs from the checkout
    sys.path.insert(0, str(REPO_ROOT))

from bench.load import WrkResult  # noqa: E402
from bench.report import Row, _surfaces_against_chat, paired_ratios  # noqa: E402


def row(endpoint: str, runs: list[float], median: float | None = None) -> Row:
    wrk = WrkResult(requests=1000, duration_s=5.0, p50_ms=1.0, p90_ms=1.0, p99_ms=1.0, max_ms=1.0, mean_ms=1.0)
    return Row("stream", "modelbroker", endpoint, 64, wrk, median if median is not None else runs[len(runs) // 2],
               None, 0.0, run_cpu_us=runs if len(runs) > 1 else None)


def verdict(rows: list[Row], endpoint: str) -> str:
    line = next(line for line in _surfaces_against_chat(rows, 64) if f"modelbroker {endpoint} vs" in line)
    return line.split()[1]


def test_runs_are_compared_with_the_chat_cell_of_the_same_run():
    # Run 2 was slow for every endpoint: each run's ratio is 105 %, while the median cells
    # (chat's from run 3, the surface's from run 2) would make it 129 %.
    chat = row("/v1/chat/completions", [400.0, 560.0, 420.0], median=420.0)
    responses = row("/v1/responses", [420.0, 588.0, 441.0], median=540.0)
    assert [round(r, 2) for r in paired_ratios(responses, chat)] == [1.05, 1.05, 1.05]
    assert verdict([chat, responses], "/v1/responses") == "PASS"


def test_a_surface_slower_in_most_runs_fails():
    chat = row("/v1/chat/completions", [400.0, 400.0, 400.0])
    responses = row("/v1/responses", [480.0, 400.0, 500.0])  # 120 %, 100 %, 125 %: median 120 %
    assert verdict([chat, responses], "/v1/responses") == "FAIL"


def test_without_runs_to_pair_the_median_cells_are_compared():
    chat = row("/v1/chat/completions", [400.0])
    single = row("/v1/messages", [470.0])  # 117.5 %
    uneven = row("/v1/responses", [420.0, 440.0], median=440.0)  # a run missing: not paired (110 %)
    assert paired_ratios(uneven, chat) == []
    assert verdict([chat, single, uneven], "/v1/messages") == "FAIL"
    assert verdict([chat, single, uneven], "/v1/responses") == "PASS"


def test_each_run_starts_the_list_one_later():
    from bench.__main__ import rotated

    runs = [rotated(list("ABCDE"), r) for r in range(5)]
    assert runs[0] == list("ABCDE") and runs[1] == list("BCDEA")
    assert all(sorted(run) == list("ABCDE") for run in runs)
    assert {run.index("E") for run in runs} == set(range(5))  # the last endpoint is not always measured last
