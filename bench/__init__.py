"""modelbroker's benchmark harness: what the gateway adds in latency, CPU and memory.

``python -m bench`` (see docs/performance.md). Never run in CI: it is a benchmark, not a test.
"""
