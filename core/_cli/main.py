"""The ``modelbroker`` command: serve, demo, check, plugins."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from modelbroker._config.messages import ConfigError
from modelbroker._config.settings import Settings, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"modelbroker: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelbroker", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    _add_common(serve)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="run the gateway offline against a fake upstream")
    demo.add_argument("--host", default=None)
    demo.add_argument("--port", type=int, default=None)
    demo.set_defaults(run=_demo)

    check = commands.add_parser("check", help="validate providers.yaml and show each strategy's order")
    check.add_argument("--config", type=Path, default=None, help="path of providers.yaml")
    check.set_defaults(run=_check)

    reload = commands.add_parser("reload", help="make a running gateway re-read providers.yaml")
    reload.add_argument("--url", default=None, help="the gateway's base URL (default: from MODELBROKER_HOST/PORT)")
    reload.add_argument("--key", default=os.environ.get("MODELBROKER_CLIENT_KEY"),
                        help="an admin key, when the gateway has keys (default: $MODELBROKER_CLIENT_KEY)")
    reload.set_defaults(run=_reload)

    plugins = commands.add_parser("plugins", help="list the installed plugins")
    plugins.add_argument("--config", type=Path, default=None, help="path of providers.yaml")
    plugins.set_defaults(run=_plugins)

    plugin = commands.add_parser("plugin", help="start a plugin of your own: modelbroker plugin new NAME --kind KIND")
    plugin_commands = plugin.add_subparsers(dest="plugin_command", metavar="COMMAND", required=True)
    new = plugin_commands.add_parser("new", help="write a ready distribution for a new plugin, with passing tests")
    new.add_argument("name", help="the plugin's name: lower-case letters, digits and _ (module modelbroker_NAME)")
    new.add_argument("--kind", required=True, choices=["strategy", "adapter", "guard", "logger"],
                     help="what the plugin is")
    new.add_argument("--directory", type=Path, default=Path("."), help="where to write it (default: here)")
    new.set_defaults(run=_plugin_new)
    _add_plugin_commands(commands)
    return parser


def _add_plugin_commands(commands: argparse._SubParsersAction) -> None:
    """Subcommands that plugins add (``register_commands``). One plugin failing in the hook
    is named on stderr and the others' commands are still there; if the plugins cannot be
    loaded at all (a bad setting, a plugin that does not import), stderr says why, and
    the built-in commands still work."""
    from modelbroker._plugins.hookcall import HookCalls
    from modelbroker._plugins.manager import make_plugin_manager

    try:
        pm = make_plugin_manager(blocked=load_settings().disabled_plugins, strict=False)
        for failure in pm.failures:
            logging.getLogger("modelbroker").warning("%s", failure.message)
        HookCalls(pm).each("register_commands", contain=True, commands=commands)
    except Exception as exc:  # noqa: BLE001 - the built-in commands must still work
        logging.getLogger("modelbroker").warning(
            "the plugins' own commands (such as usage and keys) are unavailable: %s", exc)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="path of providers.yaml")
    parser.add_argument("--host", default=None, help="address to listen on (MODELBROKER_HOST)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (MODELBROKER_PORT)")


def _settings(args: argparse.Namespace, **overrides) -> Settings:
    values = {k: getattr(args, k, None) for k in ("config", "host", "port")}
    values.update(overrides)
    return load_settings(**{k: v for k, v in values.items() if v is not None})


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from modelbroker._server.app import create_app

    settings = _settings(args)
    app = create_app(settings)
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="info",
        timeout_graceful_shutdown=settings.graceful_shutdown_s,
    )
    return 0


def _reload(args: argparse.Namespace) -> int:
    import httpx

    from modelbroker._upstream.client import without_url_credentials

    settings = load_settings()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host  # an IPv6 address
    url = (args.url or f"http://{host}:{settings.port}").rstrip("/") + "/admin/reload"
    shown = without_url_credentials(url, url)
    try:
        headers = {"authorization": f"Bearer {args.key}"} if args.key else {}
        answer = httpx.post(url, headers=headers, timeout=30)
    except httpx.InvalidURL:  # httpx's message may quote a piece of a password it misread as the port
        print(f"modelbroker: cannot reach the gateway at {shown}: the URL does not parse (a port that is not "
              "a number? percent-encode / # ? @ in a password)", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"modelbroker: cannot reach the gateway at {shown}: {without_url_credentials(str(exc), url)}",
              file=sys.stderr)
        return 1
    body = _json_object(answer)
    if answer.status_code == 200 and {"reloaded", "providers", "strategy"} <= body.keys():
        print(f"reloaded {body['reloaded']}: {body['providers']} providers, strategy {body['strategy']!r}")
        return 0
    error = body.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        hint = {401: "; pass an admin key with --key or MODELBROKER_CLIENT_KEY",
                404: f"; {shown} is not a gateway's reload route: give --url the gateway's address, "
                     "with no path"}.get(answer.status_code, "")
        print(f"modelbroker: {error['message']}{hint}", file=sys.stderr)
    else:
        print(f"modelbroker: {shown} answered {answer.status_code}, not as a modelbroker gateway does: "
              "is --url (or MODELBROKER_HOST and MODELBROKER_PORT) the gateway's address?", file=sys.stderr)
    return 1


def _json_object(answer) -> dict:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _demo(args: argparse.Namespace) -> int:
    from modelbroker._cli.demo import run_demo

    return run_demo(_settings(args))


def _check(args: argparse.Namespace) -> int:
    from modelbroker._cli.report import check_config

    return _print(check_config(_settings(args)))


def _plugins(args: argparse.Namespace) -> int:
    from modelbroker._cli.report import list_plugins

    return _print(list_plugins(_settings(args)))


def _plugin_new(args: argparse.Namespace) -> int:
    from modelbroker._cli.scaffold import new_plugin

    target = new_plugin(args.name, args.kind, args.directory)
    print(f"wrote {target}: the {args.kind} plugin {args.name!r}, with its tests. Next:\n"
          f"  cd {target}\n  pip install -e '.[test]'\n  pytest\n"
          f"then edit modelbroker_{args.name}/__init__.py (its docstring says where to start).")
    return 0


def _print(report) -> int:
    """The report on stdout, its problems on stderr; 2 if there is any."""
    if report.text:
        print(report.text)
    for problem in report.problems:
        print(f"modelbroker: {problem}", file=sys.stderr)
    return 2 if report.problems else 0
