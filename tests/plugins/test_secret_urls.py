"""A password in MODELBROKER_REDIS_URL or MODELBROKER_DATABASE_URL shows nowhere.

Two kinds of URL used to leak: a password in the query string (``?password=``),
which the URL shown in /health, the logs and the CLIs' messages kept, and a password
with an unencoded ``/``, ``#`` or ``?``, which makes the URL parse as another one
(the password's first characters taken for a port) and reached the user through a
driver's ``ValueError``. Each test looks for every three-character piece of the
password in what a user or a log reader sees.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
import uuid
from urllib.parse import urlsplit

import pytest

from modelbroker._config.settings import Settings
from modelbroker._plugins.hookcall import PluginError
from modelbroker._server.app import create_app
from modelbroker.plugins.redis_state import RedisState
from modelbroker.plugins.storage.database import UnsupportedDatabase, open_database
from modelbroker.plugins.storage.urls import safe_url
from modelbroker.testing import GatewayStartupError, free_port

#: Unencoded ``/`` and ``#``: the URL parses as another one, if at all.
PASSWORD = "Zq7/x#pW9"
#: Given in the query string: the URL parses, with the password outside its userinfo.
QUERY_PASSWORD = "Hq4pW8zT"

#: Read at import: tests/conftest.py removes every MODELBROKER_* variable from each test's environment.
REDIS = urlsplit(os.environ.get("MODELBROKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
PG_URL_FROM_ENV = os.environ.get("MODELBROKER_TEST_DATABASE_URL")
PG = urlsplit(PG_URL_FROM_ENV or "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_AT = f"{REDIS.hostname}:{REDIS.port or 6379}"
PG_AT = f"{PG.hostname}:{PG.port or 5432}"


def assert_hidden(text: str, secret: str) -> None:
    """No three characters in a row of ``secret`` appear in ``text``."""
    pieces = sorted({secret[i:i + 3] for i in range(len(secret) - 2)} & _triples(text))
    assert not pieces, f"pieces {pieces} of the password show in:\n{text}"


def _triples(text: str) -> set[str]:
    return {text[i:i + 3] for i in range(len(text) - 2)}


def secret_of(url: str) -> str:
    """The password in ``url``: in its query string, else between the user name's ``:`` and the last ``@``."""
    if QUERY_PASSWORD in url:
        return QUERY_PASSWORD
    return url.partition("://")[2].rpartition("@")[0].partition(":")[2]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record's message, with its traceback (chained exceptions too) when it has one."""
    return "\n".join(record.getMessage() + "\n" + "".join(traceback.format_exception(*record.exc_info))
                     if record.exc_info else record.getMessage() for record in caplog.records)


# --- Redis ---------------------------------------------------------------------------------

REDIS_QUERY_URL = f"redis://{REDIS_AT}/0?password={QUERY_PASSWORD}"
REDIS_UNPARSED_URLS = [
    pytest.param(f"redis://:{PASSWORD}@{REDIS_AT}/0", id="slash-and-hash"),
    pytest.param(f"redis://:Zq7?x=pW9@{REDIS_AT}/0", id="question-mark"),
    pytest.param(f"redis://:7046#pW9@{REDIS_AT}/0", id="hash-after-digits"),  # redis-py reads port 7046 on localhost
]


@pytest.fixture
def redis_reachable() -> None:
    try:
        socket.create_connection((REDIS.hostname, REDIS.port or 6379), timeout=0.5).close()
    except OSError as exc:
        if os.environ.get("MODELBROKER_TEST_REDIS_URL") or os.environ.get("CI"):
            pytest.fail(f"Redis at {REDIS_AT} is unreachable: {exc}")
        pytest.skip(f"Redis at {REDIS_AT} is unreachable; set MODELBROKER_TEST_REDIS_URL to test it")


async def test_the_redis_url_shown_is_scheme_host_port_and_db():
    for url in (REDIS_QUERY_URL, f"redis://default:{QUERY_PASSWORD}@{REDIS_AT}/0"):
        state = RedisState(url)
        await state.close()
        assert state.status()["url"] == f"redis://{REDIS_AT}/0"


@pytest.mark.parametrize("url", REDIS_UNPARSED_URLS)
def test_a_redis_url_that_does_not_parse_is_refused_without_showing_it(url):
    with pytest.raises(ValueError) as caught:
        RedisState(url)
    told = "".join(traceback.format_exception(caught.value))
    assert "MODELBROKER_REDIS_URL" in str(caught.value) and "percent-encode" in str(caught.value)
    assert_hidden(told, secret_of(url))


async def test_a_gateway_with_such_a_redis_url_says_so_at_startup(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    config = tmp_path / "providers.yaml"
    config.write_text("providers: []\n", encoding="utf-8")
    app = create_app(Settings(config=config, log_file="", gc_tuning=False, redis_url=f"redis://:{PASSWORD}@{REDIS_AT}/0",
                              database_url=f"sqlite:///{tmp_path}/mb.db"))
    with pytest.raises(PluginError):
        async with app.router.lifespan_context(app):
            pass
    assert "MODELBROKER_REDIS_URL" in app.startup_error
    assert_hidden(app.startup_error + everything_logged(caplog), PASSWORD)


async def test_the_redis_outage_warning_shows_no_password(caplog):
    caplog.set_level(logging.WARNING, logger="modelbroker")
    state = RedisState(f"redis://127.0.0.1:{free_port()}/0?password={QUERY_PASSWORD}", timeout_s=0.2)
    try:
        assert await state.add("spend:x", 1.0, ttl_s=5) == 1.0  # served locally
        assert "is unreachable" in caplog.text
        assert_hidden(everything_logged(caplog) + repr(state.status()), QUERY_PASSWORD)
    finally:
        await state.close()


def test_health_shows_no_redis_password(gateway, redis_reachable, caplog):
    caplog.set_level(logging.DEBUG)
    gw = gateway("providers: []\n", redis_url=REDIS_QUERY_URL)
    health = gw.get("/health")
    assert health.json()["shared_state"]["url"] == f"redis://{REDIS_AT}/0"
    lines = gw.log_lines()
    assert_hidden(health.text + everything_logged(caplog) + repr(lines), QUERY_PASSWORD)


# --- PostgreSQL ------------------------------------------------------------------------------

PG_UNPARSED_URLS = [
    pytest.param(f"postgresql://{PG.username}:{PASSWORD}@{PG_AT}/test", id="slash-and-hash"),
    pytest.param(f"postgresql+asyncpg://{PG.username}:Zq7?x=pW9@{PG_AT}/test", id="question-mark"),
    pytest.param(f"postgresql://{PG.username}:Zq7#xpW9@{PG_AT}/test", id="hash"),
    pytest.param(f"postgresql://{PG.username}:Zq7/xpW9@{PG_AT}/test", id="slash"),
    pytest.param(f"postgresql://{PG.username}:Zq7@xpW9@{PG_AT}/test", id="second-at"),
]


def pg_query_url(database: str = "test") -> str:
    return f"postgresql://{PG.username}@{PG_AT}/{database}?sslmode=disable&password={QUERY_PASSWORD}"


@pytest.fixture
def absent_database() -> str:
    """A database name the PostgreSQL server answers for ("does not exist")."""
    try:
        socket.create_connection((PG.hostname, PG.port or 5432), timeout=0.5).close()
    except OSError as exc:
        if PG_URL_FROM_ENV:
            pytest.fail(f"MODELBROKER_TEST_DATABASE_URL is unreachable: {exc}")
        pytest.skip(f"no PostgreSQL at {PG_AT}; set MODELBROKER_TEST_DATABASE_URL")
    return f"mb_absent_{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("url", PG_UNPARSED_URLS)
def test_a_database_url_that_does_not_parse_is_shown_as_a_placeholder(url):
    shown = safe_url(url)
    assert shown == f"{url.partition('://')[0]}://<url not shown: it does not parse>"


def test_a_query_string_is_not_shown():
    assert safe_url(pg_query_url()) == f"postgresql://{PG.username}@{PG_AT}/test"
    assert safe_url("postgresql+asyncpg://u:hunter2@db:5433,db2/ledger?sslmode=require&password=x") == (
        "postgresql+asyncpg://u:***@db:5433,db2/ledger")


def test_a_url_without_scheme_is_not_quoted_as_its_scheme():
    url = f"postgresql:/{PG.username}:{QUERY_PASSWORD}@{PG_AT}/test"  # one slash short
    with pytest.raises(UnsupportedDatabase) as caught:
        open_database(url)
    assert_hidden(str(caught.value), QUERY_PASSWORD)
    assert "no scheme://" in str(caught.value)


@pytest.fixture
def command(monkeypatch, capsys):
    """``command(url, *args) -> (status, stdout, stderr)``: ``modelbroker ARGS`` in this process."""
    from modelbroker._cli.main import main

    def run(url: str, *args: str) -> tuple[int, str, str]:
        monkeypatch.setenv("MODELBROKER_DATABASE_URL", url)
        capsys.readouterr()
        try:
            status = main(list(args))
        except SystemExit as exc:
            status = exc.code
        out = capsys.readouterr()
        return status, out.out, out.err

    return run


@pytest.mark.parametrize("args", [("usage",), ("keys", "list")])
@pytest.mark.parametrize("url", PG_UNPARSED_URLS)
def test_the_clis_say_the_database_url_does_not_parse(command, url, args, caplog):
    status, out, err = command(url, *args)
    assert status == 2 and out == ""
    assert err.startswith("modelbroker: ") and err.count("\n") == 1, err
    assert "MODELBROKER_DATABASE_URL" in err and "percent-encode" in err
    assert_hidden(err + everything_logged(caplog), secret_of(url))


@pytest.mark.parametrize(("args", "expected"), [(("usage",), 2), (("keys", "list"), 1)])
def test_the_clis_show_no_password_from_the_query(command, absent_database, args, expected, caplog):
    status, out, err = command(pg_query_url(absent_database), *args)
    assert status == expected and out == "" and err.count("\n") == 1, err
    assert f"postgresql://{PG.username}@{PG_AT}/{absent_database}:" in err  # which database, still
    assert_hidden(err + everything_logged(caplog), QUERY_PASSWORD)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn exits its thread
def test_a_database_url_that_does_not_parse_stops_the_gateway_and_says_why(gateway, caplog):
    """No retry can make it work (unlike an unreachable database): startup stops, in one line."""
    [url] = PG_UNPARSED_URLS[0].values
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GatewayStartupError) as caught:
        gateway("providers: []\n", database_url=url)
    assert "MODELBROKER_DATABASE_URL does not parse as a database URL" in str(caught.value)
    told = everything_logged(caplog) + str(caught.value)
    assert "MODELBROKER_DATABASE_URL does not parse as a database URL" in told
    assert_hidden(told, secret_of(url))


def test_the_gateway_logs_no_database_password(gateway, absent_database, caplog):
    url = pg_query_url(absent_database)
    caplog.set_level(logging.DEBUG)
    gw = gateway("providers: []\n", database_url=url)
    health = gw.get("/health")
    deadline = time.monotonic() + 5
    while "client keys: cannot read the key table" not in (told := everything_logged(caplog)):
        assert time.monotonic() < deadline, told
        time.sleep(0.02)
    assert "ledger: cannot reach" in told
    assert_hidden(health.text + told + repr(gw.log_lines()), secret_of(url))
