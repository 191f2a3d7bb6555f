"""The HTTP API's reference in markdown, generated from its OpenAPI document.

    python -m tlc_jax.live openapi --markdown > docs/API.md
    python -m tlc_jax.live openapi > openapi.json
    python -m tlc_jax.live openapi --read-requires-key   # a server with that option

A test regenerates docs/API.md and compares, so the reference never drifts from the
code.
"""

from __future__ import annotations

import json
from typing import Any


def openapi_spec(read_requires_key: bool = False) -> dict[str, Any]:
    """The document a server serves (`read_requires_key` as its --read-requires-key)."""
    from tlc_jax.live.api import create_app
    from tlc_jax.live.db import open_database

    database = open_database("sqlite://")  # The routes only; no data is touched.
    try:
        return create_app(database, read_requires_key=read_requires_key).openapi()
    finally:
        database.dispose()


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"] if s.get("type") != "null")
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " / ".join(json.dumps(v) for v in schema["enum"])
    return schema.get("type", "any")


def _limits(schema: dict[str, Any]) -> str:
    parts = []
    for s in [schema, *schema.get("anyOf", [])]:
        for key, text in (("minimum", ">= {}"), ("maximum", "<= {}"),
                          ("exclusiveMinimum", "> {}"), ("exclusiveMaximum", "< {}"),
                          ("minLength", "length >= {}"), ("maxLength", "length <= {}"),
                          ("pattern", "pattern `{}`")):
            if key in s:
                parts.append(text.format(s[key]))
    if "default" in schema and schema["default"] is not None:
        parts.append(f"default {json.dumps(schema['default'])}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def openapi_markdown(spec: dict[str, Any]) -> str:
    out = [f"# HTTP API reference ({spec['info']['title']} {spec['info']['version']})",
           "",
           "Generated from the OpenAPI document by `python -m tlc_jax.live openapi "
           "--markdown`; the live document is served at `/openapi.json` and browsable at "
           "`/docs` by `python -m tlc_jax.live serve`. Keys: `Authorization: Bearer "
           "<token>` or `X-API-Key: <token>` (create one with `python -m tlc_jax.live keys "
           "create NAME --scope write`). Writes need a key with the write (or admin) "
           "scope (admin for folder devices); reads need a read key only when the server "
           "runs with `--read-requires-key` (the document it serves says which: a read's "
           "key is optional, `{}` among its security requirements, unless it does). The "
           "key is checked before the body is read. Errors: 400 malformed request, 401 "
           "no / bad / revoked key, 403 wrong scope, 404 not found, 405 method not "
           "allowed (`Allow` lists the path's methods), 409 name taken, 413 body too "
           "large, 415 wrong media type, 422 invalid input, 429 rate limit (with "
           "Retry-After), 503 database unavailable (with Retry-After). A 422's body is "
           "`InputErrors`: one item per problem, whose `loc` names the field "
           "(`[\"body\", \"params\", \"url\"]`, `[\"query\", \"km\"]`) and `msg` says "
           "why; every other error's is `Error` (`detail`, one sentence). Each operation "
           "below lists every status it can answer.", ""]
    schemas = spec.get("components", {}).get("schemas", {})
    used: set[str] = set()
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            security = op.get("security") or []
            key = ("none" if not security else
                   "optional (read, with `--read-requires-key`)" if {} in security else
                   "read" if method == "get" else "write")
            out += [f"## `{method.upper()} {path}`", "",
                    f"{op.get('summary', '')}. Key: {key}.", ""]
            description = (op.get("description") or "").strip()
            if description:
                out += [_cell(description), ""]
            params = op.get("parameters", [])
            if params:
                out += ["| parameter | in | type | required | limits |",
                        "|---|---|---|---|---|"]
                for p in params:
                    s = p.get("schema", {})
                    out.append(f"| `{p['name']}` | {p['in']} | {_cell(_type(s))} | "
                               f"{'yes' if p.get('required') else 'no'} | "
                               f"{_cell(_limits(s))} |")
                out.append("")
            body = op.get("requestBody", {}).get("content", {})
            for content_type, media in body.items():
                name = _type(media.get("schema", {}))
                out += [f"Body: `{content_type}`" + (f", `{name}`" if name != "any" else
                                                      "") + ".", ""]
                if name in schemas:
                    used.add(name)
            out += ["| status | body | meaning |", "|---|---|---|"]
            for code, r in op.get("responses", {}).items():
                bodies = []
                for content_type, media in r.get("content", {}).items():
                    name = _type(media.get("schema", {}))
                    if name in schemas:
                        used.add(name)
                        bodies.append(f"`{name}`")
                    else:
                        bodies.append(f"`{content_type}`")
                headers = ", ".join(f"`{h}`" for h in r.get("headers", {}))
                meaning = r.get("description", "") + (f" Headers: {headers}." if headers
                                                       else "")
                out.append(f"| {code} | {', '.join(bodies) or 'none'} | {_cell(meaning)} |")
            out.append("")
    pending, seen = sorted(used), set()
    out += ["## Schemas", ""]
    while pending:
        name = pending.pop(0)
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        schema = schemas[name]
        out += [f"### `{name}`", ""]
        if schema.get("description"):
            out += [_cell(schema["description"]), ""]
        props = schema.get("properties", {})
        if props:
            required = set(schema.get("required", []))
            out += ["| field | type | required | limits |", "|---|---|---|---|"]
            for field, s in props.items():
                out.append(f"| `{field}` | {_cell(_type(s))} | "
                           f"{'yes' if field in required else 'no'} | "
                           f"{_cell(_limits(s))} |")
                for ref in [s, s.get("items", {}), *s.get("anyOf", [])]:
                    for r in (ref, ref.get("items", {})):
                        if "$ref" in r:
                            pending.append(_type(r))
            out.append("")
    return "\n".join(out).rstrip() + "\n"
