"""The live system's HTTP API (FastAPI): devices, frames, predictions, counts by area.

    app = create_app(open_database(url), frames_root="W/frames", health=service.health)
    uvicorn.run(app, host="127.0.0.1", port=8000)

Everything is under /api/v1; the OpenAPI document is at /openapi.json, its pages at
/docs. Endpoints:

    GET    /api/v1/health                       run-time status + database reachability
    GET    /api/v1/devices                      search (near=LAT,LON&km=, city, ...), paged
    POST   /api/v1/devices                      create (409 if the name exists)
    POST   /api/v1/devices/import               CSV body (text/csv), registry.import_csv rules
    GET    /api/v1/devices/{name}               one device
    PATCH  /api/v1/devices/{name}               partial edit (credentials write-only)
    DELETE /api/v1/devices/{name}               delete it, its frames and predictions
    GET    /api/v1/devices/{name}/frames        frames newest first, with predictions, paged
    GET    /api/v1/devices/{name}/latest        the latest frame and its predictions
    GET    /api/v1/frames/{id}/image            the stored image (jpeg / png)
    GET    /api/v1/areas/class-counts           top-class counts per time bucket in an area
    GET    /api/v1/model-versions               the model versions, newest first, paged

Keys (`tlc_jax.live.apikeys`) go in `Authorization: Bearer <token>` or `X-API-Key`. Writes
need a key with the "write" scope; reads need a "read" key only with
`read_requires_key=True`. A missing or invalid key is a 401, a key without the scope a
403. Each key has a token bucket of `rate_per_min` requests (a minute's worth at once at
most); requests without a key share one bucket per client IP. An empty bucket is a 429
with Retry-After. The buckets live in the process's memory: with N worker processes a
key gets up to N times its rate.

Device credentials are accepted (create, edit, import) and never returned: responses say
only `has_credentials`. Every query is an SQLAlchemy expression with bound parameters.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import pathlib
import tempfile
import threading
import time
from typing import Annotated, Any, Callable, Generic, Iterator, TypeVar

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRouter
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt,
                      StrictStr)
from sqlalchemy import orm
from sqlalchemy.ext.compiler import compiles
from starlette.concurrency import run_in_threadpool

from tlc_jax.live import apikeys
from tlc_jax.live import registry as R
from tlc_jax.live.db import Database, DeviceRow, FrameRow, ModelVersionRow, PredictionRow
from tlc_jax.live.devices import KINDS

PREFIX = "/api/v1"
MAX_LIMIT = 1000
MAX_OFFSET = 2**31 - 1
MAX_ID = 2**63 - 1
MAX_BUCKET_S = 366 * 86400
CSV_TYPES = ("text/csv", "application/csv", "text/plain")
AREA_CHUNK = 500  # Device ids per counting query (bound parameters stay few).

# ---------------------------------------------------------------------------- models


def _printable(text: str) -> str:
    if not text.isprintable():
        raise ValueError("must be printable characters")
    return text


class Strict(BaseModel):
    """Request bodies: unknown fields, NaN and infinities are refused (422)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Name = Annotated[str, Field(min_length=1, max_length=R.MAX_NAME), AfterValidator(_printable)]
Place = Annotated[str, Field(max_length=200)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Interval = Annotated[float, Field(ge=R.MIN_INTERVAL_S)]
Params = dict[Annotated[str, Field(max_length=100)],
              Annotated[StrictStr, Field(max_length=2000)] | StrictInt | StrictFloat]
Secret = Annotated[str, Field(max_length=1000)]


class Credentials(Strict):
    """Write-only. On edit, a given value replaces the stored one, null or "" removes it,
    an absent one stays."""

    username: Secret | None = None
    password: Secret | None = None
    api_key: Secret | None = None


class DeviceCreate(Strict):
    name: Name
    kind: str = Field(max_length=50)
    params: Params = {}
    credentials: Credentials = Credentials()
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    city: Place = ""
    region: Place = ""
    country: Place = ""
    sector: Place = ""
    poll_interval_s: Interval = 1.0
    active: bool = True


class DevicePatch(Strict):
    """Only the fields given change; `params`, when given, replaces all parameters.
    (Defaults of None mean "not given": an explicit null is refused where the field is
    not nullable.)"""

    name: Name = None  # Renames the device.
    kind: str = Field(None, max_length=50)
    params: Params = None
    credentials: Credentials = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    city: Place = None
    region: Place = None
    country: Place = None
    sector: Place = None
    poll_interval_s: Interval = None
    active: bool = None


class DeviceOut(BaseModel):
    name: str
    kind: str
    params: dict[str, Any]
    has_credentials: bool
    latitude: float | None
    longitude: float | None
    city: str
    region: str
    country: str
    sector: str
    poll_interval_s: float
    active: bool
    created_at: float
    updated_at: float
    distance_km: float | None = None  # From `near`, when searching by radius.


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    limit: int
    offset: int
    next_offset: int | None  # None: this is the last page.


class ClassProbability(BaseModel):
    class_name: str
    probability: float


class PredictionOut(BaseModel):
    model_version_id: int
    top_class: str
    top_probability: float
    topk: list[ClassProbability]
    created_at: float


class FrameOut(BaseModel):
    id: int
    device: str
    captured_at: float
    sha256: str
    size: int
    width: int
    height: int
    image_url: str
    predictions: list[PredictionOut]


class ImportLineError(BaseModel):
    line: int
    error: str


class ImportOut(BaseModel):
    created: int
    updated: int
    errors: list[ImportLineError]


class Bucket(BaseModel):
    start: float  # Unix seconds; the bucket is [start, start + bucket_s).
    counts: dict[str, int]


class ClassCountsOut(BaseModel):
    model_version_id: int | None
    bucket_s: int
    devices: int
    buckets: list[Bucket]


class ModelVersionOut(BaseModel):
    id: int
    name: str
    run_dir: str
    step: int
    class_names: list[str]
    created_at: float


# ---------------------------------------------------------------------------- rate limits


class RateLimiter:
    """Token buckets in memory, one per identity: each holds up to a minute's allowance
    and refills continuously. Thread-safe (sync endpoints run in a thread pool)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = 100_000):
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}  # identity: (tokens, time)
        self._lock = threading.Lock()

    def take(self, identity: str, rate_per_min: float) -> float:
        """Takes a token: 0.0, or else the seconds until one will be there."""
        capacity, per_s = float(rate_per_min), rate_per_min / 60.0
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(identity, (capacity, now))
            tokens = min(capacity, tokens + (now - then) * per_s)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / per_s
            self._buckets[identity] = (tokens - 1 if tokens >= 1 else tokens, now)
            if len(self._buckets) > self.max_buckets:
                self._prune(now)
        return wait

    def _prune(self, now: float) -> None:
        # Forget buckets idle for over a minute (they would be nearly full again).
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60.0}


# ---------------------------------------------------------------------------- settings


@dataclasses.dataclass
class _Settings:
    db: Database
    frames_root: pathlib.Path | None
    health: Callable[[], dict] | None
    read_requires_key: bool
    anonymous_rate_per_min: int
    limiter: RateLimiter


def _settings(request: Request) -> _Settings:
    return request.app.state.live


Settings = Annotated[_Settings, Depends(_settings)]

# ---------------------------------------------------------------------------- auth

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key")


def _token(bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
           header: Annotated[str | None, Security(_header)]) -> str | None:
    return bearer.credentials if bearer is not None else header


def _limit(settings: _Settings, identity: str, rate_per_min: float) -> None:
    wait = settings.limiter.take(identity, rate_per_min)
    if wait > 0:
        raise HTTPException(429, "Too many requests: slow down.",
                            headers={"Retry-After": str(max(1, math.ceil(wait)))})


def _ip(request: Request) -> str:
    return f"ip:{request.client.host if request.client else 'unknown'}"


def _unauthorised(why: str) -> HTTPException:
    return HTTPException(401, why, headers={"WWW-Authenticate": "Bearer"})


def _authorise(request: Request, settings: _Settings, token: str | None,
               needed: str | None) -> None:
    """Checks the key (if one is needed or given), its scope and its rate limit."""
    if token is None:
        _limit(settings, _ip(request), settings.anonymous_rate_per_min)
        if needed is not None:
            raise _unauthorised(f"An API key with the {needed!r} scope is needed "
                                f"(Authorization: Bearer <key>, or X-API-Key).")
        return
    with settings.db.transaction() as session:
        key = apikeys.verify(session, token)
        found = (key.id, key.rate_per_min, tuple(key.scopes)) if key else None
    if found is None:
        _limit(settings, _ip(request), settings.anonymous_rate_per_min)  # Slows down key guessing.
        raise _unauthorised("Invalid or revoked API key.")
    key_id, rate, scopes = found
    _limit(settings, f"key:{key_id}", rate)
    if needed is not None and not apikeys.allows(scopes, needed):
        raise HTTPException(403, f"This API key lacks the {needed!r} scope.")


Token = Annotated[str | None, Depends(_token)]


def _anyone(request: Request, settings: Settings) -> None:
    """No key looked at (health must answer even when the database does not)."""
    _limit(settings, _ip(request), settings.anonymous_rate_per_min)


def _reader(request: Request, settings: Settings, token: Token) -> None:
    _authorise(request, settings, token, "read" if settings.read_requires_key else None)


def _writer(request: Request, settings: Settings, token: Token) -> None:
    _authorise(request, settings, token, "write")


READ = [Depends(_reader)]
WRITE = [Depends(_writer)]

# ---------------------------------------------------------------------------- helpers


@dataclasses.dataclass(frozen=True)
class Paging:
    limit: int
    offset: int


def _paging(limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
            offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> Paging:
    return Paging(limit, offset)


PagingQuery = Annotated[Paging, Depends(_paging)]


def _page(rows: list, paging: Paging) -> dict[str, Any]:
    """A page from up to limit + 1 rows fetched (one more than shown says there is
    more)."""
    more = len(rows) > paging.limit
    return {"items": rows[:paging.limit], "limit": paging.limit, "offset": paging.offset,
            "next_offset": paging.offset + paging.limit if more else None}


def _point(near: str | None, km: float | None) -> tuple[float, float] | None:
    if (near is None) != (km is None):
        raise HTTPException(422, "Give near=LAT,LON and km together.")
    if near is None:
        return None
    try:
        return R.parse_point(near)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


def _search(session: orm.Session, **kwargs: Any) -> list[R.Match]:
    try:
        return R.search(session, **kwargs)
    except ValueError as e:  # Out-of-range km.
        raise HTTPException(422, str(e)) from None


def _device(session: orm.Session, name: str) -> DeviceRow:
    row = session.scalar(sa.select(DeviceRow).where(DeviceRow.name == name))
    if row is None:
        raise HTTPException(404, f"No device named {name!r}.")
    return row


def _device_out(row: DeviceRow, distance_km: float | None = None) -> DeviceOut:
    return DeviceOut(name=row.name, kind=row.kind, params=dict(row.params),
                     has_credentials=bool(row.credentials), latitude=row.latitude,
                     longitude=row.longitude, city=row.city, region=row.region,
                     country=row.country, sector=row.sector,
                     poll_interval_s=row.poll_interval_s, active=row.active,
                     created_at=row.created_at, updated_at=row.updated_at,
                     distance_km=distance_km)


def _coerce_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """JSON values to the types of the kind's parameters (as a CSV import converts
    text); unknown names are left for DeviceSpec to report."""
    cls = KINDS.get(kind)
    types = ({f.name: str(f.type) for f in dataclasses.fields(cls)}
             if cls is not None and dataclasses.is_dataclass(cls) else {})
    out, problems = {}, []
    for key, value in params.items():
        want = types.get(key, "str")
        try:
            if want == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                out[key] = int(value)
            elif want == "float":
                out[key] = float(value)
            else:
                out[key] = value if isinstance(value, str) else str(value)
        except ValueError:
            problems.append(f"{key} {value!r} is not a valid {want}")
    if problems:
        raise HTTPException(422, "; ".join(problems) + ".")
    return out


def _spec(values: dict[str, Any]) -> R.DeviceSpec:
    """Validates a device record as the registry does (its message is the 422 detail)."""
    values = {**values, "params": _coerce_params(values["kind"], values["params"])}
    try:
        return R.DeviceSpec(**values)
    except R.InvalidDevice as e:
        raise HTTPException(422, str(e)) from None


def _row_values(row: DeviceRow) -> dict[str, Any]:
    return {f.name: getattr(row, f.name) for f in dataclasses.fields(R.DeviceSpec)}


def _write(row: DeviceRow, spec: R.DeviceSpec) -> None:
    for f in dataclasses.fields(R.DeviceSpec):
        value = getattr(spec, f.name)
        setattr(row, f.name, dict(value) if isinstance(value, dict) else value)


def _merge_credentials(stored: dict[str, str], given: dict[str, str | None]) -> dict:
    merged = {**stored, **given}
    return {k: v for k, v in merged.items() if v}


def _frames_out(session: orm.Session, frames: list[FrameRow], device: str) -> list[FrameOut]:
    """Frames with their predictions (one query for all of them)."""
    predictions = collections.defaultdict(list)
    if frames:
        for p in session.scalars(sa.select(PredictionRow).where(
                PredictionRow.frame_id.in_([f.id for f in frames])).order_by(
                PredictionRow.model_version_id)):
            predictions[p.frame_id].append(PredictionOut(
                model_version_id=p.model_version_id, top_class=p.top_class,
                top_probability=p.top_probability, created_at=p.created_at,
                topk=[ClassProbability(class_name=c, probability=q) for c, q in p.topk]))
    return [FrameOut(id=f.id, device=device, captured_at=f.captured_at, sha256=f.sha256,
                     size=f.size, width=f.width, height=f.height,
                     image_url=f"{PREFIX}/frames/{f.id}/image",
                     predictions=predictions[f.id]) for f in frames]


def _frames_query(device_id: int, since: float | None, until: float | None) -> sa.Select:
    query = sa.select(FrameRow).where(FrameRow.device_id == device_id)
    if since is not None:
        query = query.where(FrameRow.captured_at >= since)
    if until is not None:
        query = query.where(FrameRow.captured_at < until)
    return query.order_by(FrameRow.captured_at.desc(), FrameRow.id.desc())


def _finite(value: Any) -> Any:
    """NaN and infinities (which JSON cannot carry) as null, at any depth."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _image_type(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


class _floor(sa.sql.functions.FunctionElement):
    """floor(x) as a whole number, on every backend (SQLite may lack floor())."""

    type = sa.BigInteger()
    name = "floor"
    inherit_cache = True


@compiles(_floor)
def _floor_default(element, compiler, **kw) -> str:
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)}) AS BIGINT)"


@compiles(_floor, "sqlite")
def _floor_sqlite(element, compiler, **kw) -> str:
    x = compiler.process(element.clauses, **kw)  # CAST truncates toward zero.
    return f"(CAST({x} AS INTEGER) - ({x} < CAST({x} AS INTEGER)))"


def _area_device_ids(session: orm.Session, **area: Any) -> list[int]:
    """Every device of the area (active or not), through the registry's search."""
    ids, offset, step = [], 0, 10_000
    while True:
        matches = _search(session, **area, limit=step, offset=offset)
        ids += [m.device.id for m in matches]
        if len(matches) < step:
            return ids
        offset += step


def _count_rows(device_ids: list[int], model_version_id: int, since: float | None,
                until: float | None, bucket_s: int) -> sa.Select:
    """(bucket number, top class, count) over the given devices' predictions."""
    bucket = _floor(FrameRow.captured_at / sa.literal(float(bucket_s), sa.Double))
    inner = (sa.select(bucket.label("bucket"), PredictionRow.top_class.label("top_class"))
             .join(FrameRow, PredictionRow.frame_id == FrameRow.id)
             .where(FrameRow.device_id.in_(device_ids),
                    PredictionRow.model_version_id == model_version_id))
    if since is not None:
        inner = inner.where(FrameRow.captured_at >= since)
    if until is not None:
        inner = inner.where(FrameRow.captured_at < until)
    inner = inner.subquery()
    return (sa.select(inner.c.bucket, inner.c.top_class, sa.func.count())
            .group_by(inner.c.bucket, inner.c.top_class))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _import_csv(db: Database, data: bytes) -> ImportOut:
    """registry.import_csv on the request's body (through a private temporary file)."""
    with tempfile.TemporaryDirectory(prefix="tlc-import-") as folder:
        path = pathlib.Path(folder) / "devices.csv"
        path.write_bytes(data)
        try:
            with db.transaction() as session:
                report = R.import_csv(session, path)
        except R.InvalidDevice as e:
            raise HTTPException(422, str(e).replace(str(path), "the CSV body")) from None
    return ImportOut(created=report.created, updated=report.updated,
                     errors=[ImportLineError(line=n, error=why) for n, why in report.errors])


# ---------------------------------------------------------------------------- endpoints

router = APIRouter(prefix=PREFIX)
NearQuery = Annotated[str | None, Query(max_length=100, description="LAT,LON",
                                        examples=["40.4237,-86.9212"])]
KmQuery = Annotated[float | None, Query(gt=0, allow_inf_nan=False)]
PlaceQuery = Annotated[str | None, Query(max_length=200)]
TimeQuery = Annotated[float | None, Query(allow_inf_nan=False, description="Unix seconds")]
DeviceName = Annotated[str, Path(min_length=1, max_length=R.MAX_NAME)]


@router.get("/health", tags=["health"], dependencies=[Depends(_anyone)])
def health(settings: Settings) -> JSONResponse:
    """The live service's status (run-time, analyzer, counters, failing devices) and
    whether the database answers. 503 when it does not."""
    try:
        database = {"ok": True, "backend": settings.db.engine.dialect.name,
                    "revision": settings.db.revision()}
    except sa.exc.SQLAlchemyError as e:
        database = {"ok": False, "backend": settings.db.engine.dialect.name,
                    "error": type(e).__name__}
    body: dict[str, Any] = {"status": "ok" if database["ok"] else "unavailable",
                            "database": database, "service": None}
    if settings.health is not None:
        try:
            body["service"] = settings.health()
        except Exception as e:  # noqa: BLE001 - reported, not raised.
            body["service"] = {"error": f"{type(e).__name__}: {e}"}
            body["status"] = "degraded" if database["ok"] else body["status"]
    return JSONResponse(_finite(jsonable_encoder(body)),
                        status_code=200 if database["ok"] else 503)


@router.get("/devices", tags=["devices"], dependencies=READ)
def search_devices(settings: Settings, paging: PagingQuery, near: NearQuery = None,
                   km: KmQuery = None, city: PlaceQuery = None, region: PlaceQuery = None,
                   country: PlaceQuery = None, sector: PlaceQuery = None,
                   text: PlaceQuery = None, active: bool | None = None) -> Page[DeviceOut]:
    """Devices within km of near (nearest first, with distance_km), and / or by place
    (case-insensitive), sector, free text, active flag; by name otherwise."""
    point = _point(near, km)
    with settings.db.session() as session:
        matches = _search(session, near=point, km=km, city=city, region=region,
                          country=country, sector=sector, text=text, active=active,
                          limit=paging.limit + 1, offset=paging.offset)
        return _page([_device_out(m.device, m.distance_km) for m in matches], paging)


@router.post("/devices", tags=["devices"], status_code=201, dependencies=WRITE)
def create_device(settings: Settings, body: DeviceCreate) -> DeviceOut:
    values = body.model_dump()
    values["credentials"] = _merge_credentials({}, values["credentials"])
    spec = _spec(values)
    try:
        with settings.db.transaction() as session:
            if session.scalar(sa.select(DeviceRow.id).where(DeviceRow.name == spec.name)):
                raise HTTPException(409, f"A device named {spec.name!r} exists already.")
            row = DeviceRow()
            _write(row, spec)
            session.add(row)
            session.flush()
            return _device_out(row)
    except sa.exc.IntegrityError:  # Created by someone else meanwhile.
        raise HTTPException(409, f"A device named {spec.name!r} exists already.") from None


@router.post("/devices/import", tags=["devices"], dependencies=WRITE,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": {"type": "string"}}}}})
async def import_devices(request: Request, settings: Settings) -> ImportOut:
    """Creates or updates devices from a CSV body (registry.import_csv's columns and
    rules): bad rows are reported by line, the others imported."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in CSV_TYPES:
        raise HTTPException(415, f"Send the CSV as text/csv; got {media_type or 'nothing'}.")
    return await run_in_threadpool(_import_csv, settings.db, await request.body())


@router.get("/devices/{name}", tags=["devices"], dependencies=READ)
def get_device(settings: Settings, name: DeviceName) -> DeviceOut:
    with settings.db.session() as session:
        return _device_out(_device(session, name))


@router.patch("/devices/{name}", tags=["devices"], dependencies=WRITE)
def edit_device(settings: Settings, name: DeviceName, body: DevicePatch) -> DeviceOut:
    changes = body.model_dump(exclude_unset=True)
    try:
        with settings.db.transaction() as session:
            row = _device(session, name)
            values = _row_values(row)
            if "credentials" in changes:
                changes["credentials"] = _merge_credentials(values["credentials"],
                                                            changes["credentials"])
            spec = _spec({**values, **changes})
            if spec.name != name and session.scalar(
                    sa.select(DeviceRow.id).where(DeviceRow.name == spec.name)):
                raise HTTPException(409, f"A device named {spec.name!r} exists already.")
            _write(row, spec)
            session.flush()
            return _device_out(row)
    except sa.exc.IntegrityError:
        raise HTTPException(409, "A device with that name exists already.") from None


@router.delete("/devices/{name}", tags=["devices"], status_code=204, dependencies=WRITE)
def delete_device(settings: Settings, name: DeviceName) -> Response:
    """Deletes the device with its frames' rows and predictions (not the image files:
    the store's retention removes them)."""
    with settings.db.transaction() as session:
        session.delete(_device(session, name))
    return Response(status_code=204)


@router.get("/devices/{name}/frames", tags=["frames"], dependencies=READ)
def device_frames(settings: Settings, name: DeviceName, paging: PagingQuery,
                  since: TimeQuery = None, until: TimeQuery = None) -> Page[FrameOut]:
    """The device's frames captured in [since, until), newest first, with predictions."""
    with settings.db.session() as session:
        device = _device(session, name)
        frames = list(session.scalars(_frames_query(device.id, since, until)
                                      .offset(paging.offset).limit(paging.limit + 1)))
        return _page(_frames_out(session, frames, device.name), paging)


@router.get("/devices/{name}/latest", tags=["frames"], dependencies=READ)
def latest_frame(settings: Settings, name: DeviceName) -> FrameOut:
    with settings.db.session() as session:
        device = _device(session, name)
        frame = session.scalar(_frames_query(device.id, None, None).limit(1))
        if frame is None:
            raise HTTPException(404, f"Device {name!r} has no frames yet.")
        return _frames_out(session, [frame], device.name)[0]


@router.get("/frames/{frame_id}/image", tags=["frames"], dependencies=READ,
            response_class=Response,
            responses={200: {"content": {"image/jpeg": {}, "image/png": {}},
                             "description": "The stored image."}})
def frame_image(settings: Settings,
                frame_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Response:
    if settings.frames_root is None:
        raise HTTPException(404, "This server has no frame store.")
    with settings.db.session() as session:
        relative = session.scalar(sa.select(FrameRow.path).where(FrameRow.id == frame_id))
    if relative is None:
        raise HTTPException(404, f"No frame {frame_id}.")
    root = settings.frames_root
    target = (root / relative).resolve()
    if not target.is_relative_to(root):  # "..", absolute paths, links leading out.
        raise HTTPException(403, f"Frame {frame_id}'s path is outside the frame store.")
    try:
        data = target.read_bytes()  # Whole: retention may delete the file any time.
    except OSError:
        raise HTTPException(404, f"Frame {frame_id}'s image is gone.") from None
    media_type = _image_type(data[:8])
    if media_type is None:
        raise HTTPException(415, f"Frame {frame_id} is neither JPEG nor PNG.")
    return Response(data, media_type=media_type,
                    headers={"X-Content-Type-Options": "nosniff",
                             "Cache-Control": "private, max-age=86400, immutable"})


@router.get("/areas/class-counts", tags=["areas"], dependencies=READ)
def class_counts(settings: Settings, near: NearQuery = None, km: KmQuery = None,
                 city: PlaceQuery = None, region: PlaceQuery = None,
                 country: PlaceQuery = None, since: TimeQuery = None,
                 until: TimeQuery = None,
                 bucket_s: Annotated[int, Query(ge=1, le=MAX_BUCKET_S)] = 3600,
                 model_version_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                 ) -> ClassCountsOut:
    """How many frames of the area's devices had each top class, per time bucket
    [start, start + bucket_s) (buckets aligned on the Unix epoch; empty ones left out),
    under one model version (default: the newest)."""
    point = _point(near, km)
    if point is None and not (city or region or country):
        raise HTTPException(422, "Give an area: near=LAT,LON&km=, city, region or country.")
    with settings.db.session() as session:
        if model_version_id is None:
            model_version_id = session.scalar(sa.select(sa.func.max(ModelVersionRow.id)))
        ids = _area_device_ids(session, near=point, km=km, city=city, region=region,
                               country=country)
        counts: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
        if model_version_id is not None:
            for chunk in _chunks(ids, AREA_CHUNK):
                for bucket, top_class, n in session.execute(
                        _count_rows(chunk, model_version_id, since, until, bucket_s)):
                    counts[int(bucket)][top_class] += n
    return ClassCountsOut(model_version_id=model_version_id, bucket_s=bucket_s,
                          devices=len(ids),
                          buckets=[Bucket(start=b * bucket_s, counts=dict(sorted(c.items())))
                                   for b, c in sorted(counts.items())])


@router.get("/model-versions", tags=["models"], dependencies=READ)
def model_versions(settings: Settings, paging: PagingQuery) -> Page[ModelVersionOut]:
    """The model versions, newest first."""
    with settings.db.session() as session:
        rows = session.scalars(sa.select(ModelVersionRow).order_by(
            ModelVersionRow.id.desc()).offset(paging.offset).limit(paging.limit + 1))
        return _page([ModelVersionOut(id=r.id, name=r.name, run_dir=r.run_dir, step=r.step,
                                      class_names=list(r.class_names),
                                      created_at=r.created_at) for r in rows], paging)


# ---------------------------------------------------------------------------- the app


class BodyLimit:
    """ASGI middleware: a 413 for bodies over max_bytes, by Content-Length when given and
    by the bytes actually received (chunked uploads). The body is read before the app
    runs, so at most max_bytes are ever held."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                return await _error(scope, receive, send, 400, "Bad Content-Length.")
            if int(length) > self.max_bytes:
                return await self._too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # The client went away.
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._too_large(scope, receive, send)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # Waits for the disconnect.
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send) -> None:
        await _error(scope, receive, send, 413,
                     f"The body is larger than {self.max_bytes} bytes.")


async def _error(scope, receive, send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without the rejected input: it may be a secret (a too long
    password) or a NaN, which JSON cannot carry."""
    errors = [{"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg"),
               **({"ctx": {k: str(v) for k, v in e["ctx"].items()}} if e.get("ctx") else {})}
              for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def _database_unavailable(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "The database is unavailable; try again later."},
                        status_code=503, headers={"Retry-After": "5"})


def create_app(db: Database, *, frames_root: str | pathlib.Path | None = None,
               health: Callable[[], dict] | None = None, read_requires_key: bool = False,
               max_body_bytes: int = 1 << 20, anonymous_rate_per_min: int = 300,
               clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """The API over `db`: images served from `frames_root` (the FrameStore's root),
    `health` the live service's `health` method (if it runs in this process). `clock`
    drives the rate limits (tests replace it)."""
    if max_body_bytes < 1 or anonymous_rate_per_min < 1:
        raise ValueError("max_body_bytes and anonymous_rate_per_min must be >= 1.")
    app = FastAPI(title="tlc_jax live API", version="1",
                  description=__doc__.split("\n\n")[0])
    root = None if frames_root is None else pathlib.Path(frames_root).resolve()
    app.state.live = _Settings(
        db=db, frames_root=root, health=health, read_requires_key=read_requires_key,
        anonymous_rate_per_min=anonymous_rate_per_min, limiter=RateLimiter(clock))
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(sa.exc.OperationalError, _database_unavailable)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app


def routes() -> list[tuple[str, str]]:
    """(method, path) of every API endpoint (for listings and tests)."""
    return [(method, route.path) for route in router.routes
            for method in sorted(route.methods - {"HEAD"})]
