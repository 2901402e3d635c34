"""modelbroker: an LLM gateway built as a small core plus pluggy plugins."""

__version__ = "0.1.0"
