"""Admin keys: who may call /admin/*, /dashboard, /usage and /metrics, with keys and without.

Every gateway here is real (uvicorn on a socket, the installed plugins, the ledger in
SQLite); httpx is the client. The table each test checks:

    route           no key   client key   admin key   no keys, this machine   no keys, elsewhere
    /admin/reload   401      403          200         200                     403
    /dashboard      401      403          200         200                     200
    /usage          401      own rows     all rows    all rows                all rows
    /metrics        401      403          200         200                     200   (MODELBROKER_METRICS_PUBLIC=true: 200 for all)
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import subprocess
import sys

import httpx
import pytest
from starlette.requests import Request

from modelbroker import APIError, Principal, hookimpl, require_admin
from modelbroker._plugins.manager import make_plugin_manager
from modelbroker._server.access import is_local
from modelbroker.plugins.keys.store import revoke_key
from modelbroker.plugins.storage.database import open_database
from modelbroker.testing import GatewayProcess

from .conftest import REPO_ROOT, add_key, keys_config, unique, wait_for

HELLO = [{"role": "user", "content": "hi"}]
#: The routes that need an admin key once keys exist: method, path.
ADMIN_ROUTES = [("POST", "/admin/reload"), ("GET", "/dashboard"), ("GET", "/metrics")]
ALL_ROUTES = [*ADMIN_ROUTES, ("GET", "/usage")]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def call(gw, method: str, path: str, key: str | None = None, **kwargs):
    headers = {**(bearer(key) if key else {}), **kwargs.pop("headers", {})}
    return gw.client.request(method, path, headers=headers, **kwargs)


def chat(gw, key: str | None) -> None:
    answer = gw.client.post("/v1/chat/completions", json={"messages": HELLO}, headers=bearer(key) if key else {})
    assert answer.status_code == 200, answer.text


def error_of(answer, status: int, code: str, kind: str) -> str:
    """The message of an error answer, after checking its status and OpenAI's error shape."""
    assert answer.status_code == status, (answer.request.url, answer.text)
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == (kind, code), error
    assert set(error) >= {"message", "type", "code", "param"}
    return error["message"]


@pytest.fixture
def keyed(gateway, provider, upstream, db_url):
    """A gateway with an admin key and two client keys: ``(gw, admin, alice, bob, names)``."""
    names = {role: unique(role) for role in ("ops", "alice", "bob")}
    admin = add_key(db_url, names["ops"], role="admin")
    alice, bob = add_key(db_url, names["alice"]), add_key(db_url, names["bob"])
    gw = gateway(keys_config(provider("a")), database_url=db_url)
    return gw, admin, alice, bob, names


def test_once_keys_exist_the_admin_routes_need_an_admin_key(keyed):
    gw, admin, alice, _, names = keyed
    for method, path in ALL_ROUTES:
        missing = call(gw, method, path)
        error_of(missing, 401, "missing_api_key", "authentication_error")
        assert missing.headers["www-authenticate"].startswith("Basic" if path == "/dashboard" else "Bearer")
        wrong = alice[:-1] + ("A" if alice[-1] != "A" else "B")
        error_of(call(gw, method, path, wrong), 401, "invalid_api_key", "authentication_error")
    for method, path in ADMIN_ROUTES:
        message = error_of(call(gw, method, path, alice), 403, "admin_key_required", "permission_error")
        assert message.startswith(f"{path} needs an admin key; {names['alice']!r} is a client, not an admin")
        assert "--admin" in message
        assert call(gw, method, path, admin).status_code == 200, path
    assert call(gw, "GET", "/usage", alice).status_code == 200  # its own rows: the next test
    assert call(gw, "GET", "/usage", admin).status_code == 200
    assert call(gw, "GET", "/health").status_code == 200  # never guarded


def test_an_admin_key_also_calls_the_model_apis_and_is_refused_once_revoked(keyed, db_url):
    gw, admin, *_ = keyed
    assert gw.generate({"prompt": "hi"}, headers=bearer(admin)).status_code == 200
    chat(gw, admin)

    async def revoke() -> None:
        db = open_database(db_url)
        try:
            await revoke_key(db, keyed[4]["ops"])
        finally:
            await db.close()

    asyncio.run(revoke())
    wait_for(lambda: call(gw, "POST", "/admin/reload", admin).status_code == 401, "the revoked admin key refused")
    error_of(call(gw, "GET", "/dashboard", admin), 401, "revoked_api_key", "authentication_error")


def test_a_client_key_reads_only_its_own_usage(keyed):
    gw, admin, alice, bob, names = keyed
    for _ in range(2):
        chat(gw, alice)
    for _ in range(3):
        chat(gw, bob)
    assert gw.client.post("/v1/chat/completions", json={"messages": HELLO}).status_code == 401  # no client

    def usage(key: str, group_by: str = "client") -> dict:
        answer = call(gw, "GET", "/usage", key, params={"group_by": group_by})
        assert answer.status_code == 200, answer.text
        return answer.json()

    mine, theirs, everyone = usage(alice), usage(bob), usage(admin)
    assert (mine["client"], mine["totals"]["requests"]) == (names["alice"], 2)
    assert [g["key"] for g in mine["groups"]] == [names["alice"]]
    assert (theirs["client"], theirs["totals"]["requests"]) == (names["bob"], 3)
    assert [g["key"] for g in theirs["groups"]] == [names["bob"]]
    assert everyone["client"] is None
    assert everyone["totals"]["requests"] == 6 and everyone["totals"]["rejected"] == 1  # the 401 too
    assert {g["key"] for g in everyone["groups"]} == {names["alice"], names["bob"], None}
    assert mine["totals"]["rejected"] == 0  # another caller's refusal is not its own
    assert usage(alice, "provider")["totals"]["requests"] == 2  # every breakdown is scoped alike


def test_the_browser_gives_the_dashboard_and_its_data_the_key_as_a_password(keyed):
    """HTTP Basic carries a key on /dashboard and /usage only: a page elsewhere cannot make a browser
    send it to a route that changes something."""
    gw, admin, alice, _, _ = keyed
    assert call(gw, "GET", "/dashboard", auth=("anyone", admin)).status_code == 200
    assert call(gw, "GET", "/dashboard", auth=("", admin)).status_code == 200
    error_of(call(gw, "GET", "/dashboard", auth=("ops", alice)), 403, "admin_key_required", "permission_error")
    chat(gw, alice)
    assert call(gw, "GET", "/usage", auth=("ops", admin)).json()["totals"]["requests"] >= 1
    assert call(gw, "GET", "/usage", auth=("ops", alice)).json()["client"] is not None
    for method, path in [("POST", "/admin/reload"), ("GET", "/metrics"), ("GET", "/v1/models")]:
        error_of(call(gw, method, path, auth=("ops", admin)), 401, "missing_api_key", "authentication_error")
    garbled = {"authorization": "Basic not-base64!"}
    error_of(call(gw, "GET", "/dashboard", headers=garbled), 401, "missing_api_key", "authentication_error")


@pytest.mark.parametrize("public", [False, True])
def test_metrics_public(gateway, provider, upstream, db_url, public):
    admin, client = add_key(db_url, unique("ops"), role="admin"), add_key(db_url, unique("team"))
    gw = gateway(keys_config(provider("a")), database_url=db_url, metrics_public=public)
    if public:
        for key in (None, client, admin):
            assert call(gw, "GET", "/metrics", key).status_code == 200
    else:
        error_of(call(gw, "GET", "/metrics"), 401, "missing_api_key", "authentication_error")
        error_of(call(gw, "GET", "/metrics", client), 403, "admin_key_required", "permission_error")
        assert call(gw, "GET", "/metrics", admin).status_code == 200
    error_of(call(gw, "GET", "/dashboard", client), 403, "admin_key_required", "permission_error")  # only /metrics


def test_with_no_key_admin_answers_only_this_machine(gateway, provider, upstream, db_url, caplog):
    caplog.set_level(logging.WARNING, logger="modelbroker")
    gw = gateway(keys_config(provider("a")), database_url=db_url)
    warning = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("client keys:"))
    assert "the gateway is open" in warning and "/usage, /dashboard and /metrics" in warning
    assert "/admin/* answers only requests from this machine (127.0.0.1, ::1)" in warning

    for method, path in ALL_ROUTES:
        assert call(gw, method, path).status_code == 200, path  # from 127.0.0.1
    for proxied in ({"x-forwarded-for": "127.0.0.1"}, {"x-forwarded-for": "203.0.113.9"},
                    {"forwarded": "for=127.0.0.1"}, {"x-real-ip": "127.0.0.1"}, {"origin": "http://evil.example"}):
        message = error_of(call(gw, "POST", "/admin/reload", headers=proxied), 403, "admin_local_only",
                           "permission_error")
        assert "only requests from this machine" in message and "--admin" in message
        for method, path in ALL_ROUTES[1:]:
            assert call(gw, method, path, headers=proxied).status_code == 200, (path, proxied)


def non_loopback_address(family: socket.AddressFamily, probe: str) -> str | None:
    """This machine's own address toward ``probe`` (no packet is sent), or None without a route."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((probe, 53))
        except OSError:
            return None
        address = sock.getsockname()[0]
    return None if address in ("127.0.0.1", "::1") else address


@pytest.mark.parametrize("bind, family, probe", [("0.0.0.0", socket.AF_INET, "192.0.2.1"),  # noqa: S104
                                                 ("::", socket.AF_INET6, "2001:db8::1")])
def test_with_no_key_admin_refuses_another_address(provider, upstream, write_config, subprocess_env, tmp_path,
                                                   bind, family, probe):
    """``modelbroker serve`` listening on every address, called on this machine's own non-loopback
    address: the peer is not loopback, so /admin/reload is refused and the open routes answer."""
    address = non_loopback_address(family, probe)
    if address is None:
        pytest.skip(f"this machine has no non-loopback {family.name} address with a route; "
                    "test_is_local covers the decision")
    config = write_config(keys_config(provider("a")))
    env = subprocess_env(MODELBROKER_HOST=bind, MODELBROKER_DATABASE_URL=f"sqlite:///{tmp_path / 'keys.db'}")
    gw = GatewayProcess(config, env=env, cwd=REPO_ROOT)
    loopback = "127.0.0.1" if family == socket.AF_INET else "[::1]"  # asyncio's "::" is IPv6 only
    gw.url = f"http://{loopback}:{gw.port}"
    try:
        gw.wait_ready()
        host = f"[{address}]" if ":" in address else address
        with httpx.Client(base_url=f"http://{host}:{gw.port}", timeout=10) as remote:
            message = error_of(remote.post("/admin/reload"), 403, "admin_local_only", "permission_error")
            assert message.startswith("/admin/reload answers only requests from this machine")
            for method, path in ALL_ROUTES[1:]:
                assert remote.request(method, path).status_code == 200, path
        assert httpx.post(gw.url + "/admin/reload", timeout=10).status_code == 200
    finally:
        gw.stop()


def scope(client: tuple[str, int] | None, headers: list[tuple[bytes, bytes]] | None = None, **state) -> dict:
    return {"type": "http", "method": "POST", "path": "/admin/reload", "client": client,
            "headers": headers or [], "state": state}


@pytest.mark.parametrize("client, local", [
    (("127.0.0.1", 5000), True), (("127.8.9.10", 5000), True), (("::1", 5000), True),
    (("::ffff:127.0.0.1", 5000), True), (("192.0.2.2", 5000), False), (("::ffff:192.0.2.2", 5000), False),
    (("fd00::2", 5000), False), (("10.0.0.1", 5000), False), (None, False), (("", 0), False),
    (("not-an-address", 1), False),
])
def test_is_local(client, local):
    assert is_local(scope(client)) is local
    assert is_local(scope(client, [(b"x-forwarded-for", b"127.0.0.1")])) is False
    assert is_local(scope(client, [(b"origin", b"http://127.0.0.1:8000")])) is False


def test_require_admin_decides_from_the_principal():
    def decide(principal=None, client=("192.0.2.2", 1), **options):
        state = {"principal": principal} if principal is not None else {}
        return require_admin(Request(scope(client, **state)), **options)

    assert decide() is None  # no key configured: open
    with pytest.raises(APIError) as refused:
        decide(local_when_open=True)
    assert (refused.value.status, refused.value.code) == (403, "admin_local_only")
    assert decide(client=("127.0.0.1", 1), local_when_open=True) is None
    boss = Principal("boss", role="admin")
    assert decide(boss, local_when_open=True) is boss
    with pytest.raises(APIError) as refused:
        decide(Principal("alice"), client=("127.0.0.1", 1), local_when_open=True)  # a key, even from here
    assert (refused.value.status, refused.value.code) == (403, "admin_key_required")


class HeaderSSO:
    """A plugin of the user's own: a proxy in front vouches for ``x-sso-user`` and ``x-sso-admin``."""

    @hookimpl
    def authenticate(self, headers):
        user = headers.get("x-sso-user")
        if user is None:
            return None
        return self._principal(Principal(user, role="admin" if headers.get("x-sso-admin") else "client"))

    async def _principal(self, principal: Principal) -> Principal:
        return principal


def test_a_plugins_principal_carries_the_role(gateway, provider, upstream, db_url):
    add_key(db_url, unique("team"))
    pm = make_plugin_manager()
    pm.register(HeaderSSO(), name="sso")
    gw = gateway(keys_config(provider("a")), database_url=db_url, pm=pm)
    user = {"x-sso-user": "carol"}
    error_of(call(gw, "POST", "/admin/reload", headers=user), 403, "admin_key_required", "permission_error")
    assert call(gw, "POST", "/admin/reload", headers={**user, "x-sso-admin": "1"}).status_code == 200


def test_no_key_is_logged_or_answered(keyed, caplog):
    caplog.set_level(logging.DEBUG)
    gw, admin, alice, _, _ = keyed
    basic = base64.b64encode(f"ops:{admin}".encode()).decode()
    for method, path in ALL_ROUTES:
        for key in (admin, alice, alice + "x"):
            call(gw, method, path, key)
        call(gw, method, path, headers={"authorization": f"Basic {basic}"})
    seen = "".join(repr(r.headers) + r.text for r in gw.responses) + caplog.text
    answers = [call(gw, m, p, k) for m, p in ALL_ROUTES for k in (admin, alice)]
    seen += "".join(repr(a.headers) + a.text for a in answers)
    gw.stop()
    seen += gw.log_file.read_text(encoding="utf-8")
    for secret in (admin, alice, basic):
        assert secret not in seen and secret[11:] not in seen


def test_the_cli_makes_admin_keys_and_lists_the_role(cli):
    made = cli("create", "--name", "ops", "--admin")
    assert made.returncode == 0, made.stderr
    assert made.stderr.startswith("created admin key 'ops' (") and made.stdout.startswith("mb-")
    assert cli("create", "--name", "team").stderr.startswith("created client key 'team' (")
    listed = cli("list").stdout.splitlines()
    assert listed[0].split()[:3] == ["name", "role", "prefix"]
    roles = {line.split()[0]: line.split()[1] for line in listed[2:]}
    assert roles == {"ops": "admin", "team": "client"}
    revoked = cli("revoke", "ops")
    assert revoked.returncode == 0 and "no admin key is left" in revoked.stdout
    assert "no admin key" not in cli("create", "--name", "more").stdout


def test_modelbroker_reload_with_a_client_key_and_an_admin_key(gateway, provider, upstream, db_url):
    admin, client = add_key(db_url, unique("ops"), role="admin"), add_key(db_url, unique("team"))
    gw = gateway(keys_config(provider("a")), database_url=db_url)

    def reload(key: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "modelbroker", "reload", "--url", gw.url, "--key", key],
                              capture_output=True, text=True, timeout=30)

    refused = reload(client)
    assert refused.returncode == 1 and "/admin/reload needs an admin key" in refused.stderr
    done = reload(admin)
    assert done.returncode == 0 and done.stdout.startswith("reloaded "), done.stderr
    assert admin not in refused.stderr + done.stdout + done.stderr
