"""Strategy ``priority`` (the default): lower ``priority`` first, ties in file order."""

from modelbroker.hookspecs import hookimpl

NAME = "priority"


@hookimpl(trylast=True)
def strategy_names():
    return [NAME]


@hookimpl(trylast=True)
def select_provider(providers, strategy):
    if strategy != NAME:
        return None
    return sorted(providers, key=lambda p: p.priority)
