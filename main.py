"""``uvicorn main:app`` from the repository root starts the gateway.

Settings come from ``MODELBROKER_*`` environment variables; a bad providers.yaml
stops the process with one clear line rather than a traceback (exit status 3, which
stops uvicorn's --workers supervisor and, under --reload, its reloader too). With
``--reload``, a change to providers.yaml is applied as it is saved.
"""

from modelbroker._cli.serve import app_or_exit

app = app_or_exit()
