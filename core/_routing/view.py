"""What a plugin's own route, or a surface's ``parse``, sees of the gateway that serves it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pluggy

    from modelbroker._config.providers import GatewayConfig
    from modelbroker._config.settings import Settings
    from modelbroker._routing.health import Health
    from modelbroker._routing.state import SharedState


class GatewayView(Protocol):
    """The gateway, as ``gateway_of(request)`` gives it to a plugin's route.

    ``config`` is the providers.yaml in force (a reload replaces it); ``pm`` finds an
    object a plugin registered in ``on_startup`` (``pm.get_plugin("myplugin.state")``);
    ``state`` is None until the server has started; ``strategies`` are the registered
    strategy names, sorted.
    """

    settings: Settings
    config: GatewayConfig
    pm: pluggy.PluginManager
    health: Health
    state: SharedState | None
    strategies: list[str]


def gateway_of(request: Any) -> GatewayView:
    """The gateway serving ``request`` (a FastAPI or Starlette ``Request``)."""
    return request.app.state.gateway
