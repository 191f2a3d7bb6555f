"""Sharing the work between processes and machines: device leases and frame claims.

Several run-time processes (on one host or many, over one PostgreSQL database, or one
SQLite file on one host) poll disjoint sets of devices; several analyzer processes
classify disjoint sets of frames. Nothing coordinates them but the database:

- every process registers in `workers` and heartbeats;
- a run-time process holds *leases* on devices (`device_leases`: owner, expires_at)
  and renews them every lease_s / 3; it takes its fair share, ceil(active devices / live
  run-time processes), from devices whose lease is absent or expired, and gives back
  what exceeds it, so a new process gets devices and a crashed one's devices move to
  the others within one lease period;
- frames are stored only for devices whose lease the writer still holds, checked (and
  locked) in the insert's transaction, and only if newer than the device's newest
  stored frame and a different picture from it (read under that lock): whatever a
  process still had queued from before a handover, a device's stored frames stay in
  capture order with no picture stored twice in a row; a newly leased device starts
  polling from the hash of its last stored frame, so a handover skips no frame;
- an analyzer process *claims* unclassified frames (`frame_claims`), newest first, and
  predictions are inserted "if absent" (one per frame and model version), so no frame
  is classified twice even when a claim expires mid-batch.
On PostgreSQL the candidate rows are locked with `FOR UPDATE SKIP LOCKED`, so processes
never wait on each other; the claim itself is an upsert whose WHERE clause is checked
against the latest row version (PostgreSQL) or under SQLite's single writer, so two
processes can never both hold one lease. Lease times come from the database's clock.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import secrets
import socket
import time
from typing import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects import postgresql, sqlite

from tlc_jax.live.db import (Database, DeviceLeaseRow, DeviceRow, FrameClaimRow, FrameRow,
                             PredictionRow, WorkerRow)


def worker_id() -> str:
    """<host>:<pid>:<random>, unique per process start."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(3)}"


def db_now(session: orm.Session) -> float:
    """The database server's clock (Unix seconds): one clock for every host."""
    if session.get_bind().dialect.name == "postgresql":
        return float(session.scalar(sa.text("SELECT extract(epoch FROM clock_timestamp())")))
    # SQLite lives on one host: its clock is this host's (no query, so no read snapshot
    # starts before a transaction's first write).
    return time.time()


def _insert(session: orm.Session, table: sa.Table):
    """The dialect's INSERT, which has ON CONFLICT (PostgreSQL and SQLite alike)."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _upsert(session: orm.Session, table, key: str, rows: list[dict], owner: str,
            now: float) -> set[int]:
    """Inserts rows; on a conflicting key takes the row over only if it is expired or
    ours already. Returns the keys now held by `owner`."""
    if not rows:
        return set()
    insert = _insert(session, table)
    column = getattr(table.c, key)
    statement = insert.values(rows).on_conflict_do_update(
        index_elements=[column],
        set_={"owner": insert.excluded.owner, "expires_at": insert.excluded.expires_at},
        where=sa.or_(table.c.expires_at < now, table.c.owner == owner),
    ).returning(column)
    return set(session.scalars(statement))


@dataclasses.dataclass
class LeaseState:
    held: set[int]  # Device ids leased now.
    acquired: set[int]  # Of which newly taken in this round.
    released: set[int]
    live_workers: int
    active_devices: int


class DeviceLeases:
    """One run-time process's side of the device leases."""

    def __init__(self, db: Database, owner: str | None = None, *, lease_s: float = 30.0,
                 role: str = "runtime"):
        if lease_s <= 0:
            raise ValueError(f"lease_s must be > 0; got {lease_s}.")
        self.db, self.lease_s, self.role = db, lease_s, role
        self.owner = owner or worker_id()
        self.held: set[int] = set()

    def heartbeat(self, session: orm.Session, now: float) -> None:
        _heartbeat(session, self.owner, self.role, now)

    def renew(self) -> LeaseState:
        """Heartbeat, renew what is held, take or give back towards the fair share."""
        with self.db.transaction() as session:
            now = db_now(session)
            self.heartbeat(session, now)
            expires = now + self.lease_s
            held = set(session.scalars(
                sa.update(DeviceLeaseRow).where(DeviceLeaseRow.owner == self.owner,
                                                DeviceLeaseRow.expires_at >= now)
                .values(expires_at=expires).returning(DeviceLeaseRow.device_id)))
            active = session.scalar(sa.select(sa.func.count()).select_from(DeviceRow)
                                    .where(DeviceRow.active))
            live = session.scalar(
                sa.select(sa.func.count()).select_from(WorkerRow).where(
                    WorkerRow.role.in_(("runtime", "all")),
                    WorkerRow.heartbeat_at >= now - self.lease_s)) or 1
            share = math.ceil(active / live)
            # Devices deactivated or deleted: give them back.
            inactive = set(session.scalars(sa.select(DeviceLeaseRow.device_id).join(
                DeviceRow, DeviceRow.id == DeviceLeaseRow.device_id).where(
                DeviceLeaseRow.owner == self.owner, ~DeviceRow.active)))
            released = inactive | set(sorted(held - inactive)[share:])
            if released:
                session.execute(sa.delete(DeviceLeaseRow).where(
                    DeviceLeaseRow.owner == self.owner,
                    DeviceLeaseRow.device_id.in_(released)))
            held -= released
            acquired: set[int] = set()
            want = share - len(held)
            if want > 0:
                candidates = (
                    sa.select(DeviceRow.id)
                    .outerjoin(DeviceLeaseRow, DeviceLeaseRow.device_id == DeviceRow.id)
                    .where(DeviceRow.active,
                           sa.or_(DeviceLeaseRow.device_id.is_(None),
                                  DeviceLeaseRow.expires_at < now))
                    .order_by(DeviceRow.id).limit(want)
                    .with_for_update(of=DeviceRow, skip_locked=True))
                ids = list(session.scalars(candidates))
                acquired = _upsert(session, DeviceLeaseRow.__table__, "device_id",
                                   [dict(device_id=i, owner=self.owner, expires_at=expires)
                                    for i in ids], self.owner, now)
                held |= acquired
            # Forget workers silent for ten lease periods (their leases expired long ago).
            session.execute(sa.delete(WorkerRow).where(
                WorkerRow.heartbeat_at < now - 10 * self.lease_s))
        self.held = held
        return LeaseState(held, acquired, released, live, active)

    def still_held(self, session: orm.Session, device_ids: Iterable[int]) -> set[int]:
        """Of `device_ids`, those whose lease this process holds unexpired, locked until
        the end of the caller's transaction (PostgreSQL) so no one takes them over
        before the caller's inserts commit."""
        ids = set(device_ids)
        if not ids:
            return set()
        now = db_now(session)
        # A no-op UPDATE rather than SELECT ... FOR UPDATE: it locks the rows on
        # PostgreSQL and takes SQLite's write lock (which ignores FOR UPDATE), so a
        # release or take-over cannot commit between this check and the caller's
        # inserts.
        return set(session.scalars(
            sa.update(DeviceLeaseRow).where(
                DeviceLeaseRow.owner == self.owner, DeviceLeaseRow.expires_at >= now,
                DeviceLeaseRow.device_id.in_(ids))
            .values(expires_at=DeviceLeaseRow.expires_at)
            .returning(DeviceLeaseRow.device_id)))

    def release_all(self) -> None:
        """On a clean stop: give every device back at once (no wait for expiry)."""
        with self.db.transaction() as session:
            session.execute(sa.delete(DeviceLeaseRow).where(
                DeviceLeaseRow.owner == self.owner))
            session.execute(sa.delete(WorkerRow).where(WorkerRow.id == self.owner))
        self.held = set()


def publish_health(db: Database, owner: str, role: str, health: dict) -> None:
    """Heartbeat with the process's health snapshot (any role)."""
    with db.transaction() as session:
        _heartbeat(session, owner, role, db_now(session), health)


def _heartbeat(session: orm.Session, owner: str, role: str, now: float,
               health: dict | None = None) -> None:
    """Registers the process, or refreshes its heartbeat (and health, when given)."""
    insert = _insert(session, WorkerRow.__table__)
    refresh = {"heartbeat_at": now} | ({"health": health} if health is not None else {})
    session.execute(insert.values(
        id=owner, role=role, host=socket.gethostname()[:200], pid=os.getpid(),
        started_at=now, heartbeat_at=now, health=health).on_conflict_do_update(
        index_elements=[WorkerRow.__table__.c.id], set_=refresh))


def forget_worker(db: Database, owner: str) -> None:
    with db.transaction() as session:
        session.execute(sa.delete(WorkerRow).where(WorkerRow.id == owner))


def fleet_health(session: orm.Session, stale_s: float = 60.0) -> dict | None:
    """The health of every live process (heartbeat within stale_s) combined, in the
    shape of one `LiveService.health()`: counters, queue depths, rates and devices
    polled added up, failing devices merged (device -> last error), uptime the longest,
    latency the worst process's; plus `workers` (one entry per process) and `devices`
    (active, leased). None when no process reports."""
    now = db_now(session)
    workers = session.scalars(sa.select(WorkerRow).where(
        WorkerRow.heartbeat_at >= now - stale_s).order_by(WorkerRow.id)).all()
    counters: collections.Counter[str] = collections.Counter()
    failing: dict[str, str] = {}
    listed = []
    for w in workers:
        h = w.health or {}
        counters.update(h.get("counters", {}))
        failing.update(h.get("failing", {}))
        listed.append({"id": w.id, "role": w.role, "host": w.host, "pid": w.pid,
                       "heartbeat_age_s": round(now - w.heartbeat_at, 3),
                       "uptime_s": h.get("uptime_s"), "queues": h.get("queues"),
                       "latency_s": h.get("latency_s"),
                       "frames_per_s": h.get("frames_per_s"),
                       "predictions_per_s": h.get("predictions_per_s"),
                       "failing": len(h.get("failing", {}))})
    if not workers:
        return None
    active = session.scalar(sa.select(sa.func.count()).select_from(DeviceRow)
                            .where(DeviceRow.active))
    leased = session.scalar(sa.select(sa.func.count()).select_from(DeviceLeaseRow)
                            .where(DeviceLeaseRow.expires_at >= now))
    healths = [w.health or {} for w in workers]
    queues: collections.Counter[str] = collections.Counter()
    for h in healths:
        queues.update(h.get("queues") or {})
    latencies = [h["latency_s"] for h in healths if h.get("latency_s")]
    versions = sorted({h["model_version_id"] for h in healths
                       if h.get("model_version_id") is not None})
    return {
        "time": max(w.heartbeat_at for w in workers),
        "uptime_s": max((h.get("uptime_s") or 0.0) for h in healths),
        "devices_polled": sum(h.get("devices_polled") or 0 for h in healths),
        "failing": dict(sorted(failing.items())),
        "queues": dict(queues),
        "counters": dict(sorted(counters.items())),
        "frames_per_s": sum(h.get("frames_per_s") or 0.0 for h in healths),
        "predictions_per_s": sum(h.get("predictions_per_s") or 0.0 for h in healths),
        "latency_s": max(latencies, key=lambda x: x["p95"]) if latencies else None,
        "model_version_id": versions[-1] if versions else None,
        "workers": listed,
        "devices": {"active": active, "leased": leased},
    }


def last_frames(session: orm.Session,
                device_ids: Sequence[int]) -> dict[int, tuple[float, str]]:
    """(captured_at, SHA-256) of each device's newest stored frame."""
    if not device_ids:
        return {}
    newest = (sa.select(FrameRow.device_id, sa.func.max(FrameRow.captured_at).label("t"))
              .where(FrameRow.device_id.in_(device_ids)).group_by(FrameRow.device_id)
              .subquery())
    rows = session.execute(sa.select(FrameRow.device_id, FrameRow.captured_at,
                                     FrameRow.sha256).join(
        newest, sa.and_(FrameRow.device_id == newest.c.device_id,
                        FrameRow.captured_at == newest.c.t)))
    return {i: (t, sha) for i, t, sha in rows.all()}


def last_hashes(session: orm.Session, device_ids: Sequence[int]) -> dict[int, str]:
    """The SHA-256 of each device's newest stored frame."""
    return {i: sha for i, (_, sha) in last_frames(session, device_ids).items()}


def follows_last(frames: Sequence, device_of, last: dict[int, tuple[float, str]]
                 ) -> tuple[list[int], int, int]:
    """Which of `frames` (objects with captured_at and sha256) extend each device's
    stored sequence: newer than the device's newest stored frame (`last`: device ->
    (captured_at, sha256)) and a different picture from the frame before it. Returns
    (indices kept, in capture order; count older; count unchanged). `last` is updated
    in place with the kept frames."""
    kept, older, unchanged = [], 0, 0
    for i in sorted(range(len(frames)), key=lambda i: frames[i].captured_at):
        f, device = frames[i], device_of(frames[i])
        t, sha = last.get(device, (-math.inf, ""))
        if f.captured_at <= t:
            older += 1
        elif f.sha256 == sha:
            unchanged += 1
        else:
            kept.append(i)
            last[device] = (f.captured_at, f.sha256)
    return kept, older, unchanged


class FrameClaims:
    """One analyzer process's side: claim unclassified frames, newest first."""

    def __init__(self, db: Database, owner: str | None = None, *, claim_s: float = 60.0,
                 max_age_s: float = 300.0):
        self.db, self.claim_s, self.max_age_s = db, claim_s, max_age_s
        self.owner = owner or worker_id()

    def claim(self, model_version_id: int, limit: int) -> list[FrameRow]:
        """Up to `limit` frames without a prediction of this model version, captured in
        the last max_age_s, not claimed by a live claim; newest first."""
        with self.db.transaction() as session:
            now = db_now(session)
            predicted = sa.select(PredictionRow.id).where(
                PredictionRow.frame_id == FrameRow.id,
                PredictionRow.model_version_id == model_version_id).exists()
            candidates = (
                sa.select(FrameRow.id)
                .outerjoin(FrameClaimRow, FrameClaimRow.frame_id == FrameRow.id)
                .where(~predicted, FrameRow.captured_at >= now - self.max_age_s,
                       sa.or_(FrameClaimRow.frame_id.is_(None),
                              FrameClaimRow.expires_at < now))
                .order_by(FrameRow.captured_at.desc()).limit(limit)
                .with_for_update(of=FrameRow, skip_locked=True))
            ids = list(session.scalars(candidates))
            got = _upsert(session, FrameClaimRow.__table__, "frame_id",
                          [dict(frame_id=i, owner=self.owner, expires_at=now + self.claim_s)
                           for i in ids], self.owner, now)
            if not got:
                return []
            return list(session.scalars(sa.select(FrameRow).where(FrameRow.id.in_(got))
                                        .order_by(FrameRow.captured_at.desc())))

    def done(self, session: orm.Session, frame_ids: Iterable[int]) -> None:
        ids = list(frame_ids)
        if ids:
            session.execute(sa.delete(FrameClaimRow).where(FrameClaimRow.frame_id.in_(ids),
                                                           FrameClaimRow.owner == self.owner))


def insert_predictions(session: orm.Session, rows: list[dict]) -> int:
    """Inserts prediction rows, skipping any (frame, model version) already predicted
    or whose frame is gone; returns how many were inserted."""
    if not rows:
        return 0
    alive = set(session.scalars(sa.select(FrameRow.id).where(
        FrameRow.id.in_([r["frame_id"] for r in rows]))))
    rows = [r for r in rows if r["frame_id"] in alive]
    if not rows:
        return 0
    return insert_if_absent(session, PredictionRow.__table__, rows,
                            ["frame_id", "model_version_id"])


def insert_if_absent(session: orm.Session, table: sa.Table, rows: list[dict],
                     unique: list[str]) -> int:
    """INSERT ... ON CONFLICT (unique) DO NOTHING; returns how many rows were inserted."""
    insert = _insert(session, table)
    primary = list(table.primary_key.columns)[0]
    result = session.execute(insert.values(rows).on_conflict_do_nothing(
        index_elements=unique).returning(primary))
    return len(result.all())
