"""GET /metrics: the Prometheus text format (or OpenMetrics, if the scraper asks for it).

Once client keys exist it needs an admin key, unless ``MODELBROKER_METRICS_PUBLIC=true``
(a scraper on a network one trusts; the ``keys`` plugin then lets it in without a key).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder

from modelbroker import APIError, gateway_of, require_admin

router = APIRouter()

#: The name the per-gateway ``MetricsRecorder`` is registered under in the plugin manager.
RECORDER_NAME = "metrics.recorder"


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    gateway = gateway_of(request)
    if not gateway.settings.metrics_public:
        require_admin(request)
    recorder = gateway.pm.get_plugin(RECORDER_NAME)
    if recorder is None:
        raise APIError(503, "the metrics plugin is not running", code="metrics_unavailable")
    recorder.flush()
    recorder.refresh_health(gateway.health, gateway.config.providers)  # on the event loop, as the router
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    if recorder.multiprocess_dir:
        body = await asyncio.to_thread(encode, recorder.scrape_registry)  # reads every worker's files
    else:
        body = encode(recorder.scrape_registry)
    return Response(body, media_type=content_type)
