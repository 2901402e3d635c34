"""OpenAPI descriptions for routes that read their JSON body themselves."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter


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
