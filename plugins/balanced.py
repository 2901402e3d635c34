"""Strategy ``balanced``: spread requests over entries of equal priority, by ``weight``.

Several entries with the same priority (say, three API keys of one provider,
weights 2, 1, 1) share the traffic in proportion to their weights; the next
priority level is the fallback. Each request draws a weighted order without
replacement, so the fallback within a level is spread too.
"""

import random
from itertools import groupby

from modelbroker import hookimpl


class Balanced:
    def select_provider(self, providers):
        order = []
        for _, level in groupby(sorted(providers, key=lambda p: p.priority), key=lambda p: p.priority):
            order.extend(weighted_order(list(level)))
        return order


@hookimpl
def register_strategies(register):
    register("balanced", Balanced)


def weighted_order(providers, rng=random):
    """A random order in which each provider comes first with probability weight / total."""
    # Efraimidis-Spirakis: sort by u ** (1 / w), u uniform in (0, 1].
    return sorted(providers, key=lambda p: (1.0 - rng.random()) ** (1.0 / p.weight), reverse=True)
