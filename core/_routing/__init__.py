"""The request kernel: the objects that travel through the hooks (``types``, ``records``,
``errors``), the router and its retry and cooldown ``policy``, provider ``health``, streamed
attempts, cost, token counts, shared ``state``, and the ``gateway`` that holds them together."""
