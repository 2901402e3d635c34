"""The development server's providers.yaml: applied as it is saved, through the gateway's reload.

``MODELBROKER_WATCH_CONFIG=true`` turns it on; a reloading development server (``modelbroker
serve --reload``, ``uvicorn main:app --reload``) has it on unless the setting says ``false``.
uvicorn's reloader restarts the process when a .py file changes; a new providers.yaml instead
goes through the same atomic reload as POST /admin/reload, so that an invalid one is refused with
one line in the log while the running configuration keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from modelbroker._config.messages import ConfigError

if TYPE_CHECKING:
    from modelbroker._routing.gateway import Gateway

log = logging.getLogger("modelbroker")


@contextlib.asynccontextmanager
async def watching_config(gateway: Gateway) -> AsyncIterator[None]:
    """While the block runs, reload the gateway each time its providers.yaml changes (when the
    settings ask for it; otherwise nothing happens)."""
    if not gateway.settings.watch_config:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(_watch(gateway, stop))
    try:
        yield
    finally:
        stop.set()  # watchfiles looks at it every 50 ms; a cancel would wait for its 5 s timeout
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _watch(gateway: Gateway, stop: asyncio.Event) -> None:
    from watchfiles import awatch

    path = Path(os.path.abspath(gateway.settings.config))
    # The folder, not the file: an editor that saves by writing a new file and renaming it over
    # the old one would leave a watch on the file itself watching nothing.
    last = _content(path)
    log.info("watching %s: a change is applied at once, an invalid one refused", path)
    async for changes in awatch(path.parent, stop_event=stop, recursive=False,
                                watch_filter=lambda _, changed: Path(changed).name == path.name):
        content = _content(path)
        if content == last:  # saved again unchanged, or a second event of one save
            continue
        last = content
        try:
            await gateway.reload()  # logs "reloaded ..." itself
        except ConfigError as exc:
            log.error("%s changed, and the change is refused; the running configuration is unchanged: %s",
                      path, exc)
        except Exception:  # a bug in a plugin's registration: the watch must go on
            log.exception("%s changed, and reloading it failed; the running configuration is unchanged", path)


def _content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def under_reloader() -> bool:
    """Whether this process is the one uvicorn's reloader runs the app in: a child it started
    (multiprocessing's spawn) from a command line with ``--reload`` (or ``UVICORN_RELOAD``).

    A spawned child is given its parent's ``sys.argv``; the command line is what the user typed,
    ``uvicorn main:app --reload`` or ``modelbroker serve --reload``."""
    if multiprocessing.parent_process() is None:
        return False
    return "--reload" in sys.argv[1:] or os.environ.get("UVICORN_RELOAD", "").lower() in ("1", "true", "yes")


def stop_reloader() -> None:
    """Ask uvicorn's reloader, this process's parent, to stop, as Ctrl-C does: it would otherwise
    stay, listening on the port, with no app to answer until a .py file changes."""
    with contextlib.suppress(OSError):
        os.kill(os.getppid(), signal.SIGTERM)
