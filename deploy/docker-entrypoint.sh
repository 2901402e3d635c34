#!/bin/sh
# Empty the metrics directory that the last run's workers left (their counts would be added
# to the new ones: docs/observability.md, "Several worker processes"), then run the command.
set -eu
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -delete
fi
exec "$@"
