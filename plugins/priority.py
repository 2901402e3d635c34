"""Strategy ``priority`` (the default): lower ``priority`` first, ties in file order."""

from modelbroker import hookimpl


class Priority:
    def select_provider(self, providers):
        return sorted(providers, key=lambda p: p.priority)


@hookimpl
def register_strategies(register):
    register("priority", Priority)
