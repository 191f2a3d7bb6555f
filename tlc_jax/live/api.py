"""The live system's HTTP API (FastAPI): devices, frames, predictions, counts by area.

    app = create_app(open_database(url), frames_root="W/frames", health=service.health)
    uvicorn.run(app, host="127.0.0.1", port=8000)

Everything is under /api/v1; the OpenAPI document is at /openapi.json, its pages at
/docs (Swagger UI served from this server's own files: tlc_jax.live.swagger). Endpoints:

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

This module holds the routes, the middleware and `create_app`; the pieces they use each
have their own: the bodies in `tlc_jax.live.schemas`, API keys, scopes and rate limits
in `tlc_jax.live.auth` (a missing or invalid key is a 401, a key without the scope a
403, too many requests a 429; the key is checked before the body is read), the database
statements in `tlc_jax.live.queries` (all SQLAlchemy expressions with bound parameters).

The OpenAPI document is the contract, kept by a schemathesis run in the tests: every
status code an operation can answer is declared with its body (`Error`, or `InputErrors`
for a 422, whose items name the field: `["body", "credentials", "username"]`), a 405
lists every method the path has (`Allow`), and reads declare their key optional unless
the server runs with `read_requires_key` (the document follows the configuration).

Device credentials are accepted (create, edit, import) and never returned: responses say
only `has_credentials`. Device records are checked against the operator's
`DevicePolicy` (tlc_jax.live.policy: URLs against the request-forgery allow-list,
folder roots, frame-size bounds) when created, edited or imported; folder devices (they
read the server's files) need the admin scope.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import tempfile
import time
from typing import Annotated, Any, Callable

import httpx
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from sqlalchemy import orm
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match

from tlc_jax.live import auth
from tlc_jax.live import queries as Q
from tlc_jax.live import registry as R
from tlc_jax.live import swagger
from tlc_jax.live.auth import ANYONE, READ, WRITE
from tlc_jax.live.db import Database, DeviceRow, FrameRow, ModelVersionRow, PredictionRow
from tlc_jax.live.devices import KINDS
from tlc_jax.live.policy import ADMIN_KINDS, DevicePolicy
from tlc_jax.live.schemas import (Bucket, ClassCountsOut, ClassProbability, DeviceCreate,
                                  DeviceOut, DevicePatch, Error, FrameOut, HealthOut,
                                  ImportLineError, ImportOut, InputErrors, ModelVersionOut,
                                  Page, PredictionOut)

PREFIX = "/api/v1"
MAX_LIMIT = 1000
MAX_OFFSET = 2**31 - 1
MAX_ID = 2**63 - 1
MAX_BUCKET_S = 366 * 86400
CSV_TYPES = ("text/csv", "application/csv", "text/plain")

# ---------------------------------------------------------------------------- settings


@dataclasses.dataclass
class _Settings:
    db: Database
    frames_root: pathlib.Path | None
    health: Callable[[], dict] | None
    policy: DevicePolicy


def _settings(request: Request) -> _Settings:
    return request.app.state.live


Settings = Annotated[_Settings, Depends(_settings)]

# ---------------------------------------------------------------------------- requests


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


def _invalid(*errors: tuple[str, tuple[str | int, ...]]) -> RequestValidationError:
    """A 422 of the API's own checks, shaped as FastAPI's (`InputErrors`): one item per
    (message, location) pair."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg}
                                   for msg, loc in errors])


def _invalid_device(e: R.InvalidDevice, prefix: tuple[str, ...] = ("body",)
                    ) -> RequestValidationError:
    """A refused device record as a 422 naming each problem's field."""
    if not e.problems:
        return _invalid((str(e), prefix))
    return _invalid(*((str(p), prefix + tuple(p.field.split(".") if p.field else ()))
                      for p in e.problems))


def _point(near: str | None, km: float | None) -> tuple[float, float] | None:
    if (near is None) != (km is None):
        missing = "km" if km is None else "near"
        raise _invalid((f"Give near=LAT,LON and km together ({missing} is missing).",
                        ("query", missing)))
    if near is None:
        return None
    try:
        return R.parse_point(near)
    except ValueError as e:
        raise _invalid((str(e), ("query", "near"))) from None


def _search(search: Callable[..., list], session: orm.Session, **kwargs: Any) -> list:
    """`search(session, **kwargs)` (a search through the registry) with its ValueError,
    an out-of-range km, as a 422."""
    try:
        return search(session, **kwargs)
    except ValueError as e:
        raise _invalid((str(e), ("query", "km"))) from None


def _device(session: orm.Session, name: str) -> DeviceRow:
    row = Q.device_named(session, name)
    if row is None:
        raise HTTPException(404, f"No device named {name!r}.")
    return row


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
        except (ValueError, OverflowError):  # OverflowError: int(1e400) is inf.
            problems.append((f"{key} {value!r} is not a valid {want}.",
                             ("body", "params", key)))
    if problems:
        raise _invalid(*problems)
    return out


def _spec(values: dict[str, Any]) -> R.DeviceSpec:
    """Validates a device record as the registry does (a 422 naming each problem's
    field)."""
    values = {**values, "params": _coerce_params(values["kind"], values["params"])}
    try:
        return R.DeviceSpec(**values)
    except R.InvalidDevice as e:
        raise _invalid_device(e) from None


def _admin_only(request: Request, *kinds: str) -> None:
    """403 unless the key has the admin scope, when any of the kinds reads local files."""
    if any(k in ADMIN_KINDS for k in kinds) and not auth.allows(request, "admin"):
        raise HTTPException(403, "Folder devices read this server's own files: creating "
                                 "or editing one needs an API key with the 'admin' scope.")


def _allowed(spec: R.DeviceSpec, policy: DevicePolicy) -> R.DeviceSpec:
    """The spec, or a 422 listing what the operator's policy refuses."""
    try:
        spec.check(policy)
    except R.InvalidDevice as e:
        raise _invalid_device(e) from None
    return spec


def _merge_credentials(stored: dict[str, str], given: dict[str, str | None]) -> dict:
    merged = {**stored, **given}
    return {k: v for k, v in merged.items() if v}


def _import_csv(db: Database, data: bytes, policy: DevicePolicy, admin: bool) -> ImportOut:
    """registry.import_csv on the request's body (through a private temporary file);
    rows the policy refuses, and folder rows without the admin scope, are line errors."""

    def check(spec: R.DeviceSpec) -> None:
        if spec.kind in ADMIN_KINDS and not admin:
            raise R.InvalidDevice(f"Device {spec.name!r}: folder devices read this "
                                  f"server's own files; importing one needs an API key "
                                  f"with the 'admin' scope.")
        spec.check(policy)

    with tempfile.TemporaryDirectory(prefix="tlc-import-") as folder:
        path = pathlib.Path(folder) / "devices.csv"
        path.write_bytes(data)
        try:
            with db.transaction() as session:
                report = R.import_csv(session, path, check=check)
        except R.InvalidDevice as e:
            raise _invalid((str(e).replace(str(path), "the CSV body"), ("body",))) from None
    return ImportOut(created=report.created, updated=report.updated,
                     errors=[ImportLineError(line=n, error=why) for n, why in report.errors])


# ---------------------------------------------------------------------------- responses


def _shown_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters without a user name or password written into a URL (refused when
    written now; a row stored before, or around the registry, may still hold one)."""
    out = {}
    for key, value in params.items():
        if isinstance(value, str) and "@" in value:
            try:
                url = httpx.URL(value)
                if url.userinfo:
                    value = str(url.copy_with(username=None, password=None))
            except (httpx.InvalidURL, TypeError, ValueError):
                pass
        out[key] = value
    return out


def _device_out(row: DeviceRow, distance_km: float | None = None) -> DeviceOut:
    return DeviceOut(name=row.name, kind=row.kind, params=_shown_params(row.params),
                     has_credentials=bool(row.credentials), latitude=row.latitude,
                     longitude=row.longitude, city=row.city, region=row.region,
                     country=row.country, sector=row.sector,
                     poll_interval_s=row.poll_interval_s, active=row.active,
                     created_at=row.created_at, updated_at=row.updated_at,
                     distance_km=distance_km)


def _prediction_out(p: PredictionRow) -> PredictionOut:
    return PredictionOut(model_version_id=p.model_version_id, top_class=p.top_class,
                         top_probability=p.top_probability, created_at=p.created_at,
                         topk=[ClassProbability(class_name=c, probability=q)
                               for c, q in p.topk])


def _frames_out(session: orm.Session, frames: list[FrameRow], device: str) -> list[FrameOut]:
    """Frames with their predictions (one query for all of them)."""
    predictions = Q.predictions(session, [f.id for f in frames])
    return [FrameOut(id=f.id, device=device, captured_at=f.captured_at, sha256=f.sha256,
                     size=f.size, width=f.width, height=f.height,
                     image_url=f"{PREFIX}/frames/{f.id}/image",
                     predictions=[_prediction_out(p) for p in predictions[f.id]])
            for f in frames]


def _model_version_out(r: ModelVersionRow) -> ModelVersionOut:
    return ModelVersionOut(id=r.id, name=r.name, run_dir=r.run_dir, step=r.step,
                           class_names=list(r.class_names), created_at=r.created_at)


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


# ---------------------------------------------------------------------------- endpoints

# What every status code means, unless the operation says more (`notes`).
ERRORS = {
    400: "Malformed request: a Content-Length that is not a number, or a body that "
         "cannot be read.",
    401: "No API key where one is needed, or an invalid or revoked one.",
    403: "The API key lacks the scope this needs.",
    404: "Not found.",
    409: "A device of that name exists already.",
    413: "The body is larger than the server's limit.",
    415: "Unsupported media type.",
    422: "Invalid input: each item says which field and why.",
    429: "Too many requests: wait for Retry-After seconds.",
    503: "The database is unavailable: try again after Retry-After seconds.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "required": True,
                                "schema": {"type": "integer", "minimum": 1}}}
_HEADERS = {401: {"WWW-Authenticate": {"description": "Bearer", "required": True,
                                       "schema": {"type": "string"}}},
            429: _RETRY_AFTER, 503: _RETRY_AFTER}


def _responses(rule: str, *codes: int, notes: dict[int, str] | None = None,
               ok: dict[int, dict] | None = None) -> dict[int | str, dict]:
    """The operation's responses: `ok` (its successes, if FastAPI's own are not enough),
    the errors every operation of `rule` ("anyone", "read", "write") can give (400 / 413
    from the body limit, 429, 503; 401 with a key; 403 for writes; 422 for anything
    with input) and `codes`, the operation's own."""
    common = {400, 413, 429, 503} | ({401} if rule != "anyone" else set()) | (
        {403} if rule == "write" else set()) | ({422} if rule != "anyone" else set())
    out: dict[int | str, dict] = dict(ok or {})
    for code in sorted(common | set(codes)):
        out[code] = {"model": InputErrors if code == 422 else Error,
                     "description": (notes or {}).get(code, ERRORS[code])}
        if code in _HEADERS:
            out[code]["headers"] = _HEADERS[code]
    return out


router = APIRouter(prefix=PREFIX, route_class=auth.KeyFirstRoute)
NearQuery = Annotated[str | None, Query(max_length=100, description="LAT,LON",
                                        examples=["40.4237,-86.9212"])]
KmQuery = Annotated[float | None, Query(gt=0, allow_inf_nan=False)]
PlaceQuery = Annotated[str | None, Query(max_length=200)]
TimeQuery = Annotated[float | None, Query(allow_inf_nan=False, description="Unix seconds")]
DeviceName = Annotated[str, Path(min_length=1, max_length=R.MAX_NAME)]


@router.get("/health", tags=["health"], dependencies=ANYONE, response_model=HealthOut,
            responses={**_responses("anyone"),
                       503: {"model": HealthOut, "description": "The database does not "
                             "answer (the body says why)."}})
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


@router.get("/devices", tags=["devices"], dependencies=READ, responses=_responses("read"))
def search_devices(settings: Settings, paging: PagingQuery, near: NearQuery = None,
                   km: KmQuery = None, city: PlaceQuery = None, region: PlaceQuery = None,
                   country: PlaceQuery = None, sector: PlaceQuery = None,
                   text: PlaceQuery = None, active: bool | None = None) -> Page[DeviceOut]:
    """Devices within km of near (nearest first, with distance_km), and / or by place
    (case-insensitive), sector, free text, active flag; by name otherwise."""
    point = _point(near, km)
    with settings.db.session() as session:
        matches = _search(R.search, session, near=point, km=km, city=city, region=region,
                          country=country, sector=sector, text=text, active=active,
                          limit=paging.limit + 1, offset=paging.offset)
        return _page([_device_out(m.device, m.distance_km) for m in matches], paging)


@router.post("/devices", tags=["devices"], status_code=201, dependencies=WRITE,
             responses=_responses("write", 409, notes={
                 403: "The API key lacks the write scope, or the admin scope a folder "
                      "device needs.",
                 422: "Invalid input, or a device the server's policy refuses (a URL to "
                      "an address not allowed, a folder outside the allowed roots, a "
                      "frame-size bound above the server's): each item says which field "
                      "and why."}))
def create_device(settings: Settings, body: DeviceCreate, request: Request) -> DeviceOut:
    values = body.model_dump()
    values["credentials"] = _merge_credentials({}, values["credentials"])
    spec = _spec(values)
    _admin_only(request, spec.kind)
    _allowed(spec, settings.policy)
    try:
        with settings.db.transaction() as session:
            if Q.name_taken(session, spec.name):
                raise HTTPException(409, f"A device named {spec.name!r} exists already.")
            row = DeviceRow()
            Q.write_device(row, spec)
            session.add(row)
            session.flush()
            return _device_out(row)
    except sa.exc.IntegrityError:  # Created by someone else meanwhile.
        raise HTTPException(409, f"A device named {spec.name!r} exists already.") from None


@router.post("/devices/import", tags=["devices"], dependencies=WRITE,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": {"type": "string"}}}}},
             responses=_responses("write", 415, notes={
                 415: "The body is not sent as text/csv (or application/csv, "
                      "text/plain).",
                 422: "The CSV as a whole is unusable (not UTF-8, a header without name "
                      "or kind, unknown columns); bad rows are reported in the 200's "
                      "errors instead."}))
async def import_devices(request: Request, settings: Settings) -> ImportOut:
    """Creates or updates devices from a CSV body (registry.import_csv's columns and
    rules): bad rows are reported by line, the others imported."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in CSV_TYPES:
        raise HTTPException(415, f"Send the CSV as text/csv; got {media_type or 'nothing'}.")
    return await run_in_threadpool(_import_csv, settings.db, await request.body(),
                                   settings.policy, auth.allows(request, "admin"))


@router.get("/devices/{name}", tags=["devices"], dependencies=READ,
            responses=_responses("read", 404, notes={404: "No device of that name."}))
def get_device(settings: Settings, name: DeviceName) -> DeviceOut:
    with settings.db.session() as session:
        return _device_out(_device(session, name))


@router.patch("/devices/{name}", tags=["devices"], dependencies=WRITE,
              responses=_responses("write", 404, 409, notes={
                  403: "The API key lacks the write scope, or the admin scope a folder "
                       "device needs.",
                  404: "No device of that name.",
                  409: "The new name is another device's.",
                  422: "Invalid input, or an edit the server's policy refuses: each item "
                       "says which field and why."}))
def edit_device(settings: Settings, name: DeviceName, body: DevicePatch,
                request: Request) -> DeviceOut:
    changes = body.model_dump(exclude_unset=True)
    try:
        with settings.db.transaction() as session:
            row = _device(session, name)
            values = Q.device_values(row)
            _admin_only(request, row.kind, changes.get("kind", row.kind))
            if "credentials" in changes:
                changes["credentials"] = _merge_credentials(values["credentials"],
                                                            changes["credentials"])
            spec = _allowed(_spec({**values, **changes}), settings.policy)
            if spec.name != name and Q.name_taken(session, spec.name):
                raise HTTPException(409, f"A device named {spec.name!r} exists already.")
            Q.write_device(row, spec)
            session.flush()
            return _device_out(row)
    except sa.exc.IntegrityError:
        raise HTTPException(409, "A device with that name exists already.") from None


@router.delete("/devices/{name}", tags=["devices"], status_code=204, dependencies=WRITE,
               responses=_responses("write", 404, notes={404: "No device of that name."}))
def delete_device(settings: Settings, name: DeviceName) -> Response:
    """Deletes the device with its frames' rows and predictions (not the image files:
    the store's retention removes them)."""
    with settings.db.transaction() as session:
        session.delete(_device(session, name))
    return Response(status_code=204)


@router.get("/devices/{name}/frames", tags=["frames"], dependencies=READ,
            responses=_responses("read", 404, notes={404: "No device of that name."}))
def device_frames(settings: Settings, name: DeviceName, paging: PagingQuery,
                  since: TimeQuery = None, until: TimeQuery = None) -> Page[FrameOut]:
    """The device's frames captured in [since, until), newest first, with predictions."""
    with settings.db.session() as session:
        device = _device(session, name)
        frames = Q.frames(session, device.id, since, until, offset=paging.offset,
                          limit=paging.limit + 1)
        return _page(_frames_out(session, frames, device.name), paging)


@router.get("/devices/{name}/latest", tags=["frames"], dependencies=READ,
            responses=_responses("read", 404, notes={
                404: "No device of that name, or it has no frames yet."}))
def latest_frame(settings: Settings, name: DeviceName) -> FrameOut:
    with settings.db.session() as session:
        device = _device(session, name)
        frame = Q.latest_frame(session, device.id)
        if frame is None:
            raise HTTPException(404, f"Device {name!r} has no frames yet.")
        return _frames_out(session, [frame], device.name)[0]


@router.get("/frames/{frame_id}/image", tags=["frames"], dependencies=READ,
            response_class=Response,
            responses=_responses(
                "read", 403, 404, 415,
                ok={200: {"content": {"image/jpeg": {"schema": {"type": "string",
                                                                "format": "binary"}},
                                      "image/png": {"schema": {"type": "string",
                                                               "format": "binary"}}},
                          "description": "The stored image."}},
                notes={403: "The frame's stored path leads outside the frame store.",
                       404: "No such frame, no frame store on this server, or the image "
                            "is gone (retention).",
                       415: "The stored file is neither JPEG nor PNG."}))
def frame_image(settings: Settings,
                frame_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Response:
    if settings.frames_root is None:
        raise HTTPException(404, "This server has no frame store.")
    with settings.db.session() as session:
        relative = Q.frame_path(session, frame_id)
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


@router.get("/areas/class-counts", tags=["areas"], dependencies=READ,
            responses=_responses("read"))
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
        raise _invalid(("Give an area: near=LAT,LON&km=, city, region or country.",
                        ("query",)))
    with settings.db.session() as session:
        if model_version_id is None:
            model_version_id = Q.newest_model_version(session)
        ids = _search(Q.area_device_ids, session, near=point, km=km, city=city,
                      region=region, country=country)
        counts = ({} if model_version_id is None else
                  Q.class_counts(session, ids, model_version_id, since, until, bucket_s))
    return ClassCountsOut(model_version_id=model_version_id, bucket_s=bucket_s,
                          devices=len(ids),
                          buckets=[Bucket(start=b * bucket_s, counts=dict(sorted(c.items())))
                                   for b, c in sorted(counts.items())])


@router.get("/model-versions", tags=["models"], dependencies=READ,
            responses=_responses("read"))
def model_versions(settings: Settings, paging: PagingQuery) -> Page[ModelVersionOut]:
    """The model versions, newest first."""
    with settings.db.session() as session:
        rows = Q.model_versions(session, offset=paging.offset, limit=paging.limit + 1)
        return _page([_model_version_out(r) for r in rows], paging)


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


async def _error(scope, receive, send, status: int, detail: str,
                 headers: dict[str, str] | None = None) -> None:
    await JSONResponse({"detail": detail}, status_code=status,
                       headers=headers)(scope, receive, send)


class AllowedMethods:
    """ASGI middleware: a 405 whose `Allow` lists every method the path has, when no
    route takes the request's method. (Starlette would answer with the first partly
    matching route's methods - `GET, HEAD` for a PUT to /api/v1/devices, which POST
    also takes - or, with the web interface mounted at /, let the mount answer.)"""

    def __init__(self, app, routes: Callable[[], list]):
        self.app, self.routes = app, routes  # routes(): the routes to match, in order.

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            allowed: set[str] = set()
            for route in self.routes():
                methods = getattr(route, "methods", None)
                if not methods:  # Mounts (the web interface) and websockets.
                    continue
                match, _ = route.matches(scope)
                if match is Match.FULL:
                    allowed = set()
                    break
                if match is Match.PARTIAL:
                    allowed |= methods
            if allowed:
                return await _error(scope, receive, send, 405, "Method Not Allowed",
                                    {"Allow": ", ".join(sorted(allowed))})
        await self.app(scope, receive, send)


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


def _openapi(app: FastAPI, read_requires_key: bool) -> Callable[[], dict[str, Any]]:
    """The app's `openapi()`: FastAPI's document, with the reads' key declared optional
    (`{}` first among their security requirements) unless this server needs one."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = FastAPI.openapi(app)
        if not read_requires_key:
            for route in router.routes:
                if isinstance(route, APIRoute) and auth.rule(route) == "read":
                    for method in route.methods - {"HEAD"}:
                        operation = spec["paths"][route.path_format][method.lower()]
                        operation["security"] = [{}, *operation.get("security", [])]
        return spec

    return openapi


def create_app(db: Database, *, frames_root: str | pathlib.Path | None = None,
               health: Callable[[], dict] | None = None, read_requires_key: bool = False,
               max_body_bytes: int = 1 << 20, anonymous_rate_per_min: int = 300,
               clock: Callable[[], float] = time.monotonic,
               policy: DevicePolicy | None = None) -> FastAPI:
    """The API over `db`: images served from `frames_root` (the FrameStore's root),
    `health` the live service's `health` method (if it runs in this process). `clock`
    drives the rate limits (tests replace it). `policy`: what device records may hold
    (default: no internal address, no folder device, the default frame-size bounds)."""
    if max_body_bytes < 1 or anonymous_rate_per_min < 1:
        raise ValueError("max_body_bytes and anonymous_rate_per_min must be >= 1.")
    reads = ("Reads need an API key with the read scope on this server "
             "(--read-requires-key)." if read_requires_key else
             "Reads need no key on this server (a key given is checked).")
    # /docs is served from local files (tlc_jax.live.swagger); no /redoc.
    app = FastAPI(title="tlc_jax live API", version="1",
                  description=f"{__doc__.split(chr(10) * 2)[0]} {reads}",
                  docs_url=None, redoc_url=None)
    app.openapi = _openapi(app, read_requires_key)
    swagger.install(app)
    root = None if frames_root is None else pathlib.Path(frames_root).resolve()
    app.state.live = _Settings(db=db, frames_root=root, health=health,
                               policy=policy or DevicePolicy())
    auth.install(app, db, read_requires_key=read_requires_key,
                 anonymous_rate_per_min=anonymous_rate_per_min, clock=clock)
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(sa.exc.OperationalError, _database_unavailable)
    # The app's own routes (/openapi.json, /docs) and the API's (FastAPI keeps an
    # included router as one entry of app.routes).
    app.add_middleware(AllowedMethods, routes=lambda: [*app.router.routes, *router.routes])
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app


def routes() -> list[tuple[str, str]]:
    """(method, path) of every API endpoint (for listings and tests)."""
    return [(method, route.path) for route in router.routes
            for method in sorted(route.methods - {"HEAD"})]
