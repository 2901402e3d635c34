"""``uvicorn main:app`` from the repository root starts the gateway.

Settings come from ``MODELBROKER_*`` environment variables; a bad providers.yaml
stops the process with one clear message rather than a traceback.
"""

import sys

from modelbroker._config.messages import ConfigError
from modelbroker._server.app import create_app

try:
    app = create_app()
except ConfigError as exc:
    sys.exit(f"modelbroker: cannot start: {exc}")
