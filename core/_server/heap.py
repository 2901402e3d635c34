"""The garbage collector's settings for a long-running gateway process.

Measured under wrk (``python -m bench.profile``): with Python's defaults the collector
took a noticeable share of the gateway's CPU, and each full collection walked the many
objects that importing FastAPI, pydantic, SQLAlchemy (then) and the plugins leaves
behind, pausing every request in flight long enough to show as the p99
(docs/performance.md, 'Measurements behind the code').
After startup those objects live as long as the process, so they are frozen
(``gc.freeze``: never walked again), and young objects are collected every 10,000
net allocations instead of 700: most of a request's objects are freed by reference
counting anyway, and the cyclic garbage left between collections is small.
``MODELBROKER_GC_TUNING=false`` keeps Python's defaults.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle_after_startup() -> None:
    """Collect once, freeze what startup made, and collect young objects less often."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
