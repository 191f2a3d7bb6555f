"""The HTTP API's database statements: devices, frames, predictions, model versions and
the class counts of an area, as SQLAlchemy expressions with bound parameters.

Each function works inside the caller's session and returns rows (or plain values); the
API (`tlc_jax.live.api`) turns them into responses and decides what is a 404 or a 422.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.ext.compiler import compiles

from tlc_jax.live import registry as R
from tlc_jax.live.db import DeviceRow, FrameRow, ModelVersionRow, PredictionRow

AREA_CHUNK = 500  # Device ids per counting query (bound parameters stay few).

# ---------------------------------------------------------------------------- devices


def device_named(session: orm.Session, name: str) -> DeviceRow | None:
    return session.scalar(sa.select(DeviceRow).where(DeviceRow.name == name))


def name_taken(session: orm.Session, name: str) -> bool:
    return bool(session.scalar(sa.select(DeviceRow.id).where(DeviceRow.name == name)))


def device_values(row: DeviceRow) -> dict[str, Any]:
    """The row's fields that make a `registry.DeviceSpec`."""
    return {f.name: getattr(row, f.name) for f in dataclasses.fields(R.DeviceSpec)}


def write_device(row: DeviceRow, spec: R.DeviceSpec) -> None:
    """Sets the row's fields from a validated device."""
    for f in dataclasses.fields(R.DeviceSpec):
        value = getattr(spec, f.name)
        setattr(row, f.name, dict(value) if isinstance(value, dict) else value)


# ---------------------------------------------------------------------------- frames


def _frames_query(device_id: int, since: float | None, until: float | None) -> sa.Select:
    query = sa.select(FrameRow).where(FrameRow.device_id == device_id)
    if since is not None:
        query = query.where(FrameRow.captured_at >= since)
    if until is not None:
        query = query.where(FrameRow.captured_at < until)
    return query.order_by(FrameRow.captured_at.desc(), FrameRow.id.desc())


def frames(session: orm.Session, device_id: int, since: float | None, until: float | None,
           *, offset: int, limit: int) -> list[FrameRow]:
    """The device's frames captured in [since, until) (None: unbounded), newest first."""
    return list(session.scalars(_frames_query(device_id, since, until)
                                .offset(offset).limit(limit)))


def latest_frame(session: orm.Session, device_id: int) -> FrameRow | None:
    return session.scalar(_frames_query(device_id, None, None).limit(1))


def frame_path(session: orm.Session, frame_id: int) -> str | None:
    """The frame's image path, relative to the frame store's root."""
    return session.scalar(sa.select(FrameRow.path).where(FrameRow.id == frame_id))


def predictions(session: orm.Session, frame_ids: list[int]
                ) -> dict[int, list[PredictionRow]]:
    """Each frame's predictions by model version (one query for all frames)."""
    out: dict[int, list[PredictionRow]] = collections.defaultdict(list)
    if frame_ids:
        for p in session.scalars(sa.select(PredictionRow).where(
                PredictionRow.frame_id.in_(frame_ids)).order_by(
                PredictionRow.model_version_id)):
            out[p.frame_id].append(p)
    return out


# ---------------------------------------------------------------------------- models


def model_versions(session: orm.Session, *, offset: int, limit: int
                   ) -> list[ModelVersionRow]:
    """The model versions, newest first."""
    return list(session.scalars(sa.select(ModelVersionRow).order_by(
        ModelVersionRow.id.desc()).offset(offset).limit(limit)))


def newest_model_version(session: orm.Session) -> int | None:
    return session.scalar(sa.select(sa.func.max(ModelVersionRow.id)))


# ---------------------------------------------------------------------------- areas


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


def area_device_ids(session: orm.Session, **area: Any) -> list[int]:
    """Every device of the area (active or not), through the registry's search (whose
    ValueError, for an out-of-range km, passes on)."""
    ids, offset, step = [], 0, 10_000
    while True:
        matches = R.search(session, **area, limit=step, offset=offset)
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


def class_counts(session: orm.Session, device_ids: list[int], model_version_id: int,
                 since: float | None, until: float | None, bucket_s: int
                 ) -> dict[int, collections.Counter]:
    """{bucket number: {top class: frames}} of the devices' frames captured in
    [since, until), under one model version; bucket b is [b * bucket_s, (b + 1) *
    bucket_s) in Unix seconds (aligned on the epoch; empty buckets absent)."""
    counts: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for chunk in _chunks(device_ids, AREA_CHUNK):
        for bucket, top_class, n in session.execute(
                _count_rows(chunk, model_version_id, since, until, bucket_s)):
            counts[int(bucket)][top_class] += n
    return counts
