"""The live service: devices in the database -> run-time -> frame store -> analyzer ->
predictions in the database, in one asyncio process.

    Runtime ──frames──> ingest queue ──> writer ──(frame id, frame)──> analyzer queue
      ^ devices (re-read every refresh_s)    |  file (atomic) + frames row    |
      └──────────── database <───────────────┴──────── predictions rows <─────┘ analyzer

- Both queues are bounded and drop the oldest frame when full (counted: `dropped:ingest`,
  `dropped:analyzer`), so a slow disk or a slow model never grows memory.
- The writer stores a batch of frames and inserts their rows in one transaction; a row
  is inserted only after its file is complete, and retention removes rows before files,
  so no row ever points at a missing or half-written file. Retention goes by the
  committed rows (oldest `captured_at` first), never by the files on disk, which include
  frames whose rows are not committed yet.
- A process killed between a file and its row's commit leaves a file without a row:
  processes that store frames reconcile the store with the database at start-up and
  every `reconcile_every_s` (`tlc_jax.live.fsck`: such files older than
  `orphan_grace_s` removed, rows without files removed).
- Devices are confined by the operator's `DevicePolicy` (tlc_jax.live.policy): the
  allow-list for their addresses, the folders `folder` devices may read, frame-size
  bounds.
- The analyzer classifies frames from all devices together (fixed, pre-compiled batch
  sizes) and inserts the top-k predictions of a batch in one transaction, under the model
  version registered at start.
- `health()` gives every counter, the queue depths, the failing devices with their last
  error, and frame-to-prediction latency percentiles; it is written to `health.json`
  in the work directory every `health_every_s` (atomically).
Storing frames (files + rows) runs on the event loop in batches; the analyzer, the
predictions' rows, device-list refreshes and retention run in worker threads.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa
from absl import logging

from tlc_jax.fileio import write_json_atomic
from tlc_jax.live import fsck, leases, registry, ssrf
from tlc_jax.live.db import Database, DeviceRow, FrameRow, ModelVersionRow
from tlc_jax.live.leases import DeviceLeases, FrameClaims
from tlc_jax.live.devices import Frame
from tlc_jax.live.policy import (DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_FRAME_PIXELS,
                                 DevicePolicy)
from tlc_jax.live.runtime import LatestFrameQueue, Runtime
from tlc_jax.live.store import FrameStore


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    # Fetches in flight at once, all devices together; raise it for slow (remote)
    # cameras: throughput is at most max_concurrency / fetch latency.
    max_concurrency: int = 64
    # Pool size of each of the run-time's HTTP clients (max_concurrency / this clients):
    # httpcore's pool slows down quadratically with size; 2 measured fastest.
    connections_per_client: int = 2
    timeout_s: float = 10.0  # Per fetch.
    refresh_s: float = 5.0  # How often the device list is re-read from the database.
    fail_after: int = 5  # Consecutive errors before a device is marked failing.
    retry_failing_s: float = 600.0  # Poll interval of a failing device.
    # Addresses the run-time may fetch from although they are loopback, private,
    # link-local or metadata addresses (tlc_jax/live/ssrf.py): CIDR networks, IPs or
    # host names, e.g. ("10.1.2.0/24", "camera.local"). Everything else private is
    # refused (counted as rejected:forbidden_address).
    allow: tuple[str, ...] = ()
    # Folders `folder` devices may read (none: every folder device is refused), and the
    # largest frame (bytes, pixels) a device may be configured for (larger settings
    # are clamped). See tlc_jax/live/policy.py.
    folder_roots: tuple[str, ...] = ()
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS
    ingest_queue: int = 2048  # Fetched frames waiting to be stored (oldest dropped).
    analyzer_queue: int = 512  # Stored frames waiting to be classified (oldest dropped).
    write_batch: int = 64  # Frames stored per database transaction, at most.
    max_wait_s: float = 0.05  # The classify stage waits this long to fill a batch.
    retention_max_bytes: int | None = None  # Frame store size limit.
    retention_max_age_s: float | None = None  # Frames older than this are deleted.
    retention_every_s: float = 60.0
    # Files without a row younger than this are left by reconciliation (another process
    # sharing the store may be about to commit them); 0 when one process writes it.
    orphan_grace_s: float = 60.0
    reconcile_every_s: float = 600.0
    health_every_s: float = 5.0
    latency_window: int = 10_000  # Latest frame-to-prediction latencies kept.
    # What this process does (several processes share devices and frames through the
    # database, tlc_jax/live/leases.py): "all" polls, stores and classifies (frames go
    # to its analyzer in memory); "runtime" polls and stores; "analyzer" classifies
    # frames that others stored, claimed from the database.
    role: str = "all"
    lease_s: float = 30.0  # Device leases last this long; renewed every refresh_s.
    claim_s: float = 60.0  # An analyzer's claim on a batch of frames lasts this long.
    classify_max_age_s: float = 300.0  # Analyzer processes skip older frames.

    def __post_init__(self):
        if self.role not in ("all", "runtime", "analyzer"):
            raise ValueError(f"role must be all, runtime or analyzer; got {self.role!r}.")
        if not self.refresh_s * 2 < self.lease_s:
            raise ValueError(f"refresh_s ({self.refresh_s}) must be under half of lease_s "
                             f"({self.lease_s}): leases are renewed at each refresh.")
        if not self.orphan_grace_s >= 0:
            raise ValueError(f"orphan_grace_s must be >= 0; got {self.orphan_grace_s}.")

    def policy(self) -> DevicePolicy:
        """The operator's device policy these settings describe (ValueError names a
        bad --allow item or --folder-root)."""
        return DevicePolicy.from_options(self.allow, self.folder_roots,
                                         self.max_frame_bytes, self.max_frame_pixels)


class LiveService:
    def __init__(self, db: Database, store: FrameStore, analyzer=None,
                 config: ServiceConfig = ServiceConfig(), *,
                 health_path: str | os.PathLike | None = None, seed: int = 0):
        self.db, self.store, self.analyzer, self.config = db, store, analyzer, config
        self.policy = config.policy()
        if config.role == "analyzer" and analyzer is None:
            raise ValueError("role 'analyzer' needs an analyzer (a --checkpoint).")
        if config.role == "runtime":
            self.analyzer = None  # Frames are left for analyzer processes.
        self.leases = (DeviceLeases(db, lease_s=config.lease_s, role=config.role)
                       if config.role != "analyzer" else None)
        self.claims = (FrameClaims(db, claim_s=config.claim_s,
                                   max_age_s=config.classify_max_age_s)
                       if config.role == "analyzer" else None)
        self._initial_hashes: dict[str, str] = {}
        self._restarts: set[str] = set()  # Re-leased while polled: poll afresh.
        self._acquired: set[int] = set()  # Leases taken since the last full refresh.
        self.worker_id = (self.leases or self.claims).owner
        self.health_path = Path(health_path) if health_path else None
        self.ingest: LatestFrameQueue[Frame] = LatestFrameQueue(config.ingest_queue)
        self.to_classify: LatestFrameQueue[tuple[int, Frame]] = LatestFrameQueue(
            config.analyzer_queue)
        self.runtime = Runtime(self._list_devices, self.ingest,
                               max_concurrency=config.max_concurrency,
                               timeout_s=config.timeout_s, refresh_s=config.refresh_s,
                               fail_after=config.fail_after,
                               retry_failing_s=config.retry_failing_s, seed=seed,
                               initial_hash=lambda n: self._initial_hashes.pop(n, ""),
                               restarted=self._take_restarts)
        self.counters: collections.Counter[str] = collections.Counter()
        self.latencies: collections.deque[float] = collections.deque(
            maxlen=config.latency_window)
        self._device_ids: dict[str, int] = {}
        self.model_version_id: int | None = None
        self.started_at = time.time()

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event,
                  client: httpx.AsyncClient | None = None) -> None:
        """Runs every stage until `stop` is set; then finishes the batches in hand."""
        if self.analyzer is not None:
            self.model_version_id = await asyncio.to_thread(self._register_model)
            await asyncio.to_thread(self.analyzer.warm_up)
        own_clients = client is None and self.config.role != "analyzer"
        clients = [client]
        if own_clients:  # Small pools: see Runtime.run.
            c = self.config
            n = max(1, -(-c.max_concurrency // c.connections_per_client))
            limits = httpx.Limits(max_connections=c.connections_per_client,
                                  max_keepalive_connections=c.connections_per_client)
            clients = [ssrf.guarded_client(self.policy.allow, limits=limits,
                                           follow_redirects=False) for _ in range(n)]
        if self.config.role != "analyzer":  # Before this process writes any frame.
            await asyncio.to_thread(self.reconcile)
        self.started_at = time.time()
        self._writer_done = asyncio.Event()
        stages = [self._retention(stop), self._health_loop(stop)]
        if self.config.role == "analyzer":
            stages.append(self._claimer(stop))
        else:
            stages += [self.runtime.run(clients, stop), self._writer(stop),
                       self._reconcile_loop(stop)]
            if self.analyzer is not None:
                stages.append(self._classifier(stop))
        try:
            await asyncio.gather(*stages)
        finally:
            if own_clients:
                for c in clients:
                    await c.aclose()
            await asyncio.to_thread(self._final_health)
            if self.leases is not None:  # A clean stop hands devices over at once.
                await asyncio.to_thread(self.leases.release_all)
            else:
                await asyncio.to_thread(leases.forget_worker, self.db, self.worker_id)

    async def _batch(self, queue: LatestFrameQueue, size: int, wait_s: float,
                     stop: asyncio.Event) -> list:
        """The first item (waiting up to 0.1 s, re-checking `stop`), then whatever
        arrives within wait_s, up to size."""
        try:
            items = [await asyncio.wait_for(queue.get(), timeout=0.1)]
        except asyncio.TimeoutError:
            return []
        deadline = time.monotonic() + wait_s
        while len(items) < size:
            if len(queue):
                items.append(await queue.get())
                continue
            left = deadline - time.monotonic()
            if left <= 0 or stop.is_set():
                break
            try:
                items.append(await asyncio.wait_for(queue.get(), timeout=left))
            except asyncio.TimeoutError:
                break
        return items

    async def _writer(self, stop: asyncio.Event) -> None:
        try:
            while not (stop.is_set() and not len(self.ingest)):
                frames = await self._batch(self.ingest, self.config.write_batch, 0.0, stop)
                if not frames:
                    continue
                try:
                    # On the event loop, not in a worker thread: a thread making many
                    # short system calls waits for the GIL after each while the loop is
                    # busy (measured: 127 vs 541 frames/s stored with 1,000 cameras).
                    stored = self.store_frames(frames)
                except Exception as e:  # noqa: BLE001 - the service outlives a bad batch.
                    self.counters["store_errors"] += len(frames)
                    logging.error("Could not store %d frames: %s: %s", len(frames),
                                  type(e).__name__, e)
                    continue
                if self.analyzer is not None:
                    for item in stored:
                        self.to_classify.put(item)
        finally:
            self._writer_done.set()

    async def _classifier(self, stop: asyncio.Event) -> None:
        largest = self.analyzer.batch_sizes[-1]
        # After `stop`: classify what the writer still hands on, then end.
        while not (self._writer_done.is_set() and not len(self.to_classify)):
            items = await self._batch(self.to_classify, largest, self.config.max_wait_s,
                                      stop)
            if not items:
                continue
            try:
                await asyncio.to_thread(self.classify_frames, items)
            except Exception as e:  # noqa: BLE001
                self.counters["classify_errors"] += len(items)
                logging.error("Could not classify %d frames: %s: %s", len(items),
                              type(e).__name__, e)

    async def _claimer(self, stop: asyncio.Event) -> None:
        """Role "analyzer": classify frames that run-time processes stored."""
        largest = self.analyzer.batch_sizes[-1]
        while not stop.is_set():
            try:
                n = await asyncio.to_thread(self.classify_claimed, largest)
            except Exception as e:  # noqa: BLE001
                self.counters["classify_errors"] += 1
                logging.error("Could not classify claimed frames: %s: %s",
                              type(e).__name__, e)
                n = 0
            if n == 0:
                try:
                    await asyncio.wait_for(stop.wait(), self.config.max_wait_s * 4)
                except asyncio.TimeoutError:
                    pass

    async def _retention(self, stop: asyncio.Event) -> None:
        c = self.config
        if c.retention_max_bytes is None and c.retention_max_age_s is None:
            return
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.enforce_retention)
            except Exception as e:  # noqa: BLE001
                logging.error("Retention failed: %s: %s", type(e).__name__, e)
            try:
                await asyncio.wait_for(stop.wait(), c.retention_every_s)
            except asyncio.TimeoutError:
                pass

    async def _reconcile_loop(self, stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), self.config.reconcile_every_s)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.to_thread(self.reconcile)
            except Exception as e:  # noqa: BLE001 - a database hiccup is not fatal.
                logging.error("Reconciling the frame store failed: %s: %s",
                              type(e).__name__, e)

    async def _health_loop(self, stop: asyncio.Event) -> None:
        """Every health_every_s: the snapshot into the `workers` table (for the API of
        any host) and, if asked, into a JSON file."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.config.health_every_s)
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.to_thread(self.write_health)
            except Exception as e:  # noqa: BLE001 - a database hiccup is not fatal.
                logging.warning("Could not publish health: %s: %s", type(e).__name__, e)

    # ------------------------------------------------------------------ the work (threads)

    def _list_devices(self):
        """The devices this process holds leases on (renewed here, every refresh).

        A device that starts being polled here (newly acquired, or held but not polled
        since an earlier refresh failed after taking its lease) starts from the hash of
        its newest stored frame, so a picture the previous holder stored is not stored
        again."""
        lease = self.leases.renew()
        # Kept until a refresh succeeds: a refresh may fail after taking leases.
        self._acquired |= lease.acquired
        with self.db.session() as session:
            rows = session.scalars(sa.select(DeviceRow).where(
                DeviceRow.id.in_(lease.held), DeviceRow.active)).all()
            devices = registry.runtime_devices_of(rows, self.policy)
            names = {r.id: r.name for r in rows}
            starting = (set(names) - set(self._device_ids.values())) | (
                self._acquired & set(names))
            if starting:
                hashes = leases.last_hashes(session, sorted(starting))
                self._initial_hashes.update({names[i]: hashes.get(i, "")
                                             for i in starting})
        # Polled before and taken again (the lease had expired, another process may
        # have polled the device since): its polling restarts from the stored hash.
        self._restarts |= {names[i] for i in starting if i in self._device_ids.values()}
        self._acquired = set()
        self._device_ids = {name: i for i, name in names.items()}
        self.counters["leases_acquired"] += len(lease.acquired)
        self.counters["leases_released"] += len(lease.released)
        return devices

    def _take_restarts(self) -> set[str]:
        restarts, self._restarts = self._restarts, set()
        return restarts

    def _register_model(self) -> int:
        a = self.analyzer
        with self.db.transaction() as session:  # Several processes may race here.
            leases.insert_if_absent(session, ModelVersionRow.__table__, [dict(
                name=a.run_dir.name, run_dir=str(a.run_dir), step=a.step,
                class_names=list(a.class_names), created_at=time.time())],
                ["run_dir", "step"])
        with self.db.session() as session:
            return session.scalar(sa.select(ModelVersionRow.id).where(
                ModelVersionRow.run_dir == str(a.run_dir), ModelVersionRow.step == a.step))

    def store_frames(self, frames: list[Frame]) -> list[tuple[int, Frame]]:
        """Files first, then their rows in one transaction, for the devices whose lease
        this process still holds (checked and locked in that transaction), and of those
        only the frames that extend the device's stored sequence (`follows_last`: newer
        than its newest stored frame, another picture); files of refused frames or of a
        failed transaction are deleted again."""
        ids_by_name = self._device_ids
        known = [f for f in frames if f.device in ids_by_name]
        self.counters["dropped:device_removed"] += len(frames) - len(known)
        paths = [self.store.put(f) for f in known]
        kept: list[tuple[Frame, str]] = []
        try:
            with self.db.transaction() as session:
                held = self.leases.still_held(session, {ids_by_name[f.device]
                                                        for f in known})
                ours = [(f, p) for f, p in zip(known, paths)
                        if ids_by_name[f.device] in held]
                # Under the lease lock no other process stores these devices' frames:
                # the newest stored frame read here stays the newest until commit.
                order, older, unchanged = leases.follows_last(
                    [f for f, _ in ours], lambda f: ids_by_name[f.device],
                    leases.last_frames(session, sorted(held)))
                kept = [ours[i] for i in order]
                rows = [dict(device_id=ids_by_name[f.device], captured_at=f.captured_at,
                             path=p, sha256=f.sha256, size=len(f.data), width=f.width,
                             height=f.height) for f, p in kept]
                ids = list(session.scalars(sa.insert(FrameRow).returning(
                    FrameRow.id, sort_by_parameter_order=True), rows)) if rows else []
        except Exception:
            for p in paths:
                self.store.delete(p)
            raise
        kept_paths = {p for _, p in kept}
        for p in paths:
            if p not in kept_paths:
                self.store.delete(p)
        self.counters["dropped:lease_lost"] += len(known) - len(ours)
        self.counters["dropped:older_than_stored"] += older
        self.counters["dropped:unchanged_at_store"] += unchanged
        self.counters["stored"] += len(ids)
        return list(zip(ids, (f for f, _ in kept)))

    def classify_frames(self, items: list[tuple[int, Frame]]) -> None:
        ids, frames = zip(*items)
        predictions = self.analyzer.classify(list(frames))
        now = time.time()
        rows = [dict(frame_id=i, model_version_id=self.model_version_id,
                     top_class=p.classes[0], top_probability=p.probabilities[0],
                     topk=[[c, q] for c, q in zip(p.classes, p.probabilities)],
                     created_at=now)
                for i, p in zip(ids, predictions)]
        with self.db.transaction() as session:
            # Frames deleted by retention meanwhile are skipped; so is a frame another
            # process classified first.
            inserted = leases.insert_predictions(session, rows)
            if self.claims is not None:
                self.claims.done(session, ids)
        done = time.time()
        self.counters["predictions"] += inserted
        self.counters["dropped:frame_expired"] += len(items) - inserted
        self.latencies.extend(done - f.captured_at for f in frames)

    def classify_claimed(self, limit: int) -> int:
        """Role "analyzer": claim up to `limit` frames, classify, store; returns how many
        were claimed."""
        rows = self.claims.claim(self.model_version_id, limit)
        items = []
        for row in rows:
            try:
                data = self.store.read(row.path)
            except FileNotFoundError:  # Deleted by retention since.
                self.counters["dropped:frame_expired"] += 1
                continue
            items.append((row.id, Frame(str(row.device_id), row.captured_at, data,
                                        row.sha256, row.width, row.height)))
        if items:
            self.classify_frames(items)
        return len(rows)

    def enforce_retention(self, now: float | None = None) -> int:
        """Deletes the committed frames older than retention_max_age_s, then the oldest
        until the committed frames' total size fits retention_max_bytes: rows first,
        then files. Only committed rows are considered, so the file of a frame whose
        row is still being inserted is never touched."""
        c = self.config
        doomed = self._expired(c.retention_max_bytes, c.retention_max_age_s,
                               time.time() if now is None else now)
        for start in range(0, len(doomed), 500):  # Rows first, then files.
            chunk = doomed[start:start + 500]
            with self.db.transaction() as session:
                session.execute(sa.delete(FrameRow).where(
                    FrameRow.id.in_([i for i, _ in chunk])))
            for _, path in chunk:
                self.store.delete(path)
        self.counters["retention_deleted"] += len(doomed)
        return len(doomed)

    def _expired(self, max_bytes: int | None, max_age_s: float | None,
                 now: float) -> list[tuple[int, str]]:
        """(id, path) of the committed frames retention deletes, oldest first."""
        out: list[tuple[int, str]] = []
        order = (FrameRow.captured_at, FrameRow.id)
        with self.db.session() as session:
            young = sa.true()
            if max_age_s is not None:
                young = FrameRow.captured_at >= now - max_age_s
                out += session.execute(sa.select(FrameRow.id, FrameRow.path).where(
                    sa.not_(young)).order_by(*order)).all()
            if max_bytes is None:
                return out
            excess = session.scalar(sa.select(sa.func.coalesce(
                sa.func.sum(FrameRow.size), 0)).where(young)) - max_bytes
            after = sa.true()
            while excess > 0:  # Oldest first, a page at a time.
                page = session.execute(sa.select(
                    FrameRow.id, FrameRow.path, FrameRow.size, FrameRow.captured_at)
                    .where(young, after).order_by(*order).limit(1000)).all()
                if not page:
                    break
                for frame_id, path, size, _ in page:
                    if excess <= 0:
                        break
                    out.append((frame_id, path))
                    excess -= size
                last_id, _, _, last_at = page[-1]
                after = sa.or_(FrameRow.captured_at > last_at, sa.and_(
                    FrameRow.captured_at == last_at, FrameRow.id > last_id))
        return out

    def reconcile(self) -> fsck.FsckReport | None:
        """Removes files without rows (older than orphan_grace_s), rows without files
        and temporary files of interrupted writes (tlc_jax.live.fsck); logs what it
        found."""
        try:
            report = fsck.check(self.db, self.store, grace_s=self.config.orphan_grace_s,
                                repair=True)
        except fsck.FsckRefused as e:
            logging.warning("Not reconciling the frame store: %s", e)
            return None
        for name, found in (("orphan_files", report.orphan_files),
                            ("rows_without_files", report.missing_files),
                            ("temp_files", report.temp_files)):
            if found:
                self.counters[f"fsck:{name}_removed"] += len(found)
        if not report.clean:
            logging.warning("Reconciled the frame store with the database (after a crash?):"
                            "\n%s", report)
        return report

    # ------------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies, float)
        elapsed = max(1e-9, time.time() - self.started_at)
        counters = {**self.runtime.counters, **self.counters,
                    "dropped:ingest": self.ingest.dropped,
                    "dropped:analyzer": self.to_classify.dropped}
        return {
            "time": time.time(),
            "uptime_s": elapsed,
            "devices_polled": len(self.runtime.status),
            "failing": {n: self.runtime.status[n].last_reason
                        for n in self.runtime.failing()},
            "queues": {"ingest": len(self.ingest), "analyzer": len(self.to_classify)},
            "counters": dict(sorted(counters.items())),
            "frames_per_s": counters.get("stored", 0) / elapsed,
            "predictions_per_s": counters.get("predictions", 0) / elapsed,
            "latency_s": ({"p50": float(np.percentile(lat, 50)),
                           "p95": float(np.percentile(lat, 95)),
                           "max": float(lat.max()), "n": int(lat.size)}
                          if lat.size else None),
            "model_version_id": self.model_version_id,
            "role": self.config.role,
            "devices_leased": len(self.leases.held) if self.leases else 0,
        }

    def _final_health(self) -> None:
        try:
            self.write_health()
        except Exception as e:  # noqa: BLE001 - stopping anyway.
            logging.warning("Could not publish the final health: %s", e)

    def write_health(self) -> None:
        health = self.health()
        leases.publish_health(self.db, self.worker_id, self.config.role, health)
        if self.health_path is not None:
            write_json_atomic(self.health_path, health)
