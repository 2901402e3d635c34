"""Who may call: open with no key; once a key exists, every route but /health needs one."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import openai
import pytest

from modelbroker._plugins.manager import make_plugin_manager
from modelbroker._routing.types import Principal
from modelbroker.hookspecs import hookimpl
from modelbroker.plugins.storage.database import open_database

from .conftest import add_key, keys_config, unique, wait_for

HELLO = [{"role": "user", "content": "hi"}]
TIMEOUT = 10.0


def sdk(gw, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=api_key, max_retries=0, timeout=TIMEOUT)


def chat(gw, key: str | None, **body):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return gw.client.post("/v1/chat/completions", json={"messages": HELLO, **body}, headers=headers)


def test_with_no_key_the_gateway_is_open(gateway, provider, upstream, db_url):
    gw = gateway(keys_config(provider("a")), database_url=db_url)
    assert chat(gw, None).status_code == 200
    assert sdk(gw, "anything").chat.completions.create(model="auto", messages=HELLO).choices
    assert gw.get("/usage").status_code == 200


def test_hook_authenticate(gateway, provider, upstream, db_url):
    """Missing, wrong and right keys, on every kind of route; /health stays open."""
    name = unique("alice")
    key = add_key(db_url, name)
    gw = gateway(keys_config(provider("a")), database_url=db_url)

    missing = chat(gw, None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    error = missing.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "missing_api_key"
    assert "Authorization: Bearer" in error["message"]
    wrong = chat(gw, key[:-1] + ("A" if key[-1] != "A" else "B"))
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_api_key")
    assert key[:-1] not in wrong.text
    assert chat(gw, key, model="a").status_code == 200

    with pytest.raises(openai.AuthenticationError):
        sdk(gw, "mb-not-a-key").chat.completions.create(model="auto", messages=HELLO)
    answer = sdk(gw, key).chat.completions.create(model="auto", messages=HELLO)
    assert answer.choices[0].message.content

    assert gw.get("/health").status_code == 200
    for method, path in [("GET", "/v1/models"), ("POST", "/generate"), ("GET", "/usage"),
                         ("GET", "/metrics"), ("POST", "/admin/reload"), ("GET", "/openapi.json")]:
        assert gw.client.request(method, path).status_code == 401, path
        assert gw.client.request(method, path, headers={"authorization": f"Bearer {key}"}).status_code != 401
    assert gw.get("/usage", headers={"authorization": f"Bearer {key}"}).status_code == 200
    assert gw.get("/dashboard").status_code == 401  # it needs an admin key: test_admin_keys.py

    seen = repr(upstream.requests) + "".join(repr(r.headers) + r.text for r in gw.responses)
    gw.stop()
    seen += gw.log_file.read_text(encoding="utf-8")
    assert upstream.requests and key not in seen and key[11:] not in seen  # never sent upstream, logged or echoed


class HeaderSSO:
    """A plugin of the user's own: a caller that a proxy in front vouched for (``x-sso-user``)
    comes in as that user; anyone else is left to the next plugin."""

    @hookimpl
    def authenticate(self, headers, path):
        user = headers.get("x-sso-user")
        return None if user is None else self._principal(user)

    async def _principal(self, user: str) -> Principal:
        return Principal(name=user)


def test_an_installed_authenticate_is_asked_before_the_keys(gateway, provider, upstream, db_url):
    """The built-in keys plugin answers ``authenticate`` last, so a plugin of one's own can
    let callers in (or refuse them) before it, and leave the rest to the keys."""
    key = add_key(db_url, unique("alice"))
    pm = make_plugin_manager()
    pm.register(HeaderSSO(), name="sso")
    gw = gateway(keys_config(provider("a")), database_url=db_url, pm=pm)
    headers = {"x-sso-user": "bob"}
    answer = gw.client.post("/v1/chat/completions", json={"messages": HELLO}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert chat(gw, None).status_code == 401  # no say from the SSO plugin: the keys decide
    assert chat(gw, key).status_code == 200


def test_the_client_in_the_ledger_is_the_key_name(gateway, provider, upstream, db_url):
    name = unique("bob")
    key = add_key(db_url, name)
    gw = gateway(keys_config(provider("a")), database_url=db_url)
    assert chat(gw, key, user="someone-else").status_code == 200
    usage = gw.get("/usage", params={"group_by": "client"}, headers={"authorization": f"Bearer {key}"}).json()
    assert [g["key"] for g in usage["groups"]] == [name]


def test_keys_made_and_revoked_by_the_cli_take_effect_within_the_refresh(gateway, provider, upstream, db_url, cli,
                                                                       cli_process):
    gw = gateway(keys_config(provider("a")), database_url=db_url)
    assert chat(gw, None).status_code == 200

    made = cli("create", "--name", "first")
    assert made.returncode == 0, made.stderr
    first = made.stdout.strip()
    wait_for(lambda: chat(gw, None).status_code == 401, "the gateway to close once a key exists")
    assert chat(gw, first).status_code == 200
    second = cli("create", "--name", "second").stdout.strip()
    wait_for(lambda: chat(gw, second).status_code == 200, "the second key to be accepted")

    revoked = cli_process("revoke", "first")  # another process, as in production
    assert revoked.returncode == 0, revoked.stderr
    wait_for(lambda: chat(gw, first).status_code == 401, "the revoked key to be refused")
    assert chat(gw, first).json()["error"] == {
        "message": "the client key has been revoked", "type": "authentication_error",
        "code": "revoked_api_key", "param": None}
    assert chat(gw, second).status_code == 200

    last = cli("revoke", "second")
    assert last.returncode == 1 and "--allow-open" in last.stderr  # the last key: refused unless asked
    assert cli("revoke", "second", "--allow-open").returncode == 0
    wait_for(lambda: chat(gw, None).status_code == 200, "the gateway to be open again")


def test_a_key_is_shown_once_and_only_its_hash_is_stored(cli, db_url, tmp_path):
    made = cli("create", "--name", "carol", "--budget-daily", "2.5", "--rpm", "60", "--models", "a,b")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("mb-") and len(key) == 3 + 43 and "\n" not in key
    assert "shown once" in made.stderr

    async def rows():
        db = open_database(db_url)
        try:
            async with db.reading() as conn:
                return [dict(r) for r in await conn.fetch("SELECT * FROM client_keys")]
        finally:
            await db.close()

    import asyncio

    (row,) = asyncio.run(rows())
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["prefix"] == key[:11] and row["name"] == "carol"
    assert (row["budget_daily"], row["rpm"], row["models"]) == (2.5, 60, '["a","b"]')
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("modelbroker.db*"))
    assert key.encode() not in stored and key[11:].encode() not in stored

    listed = cli("list")
    assert listed.returncode == 0
    assert "carol" in listed.stdout and key[:11] in listed.stdout and "2.5" in listed.stdout
    assert key not in listed.stdout and row["key_hash"] not in listed.stdout and key[11:20] not in listed.stdout


def test_the_cli_refuses_bad_input(cli):
    assert cli("create", "--name", "dup").returncode == 0
    taken = cli("create", "--name", "dup")
    assert taken.returncode == 1 and "exists and is not revoked" in taken.stderr and "mb-" not in taken.stdout
    assert "invalid key name" in cli("create", "--name", "a:b").stderr
    assert "must be above 0" in cli("create", "--name", "x", "--rpm", "0").stderr
    missing = cli("revoke", "nobody")
    assert missing.returncode == 1 and "no unrevoked key named 'nobody'" in missing.stderr


def test_the_cli_with_an_unsupported_database_says_so_in_one_line(cli, monkeypatch):
    monkeypatch.setenv("MODELBROKER_DATABASE_URL", "mysql://app:Zq7pW9@db/keys")
    ran = cli("list")
    assert ran.returncode == 2
    assert ran.stderr.startswith("modelbroker: MODELBROKER_DATABASE_URL: unsupported database 'mysql'"), ran.stderr
    assert "Traceback" not in ran.stderr and "Zq7pW9" not in ran.stderr


def test_modelbroker_reload_without_a_key_says_how_to_give_one(gateway, provider, upstream, db_url):
    add_key(db_url, unique("ops"))
    gw = gateway(keys_config(provider("a")), database_url=db_url)
    done = subprocess.run([sys.executable, "-m", "modelbroker", "reload", "--url", gw.url], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().endswith("; pass an admin key with --key or MODELBROKER_CLIENT_KEY"), done.stderr


def test_the_cli_with_a_database_folder_it_cannot_make_says_so_in_one_line(cli, monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MODELBROKER_DATABASE_URL", f"sqlite:///{tmp_path / 'a-file' / 'keys.db'}")
    ran = cli("list")
    assert ran.returncode == 1 and "Traceback" not in ran.stderr
    assert ran.stderr == (f"modelbroker: cannot make the folder for {tmp_path / 'a-file' / 'keys.db'} (File exists); "
                          "MODELBROKER_DATABASE_URL names the file\n")
