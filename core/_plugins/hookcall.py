"""Call hook implementations one at a time, so a failure is pinned on its plugin.

pluggy's own call stops at the first exception and does not say which plugin
raised it. The gateway needs both: a broken logger must not fail a request, and
an error must name the plugin. The implementation lists are resolved once, when
``HookCalls`` is built, not on every request; these loops run several times per
request, so they stay plain (no generator, no list per call).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import pluggy

from modelbroker._routing.errors import APIError

log = logging.getLogger("modelbroker")

Impl = tuple[str, Callable[..., Any], tuple[str, ...]]


class PluginError(Exception):
    """A plugin raised inside a hook."""

    def __init__(self, plugin: str, hook: str, error: BaseException) -> None:
        super().__init__(f"plugin {plugin!r} failed in {hook}: {type(error).__name__}: {error}")
        self.plugin = plugin
        self.hook = hook
        self.error = error


class HookCalls:
    """A snapshot of the registered implementations of each hook, in pluggy's call order."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._impls: dict[str, list[Impl]] = {}
        for name in dir(pm.hook):
            caller = getattr(pm.hook, name)
            if isinstance(caller, pluggy.HookCaller):
                self._impls[name] = _ordered_impls(caller)

    def has(self, hook: str) -> bool:
        """Whether any plugin implements ``hook`` (so a caller can skip building its arguments)."""
        return bool(self._impls.get(hook))

    def wants(self, hook: str, argument: str) -> bool:
        """Whether any implementation of ``hook`` declares ``argument`` (so a caller can skip
        building an argument nobody reads)."""
        return any(argument in argnames for _, _, argnames in self._impls.get(hook, ()))

    def implementations(self, hook: str) -> list[Impl]:
        """``(plugin name, function, argument names)`` of each implementation, in call order."""
        return list(self._impls.get(hook, ()))

    def first(self, hook: str, **kwargs: Any) -> tuple[str, Any] | tuple[None, None]:
        """The first non-None answer and the plugin that gave it; raises PluginError.

        The loop sits inside one ``try`` (no function call per implementation): routing asks
        this of every strategy and every adapter plugin on each request."""
        plugin = None
        try:
            for plugin, function, argnames in self._impls.get(hook, ()):
                answer = function(*map(kwargs.__getitem__, argnames))
                if answer is not None:
                    return plugin, answer
        except APIError:
            raise
        except Exception as exc:
            raise PluginError(plugin, hook, exc) from exc
        return None, None

    def each(self, hook: str, *, contain: bool = False, **kwargs: Any) -> list[tuple[str, Any]]:
        """Every implementation's non-None answer; raises PluginError at the first failure,
        or with ``contain`` logs it (naming the plugin) and goes on with the rest."""
        if contain:
            return self._each_contained(hook, kwargs)
        found = []
        plugin = None
        try:
            for plugin, function, argnames in self._impls.get(hook, ()):
                answer = function(*map(kwargs.__getitem__, argnames))
                if answer is not None:
                    found.append((plugin, answer))
        except APIError:
            raise
        except Exception as exc:
            raise PluginError(plugin, hook, exc) from exc
        return found

    def each_outcome(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Every implementation's non-None answer, or the exception it raised, by plugin: for a
        caller that reports on each plugin (/health/ready) rather than stopping at one."""
        found = []
        for plugin, function, argnames in self._impls.get(hook, ()):
            try:
                answer = function(*map(kwargs.__getitem__, argnames))
            except Exception as exc:  # noqa: BLE001 - reported as that plugin's outcome
                answer = exc
            if answer is not None:
                found.append((plugin, answer))
        return found

    def _each_contained(self, hook: str, kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
        found = []
        for plugin, function, argnames in self._impls.get(hook, ()):
            try:
                answer = function(*map(kwargs.__getitem__, argnames))
            except Exception as exc:  # noqa: BLE001
                log.warning("%s; the other plugins go on without it", PluginError(plugin, hook, exc))
                continue
            if answer is not None:
                found.append((plugin, answer))
        return found

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Run every implementation; a failure is logged with the plugin's name and skipped."""
        for plugin, function, argnames in self._impls.get(hook, ()):
            try:
                function(*map(kwargs.__getitem__, argnames))
            except Exception:
                log.exception("plugin %r failed in %s; the request goes on", plugin, hook)

    async def each_awaited(self, hook: str, *, contain: bool = False, **kwargs: Any) -> None:
        """Run every implementation and await what it returns.

        With ``contain``, a failure is logged and the rest still run (shutdown);
        without, the first failure raises PluginError (startup). An ``APIError`` (an
        answer meant for the client, such as a refusal from ``admit``) passes through.
        """
        for plugin, function, argnames in self._impls.get(hook, ()):
            try:
                answer = function(*map(kwargs.__getitem__, argnames))
                if answer is not None and inspect.isawaitable(answer):
                    await answer
            except APIError:
                raise
            except Exception as exc:
                if not contain:
                    raise PluginError(plugin, hook, exc) from exc
                log.exception("plugin %r failed in %s", plugin, hook)


def _ordered_impls(caller: pluggy.HookCaller) -> list[Impl]:
    """pluggy's call order (its list, reversed). The plugin manager has refused hook wrappers."""
    return [(impl.plugin_name, impl.function, tuple(impl.argnames)) for impl in reversed(caller.get_hookimpls())]
