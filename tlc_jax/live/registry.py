"""The device registry: validated device records, CSV import / export, location search.

A device record is a `DeviceSpec`: the kind and its parameters (checked against the
kind's own constructor), credentials kept apart, coordinates, place names, owner sector,
poll interval and an active flag. Every entry point validates before it writes, and a
CSV import reports each bad row with its line number while importing the rest.

CSV columns: `name`, `kind` (required), `latitude`, `longitude`, `city`, `region`,
`country`, `sector`, `poll_interval_s`, `active`, then any parameter of the kind (`url`,
`url_template`, `device_id`, `path`, `auth`, `api_key_header`, `max_bytes`, ...) and the
credentials `username`, `password`, `api_key`. Empty cells mean "not given"; on import,
empty credential cells keep a device's stored credentials (so an export without
credentials can be edited and imported back without wiping them).

Formulas: a cell that a spreadsheet would run as a formula (its text starts with `=`,
`+`, `-`, `@`, a tab or a carriage return) is exported with a single quote in front
(OWASP's rule against CSV injection), and so is a cell that starts with a quote; a
plain decimal number (`-86.9`, `1e-05`) is exported as it is, since no spreadsheet runs
it. Importing removes that one quote again, from cells that start with a quote
followed by one of those characters (or by a quote) and are not plain numbers: an
export imports back exactly (`csv_escape` / `csv_unescape`). A hand-written cell meant
to start with `'=` (or `''`) needs one more quote.

The operator's `DevicePolicy` (tlc_jax.live.policy: allowed addresses, folder roots,
frame-size bounds) is checked by the callers that write records users send: the API
and `devices import` (`import_csv(..., check=...)`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
from typing import Any, Callable, Iterable, Iterator, Sequence

import sqlalchemy as sa
from absl import logging
from sqlalchemy import orm

from tlc_jax.fileio import atomic_file
from tlc_jax.live.db import DeviceRow
from tlc_jax.live.devices import KINDS, Device, make_device

CREDENTIALS = ("username", "password", "api_key")
METADATA = ("name", "kind", "latitude", "longitude", "city", "region", "country", "sector",
            "poll_interval_s", "active")
EARTH_RADIUS_KM = 6371.0088  # Mean radius (IUGG).
MAX_NAME = 200
MIN_INTERVAL_S = 0.05
# Cells a spreadsheet runs as formulas start with one of these (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # Never a formula.


def csv_escape(text: str) -> str:
    """The cell as exported: a quote in front of text a spreadsheet would run as a
    formula, or that starts with a quote itself (so that import can tell them apart);
    plain numbers as they are."""
    if text.startswith(FORMULA_STARTS + ("'",)) and not NUMBER.fullmatch(text):
        return "'" + text
    return text


def csv_unescape(text: str) -> str:
    """The inverse of `csv_escape` (csv_unescape(csv_escape(t)) == t for every t)."""
    rest = text[1:]
    if text.startswith("'") and rest.startswith(FORMULA_STARTS + ("'",)) \
            and not NUMBER.fullmatch(rest):
        return rest
    return text


class Problem(str):
    """One thing wrong with a device record: its text, and `field`, the dotted name of
    the field it is about (`kind`, `params.url`, `credentials.username`; "" for the
    record as a whole), which the API reports as the error's location."""

    field: str

    def __new__(cls, text: str, field: str = "") -> "Problem":
        problem = super().__new__(cls, text)
        problem.field = field
        return problem


class InvalidDevice(ValueError):
    """A device record that cannot be stored; the message lists every problem, and
    `problems` holds them one by one (each a `Problem`, with its field)."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = [p if isinstance(p, Problem) else Problem(p) for p in problems]

    @classmethod
    def of(cls, name: str, problems: Sequence[str]) -> "InvalidDevice":
        return cls(f"Device {name!r}: " + "; ".join(problems) + ".", problems)


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    name: str
    kind: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    credentials: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    latitude: float | None = None
    longitude: float | None = None
    city: str = ""
    region: str = ""
    country: str = ""
    sector: str = ""
    poll_interval_s: float = 1.0
    active: bool = True

    def __post_init__(self):
        problems = _problems(self)
        if problems:
            raise InvalidDevice.of(self.name, problems)

    def device(self) -> Device:
        return make_device(self.kind, self.name, **self.params, **self.credentials)

    @classmethod
    def from_row(cls, row: DeviceRow) -> "DeviceSpec":
        return cls(row.name, row.kind, dict(row.params), dict(row.credentials),
                   row.latitude, row.longitude, row.city, row.region, row.country,
                   row.sector, row.poll_interval_s, row.active)

    def check(self, policy) -> None:
        """InvalidDevice listing what the operator's `DevicePolicy` does not allow."""
        problems = policy.problems(self)
        if problems:
            raise InvalidDevice.of(self.name, problems)

    @classmethod
    def from_strings(cls, cells: dict[str, str], *, csv_escaped: bool = False
                     ) -> "DeviceSpec":
        """From text cells (a CSV row, command-line arguments); empty means not given.
        `csv_escaped`: the cells come from a CSV file (`csv_unescape` after stripping
        the surrounding white space)."""
        unescape = csv_unescape if csv_escaped else (lambda text: text)
        cells = {k.strip(): unescape((v or "").strip()) for k, v in cells.items() if k}
        problems: list[str] = []
        kind = cells.get("kind", "")
        fields = _kind_fields(kind)

        def number(key: str, convert=float):
            text = cells.get(key, "")
            if not text:
                return None
            try:
                return convert(text)
            except ValueError:
                problems.append(Problem(f"{key} {text!r} is not a number", key))
                return None

        params: dict[str, Any] = {}
        for key, text in cells.items():
            if key in METADATA or key in CREDENTIALS or not text:
                continue
            convert = {"int": int, "float": float}.get(fields.get(key, "str"), str)
            try:
                params[key] = convert(text)
            except ValueError:
                problems.append(Problem(f"{key} {text!r} is not a valid {fields[key]}",
                                        f"params.{key}"))
        active_text = cells.get("active", "").lower()
        if active_text not in ("", "1", "0", "true", "false", "yes", "no"):
            problems.append(Problem(f"active {cells['active']!r} is not one of "
                                    f"true/false/1/0/yes/no", "active"))
        interval = number("poll_interval_s")
        spec = dict(name=cells.get("name", ""), kind=kind, params=params,
                    credentials={k: cells[k] for k in CREDENTIALS if cells.get(k)},
                    latitude=number("latitude"), longitude=number("longitude"),
                    city=cells.get("city", ""), region=cells.get("region", ""),
                    country=cells.get("country", ""), sector=cells.get("sector", ""),
                    poll_interval_s=1.0 if interval is None else interval,
                    active=active_text not in ("0", "false", "no"))
        if problems:  # Report these together with the record's own problems.
            try:
                cls(**spec)
            except InvalidDevice as e:
                problems.extend(e.problems)
            raise InvalidDevice.of(spec["name"], problems)
        return cls(**spec)

    def cells(self, include_credentials: bool = False) -> dict[str, str]:
        out = {"name": self.name, "kind": self.kind,
               "latitude": "" if self.latitude is None else repr(self.latitude),
               "longitude": "" if self.longitude is None else repr(self.longitude),
               "city": self.city, "region": self.region, "country": self.country,
               "sector": self.sector, "poll_interval_s": repr(self.poll_interval_s),
               "active": "true" if self.active else "false"}
        out.update({k: str(v) for k, v in self.params.items()})
        if include_credentials:
            out.update(self.credentials)
        return out


def _kind_fields(kind: str) -> dict[str, str]:
    """The kind's constructor parameters (name -> annotation), `name` and private ones
    excluded."""
    cls = KINDS.get(kind)
    if cls is None or not dataclasses.is_dataclass(cls):
        return {}
    return {f.name: str(f.type) for f in dataclasses.fields(cls)
            if f.init and f.name != "name" and not f.name.startswith("_")}


def _required_fields(kind: str) -> list[str]:
    """The kind's parameters without a default (they must be given)."""
    cls = KINDS.get(kind)
    if cls is None or not dataclasses.is_dataclass(cls):
        return []
    return [f.name for f in dataclasses.fields(cls)
            if f.init and f.name != "name" and not f.name.startswith("_")
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING]


def _problems(spec: DeviceSpec) -> list[Problem]:
    """Everything wrong with the record, each with its field. The texts are written for
    the user: never a Python exception's own words (a constructor's TypeError)."""
    problems = []
    if (not spec.name or len(spec.name) > MAX_NAME or not spec.name.isprintable()
            or "/" in spec.name):
        problems.append(Problem(f"name must be 1-{MAX_NAME} printable characters without "
                                f"'/' (it is part of API paths)", "name"))
    elif spec.name in (".", ".."):
        problems.append(Problem("name must not be '.' or '..' (API paths could not reach "
                                "the device)", "name"))
    if spec.kind not in KINDS:
        problems.append(Problem(f"unknown kind {spec.kind!r} (known: "
                                f"{', '.join(sorted(KINDS))})", "kind"))
    else:
        kind_fields = _kind_fields(spec.kind)
        fields = {k: v for k, v in kind_fields.items() if k not in CREDENTIALS}
        taken = sorted(set(kind_fields) & set(CREDENTIALS))
        before = len(problems)
        misplaced = sorted(set(spec.params) & set(CREDENTIALS))
        if misplaced:  # They would be stored and shown with the parameters.
            problems.append(Problem(f"{', '.join(misplaced)} are credentials: give them "
                                    f"with the credentials, not the parameters",
                                    f"params.{misplaced[0]}"))
        unknown = sorted(set(spec.params) - set(fields) - set(CREDENTIALS))
        if unknown:
            problems.append(Problem(f"{', '.join(unknown)} not parameters of kind "
                                    f"{spec.kind} (its parameters: "
                                    f"{', '.join(sorted(fields))})", f"params.{unknown[0]}"))
        missing = [f for f in _required_fields(spec.kind)
                   if f not in spec.params and f not in CREDENTIALS]
        if missing:
            problems.append(Problem(f"kind {spec.kind} needs the parameter(s) "
                                    f"{', '.join(missing)}", f"params.{missing[0]}"))
        secrets = sorted(set(spec.credentials) - set(CREDENTIALS))
        if secrets:
            problems.append(Problem(f"unknown credentials {', '.join(secrets)} (known: "
                                    f"{', '.join(CREDENTIALS)})", f"credentials.{secrets[0]}"))
        not_taken = sorted(set(spec.credentials) & set(CREDENTIALS) - set(taken))
        if not_taken:
            problems.append(Problem(
                f"kind {spec.kind} takes no {', '.join(not_taken)} credential(s) ("
                + (f"it takes {', '.join(taken)}" if taken else "it takes none") + ")",
                f"credentials.{not_taken[0]}"))
        if len(problems) == before:
            try:  # The constructor itself, not make_device (which words a TypeError
                # as a ValueError).
                KINDS[spec.kind](name=spec.name, **spec.params, **spec.credentials)
            except ValueError as e:
                text = str(e).rstrip(".")
                word = text.split(" ", 1)[0]
                problems.append(Problem(text, f"params.{word}" if word in fields
                                        else "params"))
            except TypeError:  # A value of the wrong type; Python's words say how.
                problems.append(Problem(f"the parameters do not fit kind {spec.kind} (its "
                                        f"parameters: {', '.join(sorted(fields))})",
                                        "params"))
    if (spec.latitude is None) != (spec.longitude is None):
        problems.append(Problem("latitude and longitude must be given together",
                                "longitude" if spec.longitude is None else "latitude"))
    if spec.latitude is not None and not (math.isfinite(spec.latitude)
                                          and -90 <= spec.latitude <= 90):
        problems.append(Problem(f"latitude {spec.latitude} is outside [-90, 90]",
                                "latitude"))
    if spec.longitude is not None and not (math.isfinite(spec.longitude)
                                           and -180 <= spec.longitude <= 180):
        problems.append(Problem(f"longitude {spec.longitude} is outside [-180, 180]",
                                "longitude"))
    if not (math.isfinite(spec.poll_interval_s) and spec.poll_interval_s >= MIN_INTERVAL_S):
        problems.append(Problem(f"poll_interval_s must be >= {MIN_INTERVAL_S}; got "
                                f"{spec.poll_interval_s}", "poll_interval_s"))
    for key in ("city", "region", "country", "sector"):
        if len(getattr(spec, key)) > 200:
            problems.append(Problem(f"{key} is longer than 200 characters", key))
    return problems


# ---------------------------------------------------------------------------- writes


def upsert(session: orm.Session, specs: Iterable[DeviceSpec]) -> tuple[int, int]:
    """Creates or updates devices by name; returns (created, updated). Credentials not
    given keep the stored ones."""
    specs = list(specs)
    existing = {row.name: row for row in session.scalars(
        sa.select(DeviceRow).where(DeviceRow.name.in_([s.name for s in specs])))}
    created = updated = 0
    for spec in specs:
        row = existing.get(spec.name)
        if row is None:
            row = DeviceRow(name=spec.name, credentials={})
            session.add(row)
            existing[spec.name] = row
            created += 1
        else:
            updated += 1
        row.kind, row.params = spec.kind, dict(spec.params)
        row.credentials = {**row.credentials, **spec.credentials}
        for key in ("latitude", "longitude", "city", "region", "country", "sector",
                    "poll_interval_s", "active"):
            setattr(row, key, getattr(spec, key))
    return created, updated


@dataclasses.dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    errors: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (line, why)

    def __str__(self) -> str:
        lines = [f"{self.created} created, {self.updated} updated, {len(self.errors)} "
                 f"rows refused."]
        lines += [f"  line {line}: {why}" for line, why in self.errors]
        return "\n".join(lines)


Check = Callable[[DeviceSpec], None]  # Raises InvalidDevice for a refused record.


def read_csv(path: str | os.PathLike, check: Check | None = None
             ) -> tuple[list[DeviceSpec], list[tuple[int, str]]]:
    """Valid specs and (line, problem) for every refused row (invalid, or refused by
    `check`, e.g. the operator's policy)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # Keeps a CR in a cell.
            text = f.read()
    except UnicodeDecodeError as e:
        raise InvalidDevice(f"{path} is not UTF-8 text (byte {e.start}); save the CSV as "
                            f"UTF-8.") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in ("name", "kind") if c not in header]
    if missing:
        raise InvalidDevice(f"{path}, line 1: the header lacks {', '.join(missing)} "
                            f"(found: {', '.join(header) or 'nothing'}).")
    known = set(METADATA) | set(CREDENTIALS) | {
        f for cls in KINDS for f in _kind_fields(cls)}
    unknown = [h for h in header if h and h not in known]
    if unknown:
        raise InvalidDevice(f"{path}, line 1: unknown column(s) {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(known))}).")
    specs, errors, seen = [], [], {}
    for row in reader:
        # The record's first line (DictReader skips blank lines; a quoted cell may span
        # several lines).
        start = reader.line_num - sum(str(v).count("\n") for v in row.values() if v)
        if None in row:
            errors.append((start, f"{len(row[None])} more cell(s) than the header has"))
            continue
        if not any((v or "").strip() for v in row.values()):
            continue  # Blank line.
        try:
            spec = DeviceSpec.from_strings(row, csv_escaped=True)
            if check is not None:
                check(spec)
        except InvalidDevice as e:
            errors.append((start, str(e)))
            continue
        if spec.name in seen:
            errors.append((start, f"device {spec.name!r} is already on line "
                                  f"{seen[spec.name]}"))
            continue
        seen[spec.name] = start
        specs.append(spec)
    return specs, errors


def import_csv(session: orm.Session, path: str | os.PathLike, *,
               check: Check | None = None) -> ImportReport:
    """Imports every valid row (one transaction); bad rows, and rows `check` refuses,
    are reported by line."""
    specs, errors = read_csv(path, check)
    created, updated = upsert(session, specs)
    return ImportReport(created, updated, errors)


def export_csv(session: orm.Session, path: str | os.PathLike, *,
               include_credentials: bool = False) -> int:
    """Writes every device (atomically); returns the number written."""
    specs = [DeviceSpec.from_row(r) for r in session.scalars(
        sa.select(DeviceRow).order_by(DeviceRow.name))]
    params = sorted({k for s in specs for k in s.params})
    header = list(METADATA) + params + (list(CREDENTIALS) if include_credentials else [])
    with atomic_file(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, header)
            writer.writeheader()
            for spec in specs:  # Formulas neutralised (see the module's docstring).
                writer.writerow({k: csv_escape(v) for k, v in
                                 spec.cells(include_credentials).items()})
    return len(specs)


# ---------------------------------------------------------------------------- reads


def runtime_devices(session: orm.Session, policy=None) -> dict[str, tuple[Device, float]]:
    """Active devices as the run-time wants them (name -> (device, interval)), confined
    by the operator's `DevicePolicy` (folder roots, frame-size bounds; the default
    policy if None). A row edited into an invalid state is logged and left out, never
    crashes the run-time."""
    return runtime_devices_of(session.scalars(sa.select(DeviceRow).where(DeviceRow.active)),
                              policy)


def runtime_devices_of(rows: Iterable[DeviceRow], policy=None
                       ) -> dict[str, tuple[Device, float]]:
    """`runtime_devices` of the given rows."""
    if policy is None:
        from tlc_jax.live.policy import DevicePolicy

        policy = DevicePolicy()
    out = {}
    for row in rows:
        try:
            out[row.name] = (policy.confine(DeviceSpec.from_row(row).device()),
                             row.poll_interval_s)
        except (InvalidDevice, ValueError, TypeError) as e:
            logging.log_every_n_seconds(logging.WARNING, "Skipping device %s: %s", 60,
                                        row.name, e)
    return out


def haversine_km(lat1, lon1, lat2, lon2):
    """Great-circle distance (km) on the mean-radius sphere; numpy arrays work too."""
    import numpy as np

    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlon = np.radians(np.asarray(lon2, float) - np.asarray(lon1, float))
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _bounding_box(lat: float, lon: float, km: float) -> sa.ColumnElement[bool]:
    """A box containing every point within km of (lat, lon): an index range scan."""
    dlat = math.degrees(km / EARTH_RADIUS_KM)
    clauses = [DeviceRow.latitude.between(max(-90.0, lat - dlat), min(90.0, lat + dlat))]
    if lat + dlat < 90 and lat - dlat > -90:  # A pole inside: every longitude.
        dlon = math.degrees(math.asin(min(1.0, math.sin(math.radians(dlat))
                                          / math.cos(math.radians(lat)))))
        lo, hi = lon - dlon, lon + dlon
        if lo < -180:  # Across the antimeridian: two ranges.
            clauses.append(sa.or_(DeviceRow.longitude >= lo + 360,
                                  DeviceRow.longitude <= hi))
        elif hi > 180:
            clauses.append(sa.or_(DeviceRow.longitude >= lo,
                                  DeviceRow.longitude <= hi - 360))
        else:
            clauses.append(DeviceRow.longitude.between(lo, hi))
    return sa.and_(*clauses)


@dataclasses.dataclass(frozen=True)
class Match:
    device: DeviceRow
    distance_km: float | None  # From `near`, when searching by radius.


def search(session: orm.Session, *, near: tuple[float, float] | None = None,
           km: float | None = None, city: str | None = None, region: str | None = None,
           country: str | None = None, sector: str | None = None, text: str | None = None,
           active: bool | None = None, limit: int = 100, offset: int = 0) -> list[Match]:
    """Devices within `km` of `near` (nearest first), and / or by place (case-insensitive
    equality), sector, free text (name or any place field contains it). Parameters are
    bound, never pasted into SQL."""
    if (near is None) != (km is None):
        raise ValueError("Give near=(lat, lon) and km together.")
    if not 1 <= limit <= 10_000 or offset < 0:
        raise ValueError(f"limit must be in [1, 10000] and offset >= 0; got {limit}, "
                         f"{offset}.")
    query = sa.select(DeviceRow)
    for column, value in ((DeviceRow.city, city), (DeviceRow.region, region),
                          (DeviceRow.country, country), (DeviceRow.sector, sector)):
        if value:
            query = query.where(sa.func.lower(column) == value.strip().lower())
    if text:
        query = query.where(sa.or_(*(c.icontains(text.strip(), autoescape=True) for c in (
            DeviceRow.name, DeviceRow.city, DeviceRow.region, DeviceRow.country,
            DeviceRow.sector))))
    if active is not None:
        query = query.where(DeviceRow.active == active)
    if near is None:
        rows = session.scalars(query.order_by(DeviceRow.name).offset(offset).limit(limit))
        return [Match(row, None) for row in rows]
    lat, lon = near
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"near=({lat}, {lon}) is not a point: latitude must be in "
                         f"[-90, 90], longitude in [-180, 180].")
    if not 0 < km <= math.pi * EARTH_RADIUS_KM:
        raise ValueError(f"km must be in (0, {math.pi * EARTH_RADIUS_KM:.0f}]; got {km}.")
    rows = list(session.scalars(query.where(_bounding_box(lat, lon, km))))
    if not rows:
        return []
    distances = haversine_km(lat, lon, [r.latitude for r in rows],
                             [r.longitude for r in rows])
    matches = sorted((Match(r, float(d)) for r, d in zip(rows, distances) if d <= km),
                     key=lambda m: (m.distance_km, m.device.name))
    return matches[offset:offset + limit]


def parse_point(text: str) -> tuple[float, float]:
    """'LAT,LON' -> (lat, lon), with a clear error."""
    try:
        lat, lon = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not LAT,LON (e.g. 40.4237,-86.9212).") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"{text!r}: latitude must be in [-90, 90], longitude in "
                         f"[-180, 180].")
    return lat, lon


def rows_to_specs(rows: Sequence[dict[str, Any]]) -> Iterator[DeviceSpec]:
    """Specs from dicts of Python values or strings (e.g. `CameraServer.device_rows`)."""
    for row in rows:
        yield DeviceSpec.from_strings({k: "" if v is None else str(v)
                                       for k, v in row.items()})
