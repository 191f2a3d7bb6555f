"""The API's browsable documentation at /docs: Swagger UI served by this server itself.

FastAPI's own /docs page loads Swagger UI from a CDN and starts it with an inline script:
offline it is blank, and the web interface's Content-Security-Policy (own origin only,
no inline script or style) would block it anyway. This page takes Swagger UI's files
from the `fastapi-offline` package (installed by the live extra; no download at run
time) and serves them under /docs/, with a start-up script that is a file too, so it
works offline and under the same CSP as every other page:

    GET /docs                        the page (HTML)
    GET /docs/swagger-ui-bundle.js   Swagger UI (from fastapi-offline)
    GET /docs/swagger-ui.css         its style sheet, with its inline images (data:
                                     URLs, which the CSP's img-src refuses) moved to
    GET /docs/image-N.EXT            these files
    GET /docs/start.js               SwaggerUIBundle({url: "../openapi.json", ...})

There is no /redoc: ReDoc writes its styles inline, which the CSP refuses.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import pathlib
import re
import urllib.parse

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response

DOCS = "/docs"
CSS_TYPE = "text/css; charset=utf-8"
JS_TYPE = "text/javascript; charset=utf-8"
# A CSS url(): double-quoted, single-quoted (escapes allowed) or bare.
_URL = re.compile(r"""url\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^"')\s]*))\s*\)""",
                  re.S)
_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})\s?|(\n)|(.))", re.S)
_EXTENSIONS = {"image/svg+xml": "svg", "image/png": "png", "image/jpeg": "jpeg",
               "image/gif": "gif"}
_IMAGE_TYPES = {ext: media for media, ext in _EXTENSIONS.items()}

START = """\
// Starts Swagger UI on this server's OpenAPI document (a file, not an inline script:
// the Content-Security-Policy allows no inline script).
"use strict";
window.ui = SwaggerUIBundle({
  url: new URL("../openapi.json", document.currentScript.src).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
});
"""

PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - API documentation</title>
<link rel="icon" href="favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/start.js"></script>
</body>
</html>
"""

MISSING = """\
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title} - API documentation</title></head>
<body>
<h1>API documentation</h1>
<p>The browsable documentation needs the <code>fastapi-offline</code> package (Swagger UI's
files): <code>pip install -e ".[live]"</code>. The OpenAPI document itself is at
<a href="openapi.json">/openapi.json</a>.</p>
</body>
</html>
"""


def assets_folder() -> pathlib.Path | None:
    """fastapi-offline's static folder (Swagger UI's files), or None without it."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = pathlib.Path(spec.origin).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _css_unescape(text: str) -> str:
    """A CSS string's value: escapes (\\", \\HEX, an escaped newline) resolved."""

    def one(match: re.Match) -> str:
        code, newline, char = match.groups()
        if code is not None:
            return chr(int(code, 16)) if int(code, 16) <= 0x10FFFF else "\ufffd"
        return "" if newline is not None else char

    return _CSS_ESCAPE.sub(one, text)


@functools.lru_cache(maxsize=1)
def _stylesheet(folder: pathlib.Path) -> tuple[str, tuple[bytes, ...], tuple[str, ...]]:
    """Swagger UI's CSS with each data: URL replaced by image-N.EXT, and the images."""
    images: list[bytes] = []
    names: list[str] = []

    def move(match: re.Match) -> str:
        quoted = match.group(1) if match.group(1) is not None else match.group(2)
        value = _css_unescape(quoted) if quoted is not None else match.group(3)
        if not value.startswith("data:") or "," not in value:
            return match.group(0)
        head, data = value[5:].split(",", 1)
        media, *params = head.split(";")
        if media.lower() not in _EXTENSIONS:
            return match.group(0)
        payload = (base64.b64decode(data) if "base64" in params
                   else urllib.parse.unquote_to_bytes(data))
        name = f"image-{len(images)}.{_EXTENSIONS[media.lower()]}"
        images.append(payload)
        names.append(name)
        return f'url("{name}")'

    text = _URL.sub(move, (folder / "swagger-ui.css").read_text(encoding="utf-8"))
    return text, tuple(images), tuple(names)


def install(app: FastAPI) -> None:
    """Adds /docs and its files to `app` (created with docs_url=None, redoc_url=None)."""
    title = app.title

    @app.get(DOCS, include_in_schema=False)
    def docs_page() -> HTMLResponse:
        if assets_folder() is None:
            return HTMLResponse(MISSING.format(title=title))
        return HTMLResponse(PAGE.format(title=title),
                            headers={"Cache-Control": "no-cache"})

    @app.get(DOCS + "/{name}", include_in_schema=False)
    def docs_file(name: str) -> Response:
        folder = assets_folder()
        if folder is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        cache = {"Cache-Control": "no-cache"}
        if name == "start.js":
            return Response(START, media_type=JS_TYPE, headers=cache)
        if name == "swagger-ui-bundle.js":
            return FileResponse(folder / name, media_type=JS_TYPE, headers=cache)
        css, images, names = _stylesheet(folder)
        if name == "swagger-ui.css":
            return Response(css, media_type=CSS_TYPE, headers=cache)
        if name in names:
            return Response(images[names.index(name)],
                            media_type=_IMAGE_TYPES[name.rsplit(".", 1)[1]], headers=cache)
        return Response("Not Found", status_code=404, media_type="text/plain")
