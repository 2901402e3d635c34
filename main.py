"""``uvicorn main:app`` from the repository root starts the gateway.

Settings come from ``MODELBROKER_*`` environment variables; a bad providers.yaml
stops the process with one clear message rather than a traceback.
"""

import sys

from core.app import create_app
from core.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    sys.exit(f"modelbroker: cannot start: {exc}")
