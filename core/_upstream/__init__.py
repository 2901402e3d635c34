"""Calling upstreams: the pooled ``client`` adapters use, the ``transport`` it sends through
(``http1``, the gateway's own, or ``aiohttp_transport``), and the helpers that turn an
upstream's failures and events into ``ProviderError`` without secrets (``errors``, ``sse``)."""
