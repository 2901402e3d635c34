"""Strategy ``cost``: cheapest first for this request, ties by priority, then file order.

The price is the request's estimated cost at each provider's prices (prompt
length and ``max_tokens``), so split input and output prices rank correctly.
"""

from modelbroker._routing.pricing import estimated_cost
from modelbroker.hookspecs import hookimpl

NAME = "cost"


@hookimpl(trylast=True)
def strategy_names():
    return [NAME]


@hookimpl(trylast=True)
def select_provider(request, providers, strategy):
    if strategy != NAME:
        return None
    return sorted(providers, key=lambda p: (estimated_cost(p, request), p.priority))
