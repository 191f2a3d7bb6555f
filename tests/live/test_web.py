"""The web interface (tlc_jax/live/web, served by webui.mount_web): its files and headers,
then the pages in a real headless browser (Debian's chromium driven by Playwright)
against the API served by uvicorn, on SQLite and on a real PostgreSQL server.

The browser test needs `chromium` (apt-get install chromium) and `playwright` (pip; no
`playwright install`: the system browser is used). Without them it is skipped on a
developer's machine and fails under CI (the CI environment variable set)."""

import asyncio
import io
import os
import pathlib
import re
import time
import urllib.parse

import httpx
import sqlalchemy as sa
import pytest

from tlc_jax.live import api as API
from tlc_jax.live import apikeys as K
from tlc_jax.live import db as DB
from tlc_jax.live import registry as R
from tlc_jax.live import webui

from helpers import ROOT as REPO
from live_helpers import Server

CHROMIUM = os.environ.get("TLC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SECRET = "hunter2-camera-password"
ODD = 'cam <img src=x onerror=alert(1)> "river" & co'  # A name that is also markup.
TIMEOUT_MS = 10_000


def artifacts_dir() -> pathlib.Path:
    folder = pathlib.Path(os.environ.get("TLC_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def require_browser():
    """Playwright's sync API and the chromium executable, or skip (fail under CI)."""
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append('the playwright package (pip install -e ".[test-live]")')
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"chromium at {CHROMIUM} (apt-get install chromium, or set "
                       f"TLC_CHROMIUM)")
    if missing:
        message = "The browser test needs " + " and ".join(missing) + "."
        if os.environ.get("CI"):
            pytest.fail(message + " CI must run it.")
        pytest.skip(message)
    return sync_playwright


def jpeg(colour, size=(64, 48)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG", quality=80)
    return out.getvalue()


# ---------------------------------------------------------------------------- files


@pytest.fixture
def sqlite_db(tmp_path):
    database = DB.open_database(f"sqlite:///{tmp_path / 'live.db'}")
    yield database
    database.dispose()


def asgi_get(app, *paths):
    async def fetch():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://web.test") as client:
            return [await client.get(p) for p in paths]

    return asyncio.run(fetch())


def test_files_are_served_with_types_and_security_headers(sqlite_db, tmp_path):
    app = webui.mount_web(API.create_app(sqlite_db, frames_root=tmp_path))
    paths = ["/", "/index.html", "/app.js", "/style.css", "/favicon.svg", "/api/v1/health",
             "/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/start.js",
             "/nothing.js", "/../pyproject.toml", "/api/v1/no-such-endpoint",
             "/docs/nothing.js", "/redoc"]
    got = dict(zip(paths, asgi_get(app, *paths)))
    for path, kind in (("/", "text/html"), ("/index.html", "text/html"),
                       ("/app.js", "text/javascript"), ("/style.css", "text/css"),
                       ("/favicon.svg", "image/svg+xml"), ("/docs", "text/html"),
                       ("/docs/swagger-ui-bundle.js", "text/javascript"),
                       ("/docs/swagger-ui.css", "text/css"),
                       ("/docs/start.js", "text/javascript")):
        response = got[path]
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind), path
        csp = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'" and directives["object-src"] == "'none'"
        assert "'unsafe-inline'" not in csp and "http" not in csp and "*" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert got["/api/v1/health"].json()["status"] == "ok"
    assert got["/api/v1/health"].headers["x-content-type-options"] == "nosniff"
    # The API documentation: Swagger UI from local files, under the same policy (issue
    # 14, item 14: it came from a CDN, blank offline, with an inline script).
    docs = got["/docs"].text
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", docs)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=", docs)
    css = got["/docs/swagger-ui.css"].text
    assert "data:" not in css and not re.search(r"url\(\s*[\"']?(https?:)?//|@import", css)
    for image in re.findall(r'url\("(image-\d+\.\w+)"\)', css):
        (response,) = asgi_get(app, "/docs/" + image)
        assert response.status_code == 200 and response.content, image
    for path in ("/nothing.js", "/../pyproject.toml", "/api/v1/no-such-endpoint",
                 "/docs/nothing.js", "/redoc"):
        assert got[path].status_code == 404, path

    # No inline script or style anywhere (the CSP would block it), no external asset,
    # and no HTML parsing of strings in the scripts.
    web = pathlib.Path(webui.WEB_ROOT)
    index = (web / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", index)
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", index)
    for path in web.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text()
            assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), path
            assert not re.search(r"url\(\s*[\"']?(https?:)?//|@import", text), path
        if path.suffix == ".js":
            text = path.read_text()
            sinks = re.findall(r"\.(?:inner|outer)HTML\s*\+?=|insertAdjacentHTML|document\.write"
                               r"|\beval\(|new Function|setAttribute\(\s*[\"']style|"
                               r"createContextualFragment|DOMParser", text)
            assert not sinks, (path.name, sinks)
            for module in re.findall(r"from \"\./([\w.]+)\"", text):
                assert (web / module).is_file(), (path.name, module)


# ---------------------------------------------------------------------------- browser


class Scene:
    """Devices around Lafayette (one inactive, one without coordinates, one named like
    markup) and one in Paris; a model version; frames with predictions and their JPEG
    files under root."""

    def __init__(self, database, root: pathlib.Path):
        self.db, self.root, self.now = database, root, time.time()
        specs = [
            R.DeviceSpec("cam-north", "http_snapshot", {"url": "http://192.0.2.7/snap.jpg"},
                         {"username": "admin", "password": SECRET},
                         latitude=40.4300, longitude=-86.9100, city="Lafayette",
                         region="Indiana", country="US", sector="traffic"),
            R.DeviceSpec(ODD, "folder", {"path": "/tmp"}, latitude=40.4150,
                         longitude=-86.8950, city="Lafayette", country="US"),
            R.DeviceSpec("cam-east", "folder", {"path": "/tmp"}, latitude=40.4200,
                         longitude=-86.8500, city="Lafayette", country="US", active=False),
            R.DeviceSpec("cam-nowhere", "folder", {"path": "/tmp"}, city="Lafayette"),
            R.DeviceSpec("paris-1", "folder", {"path": "/tmp"}, latitude=48.85,
                         longitude=2.35, city="Paris", country="FR"),
        ]
        with database.transaction() as session:
            R.upsert(session, specs)
            model = DB.ModelVersionRow(name="tiny", run_dir="/runs/tiny", step=7,
                                       class_names=["bicycle", "car", "person", "truck"])
            session.add(model)
            session.flush()
            self.model_id = model.id
        self.frames = [
            self.add_frame("cam-north", self.now - 900, "car", 0.75, "#c03030"),
            self.add_frame("cam-north", self.now - 600, "person", 0.60, "#30a030"),
            self.add_frame("cam-north", self.now - 300, "car", 0.80, "#3030c0"),
            self.add_frame(ODD, self.now - 200, "bicycle", 0.55, "#c0c030"),
        ]

    def add_frame(self, device, captured_at, top, probability, colour) -> int:
        data = jpeg(colour)
        with self.db.transaction() as session:
            device_id = session.scalar(
                sa.select(DB.DeviceRow.id).where(DB.DeviceRow.name == device))
            path = f"{device_id}/{captured_at:.3f}.jpg"
            (self.root / str(device_id)).mkdir(parents=True, exist_ok=True)
            (self.root / path).write_bytes(data)
            frame = DB.FrameRow(device_id=device_id, captured_at=captured_at, path=path,
                                sha256="0" * 64, size=len(data), width=64, height=48)
            session.add(frame)
            session.flush()
            rest = round(1 - probability, 6)
            session.add(DB.PredictionRow(
                frame_id=frame.id, model_version_id=self.model_id, top_class=top,
                top_probability=probability,
                topk=[[top, probability], ["bicycle" if top != "bicycle" else "car", rest]]))
            return frame.id


def health():
    return {"time": time.time(), "uptime_s": 3725.0, "devices_polled": 4,
            "failing": {"cam-east": "timeout after 10 s (ConnectTimeout)"},
            "queues": {"ingest": 2, "analyzer": 1},
            "counters": {"stored": 120, "predictions": 118, "errors": 9,
                         "dropped:ingest": 3, "dropped:analyzer": 0},
            "frames_per_s": 0.032, "predictions_per_s": 0.031,
            "latency_s": {"p50": 0.12, "p95": 0.4, "max": 1.5, "n": 118},
            "model_version_id": 1}


@pytest.mark.slow
def test_pages_in_a_real_browser(db_url, tmp_path):
    sync_playwright = require_browser()
    from playwright.sync_api import expect

    backend = db_url.split(":")[0].split("+")[0]
    database = DB.open_database(db_url)
    root = tmp_path / "frames"
    root.mkdir()
    scene = Scene(database, root)
    with database.transaction() as session:
        key = K.create_key(session, "browser", ["read"])
    # Reads need a key here: the page must show the 401, then use the key box.
    # Two live processes report their health to the database; the API combines them
    # as `python -m tlc_jax.live serve` does.
    from tlc_jax.live import leases

    leases.publish_health(database, "fetch-1:101:aa", "runtime", health())
    leases.publish_health(database, "classify-1:102:bb", "analyzer", {
        **health(), "failing": {}, "counters": {"predictions": 5}})

    def fleet():
        with database.session() as session:
            return leases.fleet_health(session)

    app = webui.mount_web(API.create_app(database, frames_root=root, health=fleet,
                                         read_requires_key=True))
    server = Server(app)
    out = artifacts_dir()
    shots = {name: out / f"web-{name}-{backend}.png" for name in ("search", "device", "ops")}
    for path in shots.values():
        path.unlink(missing_ok=True)
    page_errors, csp_violations = [], []
    expect.set_options(timeout=TIMEOUT_MS)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("dialog", lambda d: page_errors.append(f"dialog: {d.message}"))
            page.on("console", lambda m: csp_violations.append(m.text)
                    if "Content Security Policy" in m.text else None)
            main = page.locator("main")

            # No key yet: the 401 is shown in the page.
            page.goto(server.url + "/")
            expect(main.locator(".errors")).to_contain_text("401 Unauthorized")
            expect(main.locator(".errors")).to_contain_text("API key")

            # The key box: saved in localStorage, the search runs again and succeeds.
            page.locator("#key-box summary").click()
            page.locator("#key-input").fill(key)
            page.locator("#key-save").click()
            expect(page.locator("#key-state")).to_have_text("set")
            expect(main.locator("#results tbody tr")).to_have_count(5)
            expect(main.locator(".errors")).to_be_empty()
            assert page.evaluate("Object.values(localStorage)") == [key]

            # Search by city: the list and the map.
            page.select_option("#q-field", "city")
            page.locator("#q-place").fill("lafayette")
            page.locator("#q-submit").click()
            expect(page).to_have_url(re.compile(r"#/search\?city=lafayette$"))
            rows = main.locator("#results tbody tr")
            expect(rows).to_have_count(4)
            assert sorted(main.locator("#results tbody th").all_inner_texts()) == sorted(
                ["cam-north", ODD, "cam-east", "cam-nowhere"])
            assert page.locator("img[src=x]").count() == 0  # The odd name is text, not markup.
            expect(rows.filter(has_text="cam-north").locator("td.latest")).to_contain_text(
                "car")
            expect(rows.filter(has_text="cam-nowhere").locator("td.latest")).to_contain_text(
                "no frames yet")
            points = page.locator("#map svg.map a.point")
            expect(points).to_have_count(3)
            assert sorted(points.evaluate_all("ps => ps.map(p => p.dataset.name)")) == sorted(
                ["cam-north", ODD, "cam-east"])
            expect(page.locator("#map .map-note")).to_contain_text("1 without coordinates")
            expect(page.locator("#map svg.map .scale-label")).to_have_count(1)

            # Search by coordinates and radius: distances, nearest first, the circle.
            page.select_option("#q-field", "text")
            page.locator("#q-place").fill("")
            page.locator("#q-near").fill("40.4237, -86.9212")
            page.locator("#q-km").fill("3")
            page.locator("#q-submit").click()
            expect(rows).to_have_count(2)
            assert main.locator("#results tbody th").all_inner_texts() == ["cam-north", ODD]
            expect(main.locator("#results thead")).to_contain_text("Distance")
            expect(rows.first.locator("td.num")).to_have_text(re.compile(r"^1\.\d\d km$"))
            expect(page.locator("#map polygon.search-circle")).to_have_count(1)
            expect(points).to_have_count(2)

            # Clicking an empty place of the map picks it as the search point.
            page.locator("#map svg.map").click(position={"x": 15, "y": 15})
            expect(page.locator("#pick-note")).to_contain_text("Search point set")
            lat, lon = (float(v) for v in page.locator("#q-near").input_value().split(","))
            assert 40.4237 < lat < 40.5 and -87.1 < lon < -86.9212, (lat, lon)  # Top left.
            page.screenshot(path=str(shots["search"]), full_page=True)

            # Open a device from the map with the keyboard.
            points.filter(has=page.locator("title", has_text="cam-north")).focus()
            page.keyboard.press("Enter")
            expect(page).to_have_url(re.compile(r"#/device/cam-north$"))
            expect(main.locator("h1")).to_have_text("cam-north")
            facts = main.locator("#device-facts")
            expect(facts).to_contain_text("Lafayette, Indiana, US")
            expect(facts).to_contain_text("stored (never shown)")
            frames = main.locator("#frames figure.frame")
            expect(frames).to_have_count(3)
            newest = main.locator("#frames figure.newest")
            expect(newest).to_have_attribute("data-frame-id", str(scene.frames[2]))
            page.wait_for_function(
                "() => [...document.querySelectorAll('#frames figure img')].every("
                "i => i.complete && i.naturalWidth === 64)")
            expect(newest.locator(".topk li").first).to_contain_text("car")
            expect(newest.locator(".topk li").first).to_contain_text("80.0%")
            assert newest.locator("meter").first.get_attribute("value") == "0.8"
            expect(newest).to_contain_text("tiny (step 7")
            legend = main.locator("#histogram .legend")
            expect(legend.locator("li")).to_have_count(2)  # car, person
            expect(main.locator("#histogram svg rect.segment").first).to_be_visible()
            assert SECRET not in page.content()

            # A new frame and prediction in the database appear without reloading.
            started = time.monotonic()
            new_id = scene.add_frame("cam-north", time.time(), "truck", 0.9, "#f0a000")
            fresh = main.locator(f'#frames figure[data-frame-id="{new_id}"]')
            expect(fresh).to_be_visible()
            appeared_s = time.monotonic() - started
            expect(newest).to_have_attribute("data-frame-id", str(new_id))
            expect(fresh.locator(".topk li").first).to_contain_text("truck")
            expect(fresh.locator(".topk li").first).to_contain_text("90.0%")
            page.wait_for_function(
                f"() => {{ const i = document.querySelector("
                f"'#frames figure[data-frame-id=\"{new_id}\"] img');"
                f" return i && i.complete && i.naturalWidth === 64; }}")
            expect(frames).to_have_count(4)
            expect(legend).to_contain_text("truck")
            assert appeared_s < 8, appeared_s
            page.screenshot(path=str(shots["device"]), full_page=True)

            # The markup-like device's page shows its name as text.
            page.goto(f"{server.url}/#/device/{urllib.parse.quote(ODD, safe='')}")
            expect(main.locator("h1")).to_have_text(ODD)
            expect(main.locator("#frames figure.frame")).to_have_count(1)
            assert page.locator("img[src=x]").count() == 0

            # Operations: the health callable's failing device and drops.
            page.get_by_role("link", name="Operations").click()
            expect(page.locator("#health-status")).to_have_text("ok")
            failing = main.locator("#failing")
            expect(failing).to_contain_text("cam-east")
            expect(failing).to_contain_text("timeout after 10 s (ConnectTimeout)")
            expect(main.locator('#drops tr[data-counter="dropped:ingest"]')).to_contain_text(
                "3")
            expect(main.locator("#runtime-facts")).to_contain_text("1 h 2 min")
            workers = main.locator("#workers")
            expect(workers.locator("tbody tr")).to_have_count(2)
            expect(workers).to_contain_text("fetch-1:101:aa")
            expect(workers).to_contain_text("analyzer")
            expect(main.locator('#counters tr[data-counter="predictions"]')).to_contain_text(
                "123")
            expect(main.locator("#db-facts")).to_contain_text(backend)
            page.screenshot(path=str(shots["ops"]), full_page=True)
            browser.close()
    finally:
        server.stop()
        database.dispose()
    assert not page_errors, page_errors
    assert not csp_violations, csp_violations
    for path in shots.values():
        assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_api_docs_work_offline_under_the_csp(sqlite_db, tmp_path):
    """Issue 14, item 14: /docs loaded Swagger UI from a CDN (blank offline) with an
    inline script. Now its files come from this server, under the site's CSP: the page
    renders every operation with every request outside the server refused, and "Try it
    out" reaches the API."""
    sync_playwright = require_browser()
    from playwright.sync_api import expect

    app = webui.mount_web(API.create_app(sqlite_db, frames_root=tmp_path))
    server = Server(app)
    shot = artifacts_dir() / "web-docs.png"
    shot.unlink(missing_ok=True)
    page_errors, console, outside = [], [], []
    expect.set_options(timeout=TIMEOUT_MS)

    def offline(route):  # As on a machine without internet access.
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", offline)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("console", lambda m: console.append(m.text)
                    if m.type in ("error", "warning") else None)
            page.goto(server.url + "/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text(
                "tlc_jax live API")
            expect(page.locator(".opblock")).to_have_count(len(API.routes()))
            health = page.locator("#operations-health-health_api_v1_health_get")
            health.locator(".opblock-summary").click()
            health.get_by_role("button", name="Try it out").click()
            health.get_by_role("button", name="Execute").click()
            status = health.locator(".live-responses-table .response .response-col_status")
            expect(status.first).to_have_text("200")
            expect(health.locator(".live-responses-table")).to_contain_text('"status": "ok"')
            page.screenshot(path=str(shot), full_page=False)
            browser.close()
    finally:
        server.stop()
    assert not outside, outside
    assert not page_errors, page_errors
    assert not console, console  # CSP violations are console errors.
    assert shot.stat().st_size > 1000
