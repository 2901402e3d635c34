"""A testing kit for modelbroker plugins: real gateways on loopback, a fake upstream, and helpers.

With pytest, add one line to the ``conftest.py`` at the root of your tests::

    pytest_plugins = ["modelbroker.testing.pytest_plugin"]

and the fixtures ``gateway``, ``fake_upstream``, ``provider`` and ``free_port`` are there::

    def test_reverse(gateway, provider):
        gw = gateway({"strategy": "reverse", "providers": [provider("a"), provider("b")]})
        assert gw.generate({"prompt": "hi"}).json()["provider"] == "b/b"

Without pytest, ``GatewayServer`` runs a gateway for a providers.yaml in a thread, on a free
port of 127.0.0.1, every file it writes in a directory of its own; ``GatewayProcess`` runs
``modelbroker serve`` in a process of its own. ``registered`` and ``config_for`` let a test
call a plugin's registrations and a strategy without a gateway. docs/plugins.md, "Testing a
plugin", shows each. This module and ``modelbroker.fake_upstream`` are public API.
"""

from modelbroker.testing._gateways import RunningGateway, config_text
from modelbroker.testing._plugins import config_for, registered
from modelbroker.testing._servers import GatewayProcess, GatewayServer, GatewayStartupError, free_port, wait_healthy

__all__ = [
    "GatewayProcess",
    "GatewayServer",
    "GatewayStartupError",
    "RunningGateway",
    "config_for",
    "config_text",
    "free_port",
    "registered",
    "wait_healthy",
]
