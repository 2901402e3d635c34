"""/docs and /redoc: drawn by headless Chromium from a real gateway, with every file they need
served by the gateway (fastapi-offline's), and nothing asked of any other machine.

``tests/browser.py`` sends whatever a page asks beyond loopback to a recorder that answers 502,
and lists every URL the page requested; without Chromium the browser tests are skipped, or
fail in CI.
"""

from __future__ import annotations

import re

import pytest
from browser import Browser, chromium_path

from modelbroker import APIError, hookimpl
from modelbroker._config.messages import ConfigError
from modelbroker._config.settings import Settings
from modelbroker._routing.gateway import Gateway

PAGES = {"/docs": "Swagger UI", "/redoc": "ReDoc"}
#: The operations of the built-in surfaces, as the pages list them once they have drawn /openapi.json.
OPERATIONS = ("/v1/chat/completions", "/generate")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Browser(chromium_path(), tmp_path_factory.mktemp("chromium")) as browser:
        yield browser


@pytest.fixture
def gw(gateway, provider):
    return gateway({"providers": [provider("a")]}, log=False)


def drawn(operations: tuple[str, ...]) -> str:
    """JavaScript: true once the page's text names every one of ``operations``."""
    return " && ".join(f"document.body.textContent.includes({path!r})" for path in operations)


@pytest.mark.parametrize("path", PAGES)
def test_the_page_draws_the_operations_with_nothing_from_elsewhere(gw, browser, path, tmp_path):
    tab = browser.open(gw.url + path)
    assert tab.document()["status"] == 200
    tab.wait_for(drawn(OPERATIONS))
    tab.screenshot(tmp_path / "page.png")

    sent = [url for url in tab.requested if url not in tab.blocked]
    elsewhere = [url for url in sent if not url.startswith((gw.url + "/", "data:", f"blob:{gw.url}/"))]
    assert elsewhere == [], "the page asked another machine"
    assert f"{gw.url}/openapi.json" in sent
    assert any(url.startswith(f"{gw.url}/docs/assets/") for url in sent)
    assert set(tab.blocked.values()) <= {"csp"}
    assert browser.outside == [], "a request left this machine"
    assert (tmp_path / "page.png").stat().st_size > 20_000  # a drawn page, not a blank one


@pytest.mark.parametrize("path", PAGES)
def test_the_page_names_only_the_gateways_own_files(gw, path):
    page = gw.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'self' ")  # and nothing from elsewhere
    links = re.findall(r'(?:src|href|url)\s*[=:]\s*["\']([^"\']+)', page.text)
    assert links and all(link.startswith(("/docs/assets/", "/openapi.json")) for link in links), links
    assert not re.search(r"https?://(?!www\.w3\.org)", page.text), "a URL of another machine"
    for link in links:
        answer = gw.get(link)
        assert answer.status_code == 200, link
        assert answer.content, link


def test_an_unknown_file_under_the_assets_is_404(gw):
    assert gw.get("/docs/assets/nothing.js").status_code == 404


class BearerOnly:
    """An ``authenticate`` plugin: every route but /health needs ``Bearer sk-test``."""

    @hookimpl
    def authenticate(self, headers, path):
        if path == "/health" or headers.get("authorization") == "Bearer sk-test":
            return None
        return _refuse()


async def _refuse():
    raise APIError(401, "a key is needed", code="missing_api_key")


def test_with_keys_the_files_need_a_key_as_the_pages_do(gateway, provider):
    gw = gateway({"providers": [provider("a")]}, plugins={"bearer_only": BearerOnly()}, log=False)
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/favicon.png"):
        assert gw.get(path).status_code == 401, path
        assert gw.get(path, headers={"authorization": "Bearer sk-test"}).status_code == 200, path


class ClaimsAnAsset:
    """A surface that wants a path among the docs' files."""

    @hookimpl
    def register_surfaces(self, register):
        class Asset:
            paths = ("/docs/assets/mine",)

            def parse(self, body, incoming): ...

            def answer(self, request, routed): ...

            def stream(self, request, routed): ...

        register("asset", Asset)


def test_no_surface_may_take_a_path_under_docs(write_config):
    config = write_config("providers:\n  - {name: a, endpoint: 'http://127.0.0.1:9/v1/chat/completions', "
                          "model: a, cost_per_1k_tokens: 0}\n")
    with pytest.raises(ConfigError, match="path '/docs/assets/mine' is the gateway's own"):
        Gateway.from_settings(Settings(config=config, log_file=""), plugins={"mine": ClaimsAnAsset()})
