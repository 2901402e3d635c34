"""Strategy ``cost``: cheapest first for this request, ties by priority, then file order.

The price is the request's estimated cost at each provider's prices (prompt
length and ``max_tokens``), so split input and output prices rank correctly.
"""

from modelbroker import estimated_cost, hookimpl


class Cheapest:
    def select_provider(self, request, providers):
        return sorted(providers, key=lambda p: (estimated_cost(p, request), p.priority))


@hookimpl
def register_strategies(register):
    register("cost", Cheapest)
