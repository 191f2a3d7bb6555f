"""The live system's database: tables, connection and migrations (SQLAlchemy 2, Alembic).

Tables:
- `devices`: what to poll and where it is (kind + non-secret parameters, credentials in
  a column of their own that never appears in `repr` or logs, coordinates, city /
  region / country, owner sector, poll interval, active flag);
- `frames`: one stored frame (device, capture time, path in the frame store, hash, size);
- `predictions`: top-k classes with probabilities of a frame under a model version;
- `model_versions`: a trained run (its directory, checkpoint step and class names);
- `workers`, `device_leases`, `frame_claims`: how several processes share devices and
  frames (`tlc_jax/live/leases.py`);
- `api_keys`: keys of the HTTP API, hashed.

Times are Unix seconds (UTC) in double-precision columns: the same on SQLite and
PostgreSQL, and bucketed by plain arithmetic in either.

`open_database(url)` connects (SQLite in WAL mode is the embedded default; PostgreSQL by
URL), fails at once with a clear error when the database cannot be reached, and brings
the schema to the newest Alembic revision. New revisions go in `migrations/versions/`
(`alembic -c tlc_jax/live/alembic.ini revision --autogenerate -m "..."` with
`TLC_LIVE_DB` set to a database at the current head).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy import orm

MIGRATIONS = Path(__file__).with_name("migrations")
ENV_URL = "TLC_LIVE_DB"  # Environment variable read by alembic.ini's environment.


def _id_type() -> sa.types.TypeEngine:
    # BIGINT on PostgreSQL (frames and predictions grow without end); SQLite's rowid
    # alias must be exactly INTEGER to autoincrement.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(orm.DeclarativeBase):
    metadata = sa.MetaData(naming_convention={
        # Stable constraint names, so migrations can refer to them on every backend.
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


class DeviceRow(Base):
    __tablename__ = "devices"

    id: orm.Mapped[int] = orm.mapped_column(_id_type(), primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(200), unique=True)
    kind: orm.Mapped[str] = orm.mapped_column(sa.String(50))
    # The kind's parameters (url, url_template, device_id, path, auth, ...), no secrets.
    params: orm.Mapped[dict[str, Any]] = orm.mapped_column(sa.JSON, default=dict)
    # username / password / api_key: passed to the device, never logged or exported
    # unless asked for.
    credentials: orm.Mapped[dict[str, Any]] = orm.mapped_column(sa.JSON, default=dict)
    latitude: orm.Mapped[float | None] = orm.mapped_column(sa.Double)
    longitude: orm.Mapped[float | None] = orm.mapped_column(sa.Double)
    city: orm.Mapped[str] = orm.mapped_column(sa.String(200), default="", index=True)
    region: orm.Mapped[str] = orm.mapped_column(sa.String(200), default="")
    country: orm.Mapped[str] = orm.mapped_column(sa.String(200), default="", index=True)
    sector: orm.Mapped[str] = orm.mapped_column(sa.String(200), default="")
    poll_interval_s: orm.Mapped[float] = orm.mapped_column(sa.Double, default=1.0)
    active: orm.Mapped[bool] = orm.mapped_column(sa.Boolean, default=True)
    created_at: orm.Mapped[float] = orm.mapped_column(sa.Double, default=time.time)
    updated_at: orm.Mapped[float] = orm.mapped_column(sa.Double, default=time.time,
                                                      onupdate=time.time)

    __table_args__ = (sa.Index("ix_devices_latitude_longitude", "latitude", "longitude"),
                      sa.CheckConstraint("latitude IS NULL OR latitude BETWEEN -90 AND 90",
                                         name="latitude_range"),
                      sa.CheckConstraint(
                          "longitude IS NULL OR longitude BETWEEN -180 AND 180",
                          name="longitude_range"),
                      sa.CheckConstraint("poll_interval_s > 0", name="poll_interval"))

    def __repr__(self) -> str:  # No credentials, no parameters (URLs may embed tokens).
        return f"DeviceRow(id={self.id}, name={self.name!r}, kind={self.kind!r})"


class ModelVersionRow(Base):
    __tablename__ = "model_versions"

    id: orm.Mapped[int] = orm.mapped_column(_id_type(), primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(200))
    run_dir: orm.Mapped[str] = orm.mapped_column(sa.String(1000))
    step: orm.Mapped[int] = orm.mapped_column(sa.Integer)
    class_names: orm.Mapped[list[str]] = orm.mapped_column(sa.JSON)
    created_at: orm.Mapped[float] = orm.mapped_column(sa.Double, default=time.time)

    __table_args__ = (sa.UniqueConstraint("run_dir", "step"),)


class FrameRow(Base):
    __tablename__ = "frames"

    id: orm.Mapped[int] = orm.mapped_column(_id_type(), primary_key=True)
    device_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("devices.id", ondelete="CASCADE"))
    captured_at: orm.Mapped[float] = orm.mapped_column(sa.Double)
    path: orm.Mapped[str] = orm.mapped_column(sa.String(1000), unique=True)  # In the store.
    sha256: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    size: orm.Mapped[int] = orm.mapped_column(sa.Integer)
    width: orm.Mapped[int] = orm.mapped_column(sa.Integer)
    height: orm.Mapped[int] = orm.mapped_column(sa.Integer)

    __table_args__ = (sa.Index("ix_frames_device_id_captured_at", "device_id",
                               "captured_at"),
                      sa.Index("ix_frames_captured_at", "captured_at"))


class PredictionRow(Base):
    __tablename__ = "predictions"

    id: orm.Mapped[int] = orm.mapped_column(_id_type(), primary_key=True)
    frame_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("frames.id", ondelete="CASCADE"))
    model_version_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("model_versions.id", ondelete="CASCADE"))
    top_class: orm.Mapped[str] = orm.mapped_column(sa.String(200), index=True)
    top_probability: orm.Mapped[float] = orm.mapped_column(sa.Double)
    # [[class name, probability], ...], most probable first.
    topk: orm.Mapped[list[list[Any]]] = orm.mapped_column(sa.JSON)
    created_at: orm.Mapped[float] = orm.mapped_column(sa.Double, default=time.time)

    __table_args__ = (sa.UniqueConstraint("frame_id", "model_version_id"),)


class WorkerRow(Base):
    """A live process (`tlc_jax.live.leases`): its role and last heartbeat."""

    __tablename__ = "workers"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(100), primary_key=True)
    role: orm.Mapped[str] = orm.mapped_column(sa.String(20))  # runtime / analyzer / all
    host: orm.Mapped[str] = orm.mapped_column(sa.String(200))
    pid: orm.Mapped[int] = orm.mapped_column(sa.Integer)
    started_at: orm.Mapped[float] = orm.mapped_column(sa.Double)
    heartbeat_at: orm.Mapped[float] = orm.mapped_column(sa.Double, index=True)
    # The process's latest `LiveService.health()` (counters, queues, failing devices,
    # latency), for the operations page of any host.
    health: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(sa.JSON)


class DeviceLeaseRow(Base):
    """Which run-time process polls a device, until when."""

    __tablename__ = "device_leases"

    device_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    owner: orm.Mapped[str] = orm.mapped_column(sa.String(100), index=True)
    expires_at: orm.Mapped[float] = orm.mapped_column(sa.Double)


class FrameClaimRow(Base):
    """Which analyzer process classifies a frame, until when."""

    __tablename__ = "frame_claims"

    frame_id: orm.Mapped[int] = orm.mapped_column(
        sa.ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True)
    owner: orm.Mapped[str] = orm.mapped_column(sa.String(100), index=True)
    expires_at: orm.Mapped[float] = orm.mapped_column(sa.Double)


class DatabaseError(RuntimeError):
    """The database cannot be used: the message says why and what to do."""


def default_url(workdir: str | os.PathLike) -> str:
    """The embedded default: SQLite in the work directory."""
    return f"sqlite:///{Path(workdir).absolute() / 'live.db'}"


def normalise_url(url: str) -> sa.URL:
    """Parses a database URL; plain `postgresql://` means psycopg 3 (the driver installed
    with the `live` extra), not SQLAlchemy's default psycopg2."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseError(f"{url!r} is not a database URL: use sqlite:///path/live.db or "
                            f"postgresql://user:password@host:5432/dbname.") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers (the API, searches) never block the writer (the run-time).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # Durable at checkpoints; safe with WAL.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Database:
    """An engine, a session factory and the schema's migration state."""

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0):
        self.url = normalise_url(url)
        shown = self.url.render_as_string(hide_password=True)
        kwargs: dict[str, Any] = {}
        if self.url.get_backend_name() == "sqlite":
            database = self.url.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": connect_timeout_s}
        elif self.url.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": int(max(1, connect_timeout_s))}
            kwargs["pool_pre_ping"] = True
        try:
            self.engine = sa.create_engine(self.url, **kwargs)
        except (sa.exc.NoSuchModuleError, ModuleNotFoundError) as e:
            raise DatabaseError(f"No driver for {shown}: {e}. Install the live extra "
                                f"(pip install 'tlc-jax[live]').") from None
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.session = orm.sessionmaker(self.engine, expire_on_commit=False)
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError as e:
            self.engine.dispose()
            reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
            raise DatabaseError(f"Cannot connect to the database {shown}: {reason}. Check "
                                f"that the server is running and that the URL (--db) is "
                                f"right.") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[orm.Session]:
        """A session committed on success, rolled back on error."""
        with self.session.begin() as session:
            yield session

    def _alembic_config(self, connection: sa.Connection):
        from alembic.config import Config

        config = Config(str(Path(__file__).with_name("alembic.ini")))
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        return config

    def migrate(self, revision: str = "head") -> None:
        """Brings the schema to `revision` (all migrations run in one transaction)."""
        from alembic import command

        with self.engine.begin() as connection:
            command.upgrade(self._alembic_config(connection), revision)

    def downgrade(self, revision: str) -> None:
        """Takes the schema back to `revision` ("base": no tables). Loses data."""
        from alembic import command

        with self.engine.begin() as connection:
            command.downgrade(self._alembic_config(connection), revision)

    def revision(self) -> str | None:
        """The schema's current Alembic revision (None: not created yet)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head(self) -> str:
        from alembic.script import ScriptDirectory

        with self.engine.connect() as connection:
            script = ScriptDirectory.from_config(self._alembic_config(connection))
            return script.get_current_head()

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"


def open_database(url: str, *, migrate: bool = True) -> Database:
    """Connects (clear error if unreachable) and, by default, migrates to the head."""
    db = Database(url)
    if migrate:
        db.migrate()
    return db


class ApiKeyRow(Base):
    """A key of the HTTP API (`tlc_jax.live.apikeys`): only the SHA-256 of the secret
    token is stored, with a short non-secret prefix of it to find the row. Revoked keys
    stay (revoked_at set) for the record; names are never reused."""

    __tablename__ = "api_keys"

    id: orm.Mapped[int] = orm.mapped_column(_id_type(), primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(200), unique=True)
    prefix: orm.Mapped[str] = orm.mapped_column(sa.String(16), index=True)
    sha256: orm.Mapped[str] = orm.mapped_column(sa.String(64), unique=True)
    scopes: orm.Mapped[list[str]] = orm.mapped_column(sa.JSON)  # Of "read", "write", "admin".
    rate_per_min: orm.Mapped[int] = orm.mapped_column(sa.Integer)
    created_at: orm.Mapped[float] = orm.mapped_column(sa.Double, default=time.time)
    last_used_at: orm.Mapped[float | None] = orm.mapped_column(sa.Double)
    revoked_at: orm.Mapped[float | None] = orm.mapped_column(sa.Double)

    __table_args__ = (sa.CheckConstraint("rate_per_min > 0", name="rate_per_min"),)

    def __repr__(self) -> str:  # No hash.
        return f"ApiKeyRow(id={self.id}, name={self.name!r}, prefix={self.prefix!r})"
