"""Plugins: loading them (``manager``), calling their hooks one at a time (``hookcall``), and
the ``registry`` of the strategies, adapters and settings they register by name."""
