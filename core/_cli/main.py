"""The ``modelbroker`` command: the built-in commands, and those plugins add (``register_commands``).

The built-in commands are declared here without importing what they run, and the plugins are
loaded only for a command that is not built in: ``modelbroker --help`` and ``modelbroker serve
--help`` import neither FastAPI nor a plugin (bench/cli_startup.py measures it).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from modelbroker import __version__
from modelbroker._config.messages import ConfigError

DESCRIPTION = "modelbroker: an LLM gateway, one API in front of many model providers."
EPILOG = """\
Plugins add commands of their own (the built-in ones add usage and keys): `modelbroker plugins`
lists them, and `modelbroker COMMAND --help` explains any command. Settings come from MODELBROKER_*
environment variables (docs/configuration.md)."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(with_plugins=_names_a_plugin_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    configure_logging()
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"modelbroker: {exc}", file=sys.stderr)
        return 2


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream call is noise
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # and one per file saved, under --reload


def _names_a_plugin_command(argv: Sequence[str]) -> bool:
    """The first word that is not an option is neither a built-in command nor absent."""
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    return word is not None and word not in BUILT_IN


def _parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelbroker", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"modelbroker {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for add in BUILT_IN.values():
        add(commands)
    if with_plugins:
        configure_logging()  # a plugin that does not load says so in the same format as the rest
        _add_plugin_commands(commands)
    return parser


def _command(commands: argparse._SubParsersAction, name: str, summary: str, description: str,
             run) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(run=run)
    return parser


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = _command(commands, "serve", "run the gateway", """\
Run the gateway until Ctrl-C (or SIGTERM), on MODELBROKER_HOST:MODELBROKER_PORT, with the providers
of providers.yaml. A bad providers.yaml, or a port in use, stops it before it listens or writes
anything. `kill -HUP`, POST /admin/reload and `modelbroker reload` re-read providers.yaml.""", _serve)
    _add_config(serve)
    _add_address(serve)
    serve.add_argument("--workers", type=int, default=None, metavar="N",
                       help="worker processes (MODELBROKER_WORKERS, default 1); several want MODELBROKER_REDIS_URL "
                            "to share cooldowns and limits")
    serve.add_argument("--reload", action="store_true",
                       help="for development: restart when a .py file changes, and apply a change to "
                            "providers.yaml in place (an invalid one is refused and the old one kept)")


def _add_demo(commands: argparse._SubParsersAction) -> None:
    demo = _command(commands, "demo", "run the gateway offline, in front of a fake upstream", """\
Run the gateway in front of the project's fake upstream, with three providers of which the
first always fails: try /generate with curl and watch the fallback. Every attempt is a JSON line
in app.log (MODELBROKER_LOG_FILE). Needs no key and no network.""", _demo)
    _add_address(demo)


def _add_check(commands: argparse._SubParsersAction) -> None:
    check = _command(commands, "check", "validate providers.yaml and show each strategy's order", """\
Validate providers.yaml exactly as `serve` does, with the installed plugins, and print the
providers and the order in which each strategy would try them. Exit status 2 if it is invalid.""",
                     _check)
    _add_config(check)


def _add_reload(commands: argparse._SubParsersAction) -> None:
    reload = _command(commands, "reload", "make a running gateway re-read providers.yaml", """\
Ask a running gateway to re-read its providers.yaml (POST /admin/reload). A valid file replaces
the running one at once; an invalid one is refused and the running one kept.""", _reload)
    reload.add_argument("--url", default=None, help="the gateway's base URL (default: from MODELBROKER_HOST/PORT)")
    reload.add_argument("--key", default=os.environ.get("MODELBROKER_CLIENT_KEY"),
                        help="an admin key, when the gateway has keys (default: $MODELBROKER_CLIENT_KEY)")


def _add_plugins(commands: argparse._SubParsersAction) -> None:
    plugins = _command(commands, "plugins", "list the installed plugins and what they add", """\
List every installed plugin: its distribution, what it registers (strategies, adapters,
surfaces, settings, commands), its hooks, and whether it is enabled.""", _plugins)
    _add_config(plugins)


def _add_plugin(commands: argparse._SubParsersAction) -> None:
    plugin = commands.add_parser("plugin", help="start a plugin of your own: modelbroker plugin new NAME --kind KIND",
                                 description="Start a plugin of your own.")
    plugin_commands = plugin.add_subparsers(dest="plugin_command", metavar="COMMAND", required=True)
    new = plugin_commands.add_parser("new", help="write a ready distribution for a new plugin, with passing tests",
                                     description="Write modelbroker-NAME/: a distribution for a new plugin, with "
                                                 "its entry point, a README and tests that pass once installed.")
    new.add_argument("name", help="the plugin's name: lower-case letters, digits and _ (module modelbroker_NAME)")
    new.add_argument("--kind", required=True, choices=["strategy", "adapter", "guard", "logger"],
                     help="what the plugin is")
    new.add_argument("--directory", type=Path, default=Path("."), help="where to write it (default: here)")
    new.set_defaults(run=_plugin_new)


def _add_plugin_commands(commands: argparse._SubParsersAction) -> None:
    """Subcommands that plugins add (``register_commands``). One plugin failing in the hook
    is named on stderr and the others' commands are still there; if the plugins cannot be
    loaded at all (a bad setting, a plugin that does not import), stderr says why, and
    the built-in commands still work."""
    from modelbroker._config.settings import load_settings
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


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="path of providers.yaml (MODELBROKER_CONFIG, default ./providers.yaml)")


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="address to listen on (MODELBROKER_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (MODELBROKER_PORT, default 8000)")


def _settings(args: argparse.Namespace, **overrides):
    from modelbroker._config.settings import load_settings

    values = {k: getattr(args, k, None) for k in ("config", "host", "port", "workers")}
    values.update(overrides)
    return load_settings(**{k: v for k, v in values.items() if v is not None})


def _serve(args: argparse.Namespace) -> int:
    from modelbroker._cli.serve import serve

    return serve(_settings(args), reload=args.reload)


def _reload(args: argparse.Namespace) -> int:
    import httpx

    from modelbroker._config.settings import load_settings
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


#: The built-in commands, in the order --help lists them: name -> what declares it.
BUILT_IN = {"serve": _add_serve, "demo": _add_demo, "check": _add_check, "reload": _add_reload,
            "plugins": _add_plugins, "plugin": _add_plugin}
