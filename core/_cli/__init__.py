"""The ``modelbroker`` command (``main``): serve, demo, check, reload, plugins, plugin new, and
the commands plugins add; the ``report`` check and plugins print; the plugin ``scaffold``."""
