"""The built-in plugins. Each module is declared in pyproject.toml's ``modelbroker``
entry-point group and loaded like any third-party plugin; none is imported by the core."""
