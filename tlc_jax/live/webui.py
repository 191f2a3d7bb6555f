"""The live system's web interface: static files (HTML, CSS, JavaScript modules) served
by the API's own process.

    app = mount_web(create_app(db, frames_root=..., health=service.health))

The pages (`tlc_jax/live/web/`, no build step, no external asset) call the API under
/api/v1 from the browser: device search with a map view, a device's latest frames and
predictions (auto-refreshing), and the operations status from /api/v1/health.

Every response gets `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`,
and a Content-Security-Policy that allows only the page's own origin: no inline script
or style, no other host. The API documentation at /docs lives under the same policy:
its Swagger UI is served from local files (tlc_jax.live.swagger). Images may also be
`blob:` URLs: the pages fetch frame images with the API key header (an <img> cannot
send one) and show them from the fetched bytes.
"""

from __future__ import annotations

import os
import pathlib

from fastapi import FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEB_ROOT = pathlib.Path(__file__).with_name("web")

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

# Set here rather than guessed from the platform's MIME tables (some map .js to
# text/plain, which browsers refuse for module scripts under nosniff).
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


class WebFiles(StaticFiles):
    """The web folder: known files only, with explicit content types; the browser
    revalidates them (ETag) on each load, so an upgrade is seen at once."""

    def file_response(self, full_path: os.PathLike | str, stat_result: os.stat_result,
                      scope: Scope, status_code: int = 200) -> Response:
        media_type = MEDIA_TYPES.get(pathlib.Path(full_path).suffix.lower())
        if media_type is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        response = super().file_response(full_path, stat_result, scope, status_code)
        if isinstance(response, FileResponse):
            response.media_type = media_type
            response.headers["content-type"] = media_type
        response.headers["cache-control"] = "no-cache"
        return response


class SecurityHeaders:
    """ASGI middleware adding the security headers to every HTTP response (a header the
    app set itself is kept)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = [(b"x-content-type-options", b"nosniff"),
                 (b"referrer-policy", b"no-referrer"),
                 (b"content-security-policy", CONTENT_SECURITY_POLICY.encode())]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_web(app: FastAPI) -> FastAPI:
    """Serves the web interface at / (index.html) next to the API, and adds the security
    headers. Call it after every other route is added: the mount at / answers every path
    no earlier route matched."""
    if not (WEB_ROOT / "index.html").is_file():
        raise FileNotFoundError(f"The web interface's files are missing from {WEB_ROOT}.")
    app.add_middleware(SecurityHeaders)
    app.mount("/", WebFiles(directory=WEB_ROOT, html=True), name="web")
    return app
