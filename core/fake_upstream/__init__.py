"""A fake model server for tests, demos and fault injection; see ``_server.py``."""

from modelbroker.fake_upstream._server import KINDS, Behavior, FakeUpstream, main

__all__ = ["KINDS", "Behavior", "FakeUpstream", "main"]
