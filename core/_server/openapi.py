"""The API's own documentation: /docs and /redoc served without a CDN, and the OpenAPI
descriptions of routes that read their JSON body themselves."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, TypeAdapter

#: Where the pages' scripts, styles and favicon are served: the files of the fastapi-offline package.
DOCS_ASSETS = "/docs/assets"
#: The pages load nothing from another machine (what their scripts may do is left as it is): ReDoc
#: takes its footer's logo from cdn.redoc.ly, which the browser then does not ask for.
DOCS_POLICY = "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:; base-uri 'self'"


def serve_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc (ReDoc), whose scripts, styles and favicon come from the
    gateway itself (``DOCS_ASSETS``), so that both work with no Internet access: FastAPI's
    own pages load them from a CDN. ``app`` is made with ``docs_url=None, redoc_url=None``.

    They are routes like any other: once client keys exist, they need one, as /openapi.json does."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _kept_here(get_swagger_ui_html(
            openapi_url=root + app.openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url=root + app.swagger_ui_oauth2_redirect_url, swagger_ui_parameters=app.swagger_ui_parameters,
        ))

    @app.get(app.swagger_ui_oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _kept_here(get_redoc_html(openapi_url=root + app.openapi_url, title=f"{app.title} - ReDoc",
                                         redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                                         redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png", with_google_fonts=False))


def _kept_here(page: HTMLResponse) -> HTMLResponse:
    page.headers["content-security-policy"] = DOCS_POLICY
    return page


def request_body_schema(body: type[BaseModel] | TypeAdapter) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its JSON body itself: the body's JSON schema
    (a model's, or a TypeAdapter's) with its ``$defs`` inlined, so the schema stands alone
    inside /openapi.json."""
    schema = body.json_schema() if isinstance(body, TypeAdapter) else body.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}
