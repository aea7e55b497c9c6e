"""The OpenAPI document, made self-contained.

Request bodies described by hand (``openapi_extra``, for the endpoints that take JSON *or*
multipart) embed pydantic's ``model_json_schema()``, whose nested models sit in a local ``$defs``
and are referenced as ``#/$defs/Name``: a reference to the document's root, where nothing is.
``install`` moves every such ``$defs`` into ``components/schemas`` and points the references
there, so that clients and generators (schemathesis, openapi-generator) can resolve them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

LOCAL_PREFIX = "#/$defs/"
COMPONENTS_PREFIX = "#/components/schemas/"


def hoist_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """Move nested ``$defs`` into ``components/schemas`` (in place) and rewrite their refs."""
    components: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            defs = node.pop("$defs", None)
            if isinstance(defs, dict):
                for name, definition in defs.items():
                    walk(definition)
                    components.setdefault(name, definition)
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(LOCAL_PREFIX):
                node["$ref"] = COMPONENTS_PREFIX + ref[len(LOCAL_PREFIX) :]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema.get("paths", {}))
    return schema


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = hoist_defs(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
