"""``modelbroker serve``: one process, several workers (``--workers``), or the development server
(``--reload``).

Nothing is written before the gateway can start: providers.yaml is checked and the port claimed
before the lifespan opens app.log and the ledger. Several processes need uvicorn's import string:
``app_or_exit`` builds each one's app from the ``MODELBROKER_*`` variables, to which ``serve``
copies its options first (a spawned worker sees the environment, not the command line).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from collections.abc import Callable

import uvicorn

from modelbroker._config.messages import ConfigError
from modelbroker._config.settings import Settings, load_settings
from modelbroker._server.config_watch import stop_reloader, under_reloader

log = logging.getLogger("modelbroker")
#: uvicorn's exit status for a process that failed to start; a worker that exits with it stops
#: uvicorn's supervisor instead of being started again, forever.
STARTUP_FAILURE = 3
#: The factories uvicorn calls in the processes it starts.
WORKER_APP = "modelbroker._cli.serve:worker_app"
RELOADING_APP = "modelbroker._cli.serve:reloading_app"


def serve(settings: Settings, *, reload: bool = False) -> int:
    if reload and settings.workers > 1:
        raise ConfigError("--reload runs one process: leave out --workers (or MODELBROKER_WORKERS)")
    if reload or settings.workers > 1:
        return _serve_processes(settings, reload)
    from modelbroker._server.app import create_app

    app = create_app(settings)
    sock = claim_port(settings.host, settings.port)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            timeout_graceful_shutdown=settings.graceful_shutdown_s)
    return run_on(sock, config, lambda: _log_running(settings, sock))


def _serve_processes(settings: Settings, reload: bool) -> int:
    from uvicorn.supervisors import ChangeReload, Multiprocess

    from modelbroker._routing.gateway import Gateway

    Gateway.from_settings(settings)  # a bad providers.yaml stops here, once, rather than in each worker
    claim_port(settings.host, settings.port).close()  # uvicorn binds it again at once, below
    for name in ("config", "host", "port", "workers"):
        os.environ[f"MODELBROKER_{name.upper()}"] = str(getattr(settings, name))
    if settings.workers > 1 and not settings.redis_url:
        log.warning("%d workers and no MODELBROKER_REDIS_URL: each worker keeps its own cooldowns, rate limits and "
                    "spend", settings.workers)
    config = uvicorn.Config(RELOADING_APP if reload else WORKER_APP, factory=True, host=settings.host, port=settings.port, reload=reload,
                            workers=settings.workers, log_level="info",
                            timeout_graceful_shutdown=settings.graceful_shutdown_s)
    sock = config.bind_socket()
    try:
        if reload:
            supervisor = ChangeReload(config, target=uvicorn.Server(config).run, sockets=[sock])
            supervisor.run()
            codes = [supervisor.process.exitcode]
        else:
            supervisor = Multiprocess(config, sockets=[sock])
            supervisor.run()
            codes = [process.exitcode for process in supervisor.processes]
    except KeyboardInterrupt:
        return 0
    return STARTUP_FAILURE if STARTUP_FAILURE in codes else 0


def worker_app():
    """The app of each worker of ``serve --workers``, with the command's log format."""
    from modelbroker._cli.main import configure_logging

    configure_logging()
    return app_or_exit(reloading=False)


def reloading_app():
    """The app of ``serve --reload``'s child process, with the command's log format."""
    from modelbroker._cli.main import configure_logging

    configure_logging()
    return app_or_exit(reloading=True)


def app_or_exit(reloading: bool | None = None):
    """The gateway's app from the ``MODELBROKER_*`` variables (``uvicorn main:app`` and every
    process of ``serve``), or one line on stderr and exit status 3, which stops uvicorn's
    supervisor; the reloader, which would wait for a .py file to change, is asked to stop too.

    Under a reloading development server (``reloading``; by default, found out with
    ``under_reloader``), providers.yaml is watched unless MODELBROKER_WATCH_CONFIG says otherwise."""
    from modelbroker._server.app import create_app

    reloading = under_reloader() if reloading is None else reloading
    try:
        watch = {"watch_config": True} if reloading and "MODELBROKER_WATCH_CONFIG" not in os.environ else {}
        return create_app(load_settings(**watch))
    except ConfigError as exc:
        print(f"modelbroker: cannot start: {exc}", file=sys.stderr, flush=True)
        if reloading:
            stop_reloader()
        sys.exit(STARTUP_FAILURE)


def claim_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` as uvicorn binds it, or ConfigError saying what to do."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use; choose another with --port N") from None
        raise ConfigError(f"cannot listen on {host} port {port}: {exc.strerror or exc}; "
                          "choose another address with --host") from None
    sock.set_inheritable(True)
    return sock


def run_on(sock: socket.socket, config: uvicorn.Config, on_started: Callable[[], None]) -> int:
    """Serve ``config``'s app on ``sock`` until Ctrl-C; ``on_started`` runs once the app's startup
    has succeeded. The exit status: 0, or 3 if the startup failed."""
    server = _Server(config, on_started)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # uvicorn's way to say the startup failed
        return exc.code if isinstance(exc.code, int) else STARTUP_FAILURE
    finally:
        sock.close()
    return 0 if server.started else STARTUP_FAILURE


class _Server(uvicorn.Server):
    """uvicorn's server, on a socket given to it, which says when it is up: uvicorn itself is
    silent then, since it expects its supervisor to have said so when it bound the socket."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.on_started()


def _log_running(settings: Settings, sock: socket.socket) -> None:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
                                            host, sock.getsockname()[1])
