"""The HTTP API's request and response bodies (pydantic models).

These are the schemas of the OpenAPI document. Request bodies (`Strict`) refuse unknown
fields, NaN and infinities (a 422), and take device names, places, coordinates and poll
intervals within the registry's limits. Device credentials are write-only: they come in
with `DeviceCreate` / `DevicePatch`, and `DeviceOut` says only `has_credentials`.

Errors have two shapes: a 422 is `InputErrors` (`detail`: a list of `InputError`, each
with the field's location, whether FastAPI or the API's own checks found it); every other
error is `Error` (`detail`: one sentence).
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt,
                      StrictStr)

from tlc_jax.live import registry as R


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


class Error(BaseModel):
    """Every error but a 422: what went wrong, and what to do about it."""

    detail: str


class InputError(BaseModel):
    """One problem with the request: `loc` is where (`["body", "params", "url"]`,
    `["query", "km"]`), `msg` what is wrong; `ctx` the limit broken, if any. The value
    sent is never repeated (it may be a secret)."""

    type: str
    loc: list[str | int]
    msg: str
    ctx: dict[str, str] | None = None


class InputErrors(BaseModel):
    """A 422: every problem found with the request, one item each."""

    detail: list[InputError]


class DatabaseHealth(BaseModel):
    ok: bool
    backend: str
    revision: str | None = None  # The schema's Alembic revision, when it answers.
    error: str | None = None  # The exception's class, when it does not.


class HealthOut(BaseModel):
    """`status`: "ok", "degraded" (the service's status could not be read) or
    "unavailable" (the database does not answer: a 503). `service`: the live service's
    own report (run-time, analyzer, counters, failing devices), null when this server
    has none."""

    status: Literal["ok", "degraded", "unavailable"]
    database: DatabaseHealth
    service: dict[str, Any] | None
