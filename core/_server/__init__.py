"""The HTTP side: the FastAPI ``app`` and its lifespan, the fast path for the generation
routes (``direct``), the one middleware (``edge``: who may call, bodies no route should
parse), errors in one shape, server-sent events out, and the ``routes``."""
