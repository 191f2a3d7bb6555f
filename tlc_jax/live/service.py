"""The live service: devices in the database -> run-time -> frame store -> analyzer ->
predictions in the database, in one asyncio process.

    Runtime ──frames──> ingest queue ──> writer ──(frame id, frame)──> analyzer queue
      ^ devices (re-read every refresh_s)    |  file (atomic) + frames row    |
      └──────────── database <───────────────┴──────── predictions rows <─────┘ analyzer

- Both queues are bounded and drop the oldest frame when full (counted: `dropped:ingest`,
  `dropped:analyzer`), so a slow disk or a slow model never grows memory.
- The writer stores a batch of frames and inserts their rows in one transaction; a row
  is inserted only after its file is complete, and retention removes rows before files,
  so no row ever points at a missing or half-written file.
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
from tlc_jax.live import registry, ssrf
from tlc_jax.live.db import Database, DeviceRow, FrameRow, ModelVersionRow, PredictionRow
from tlc_jax.live.devices import Frame
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
    ingest_queue: int = 2048  # Fetched frames waiting to be stored (oldest dropped).
    analyzer_queue: int = 512  # Stored frames waiting to be classified (oldest dropped).
    write_batch: int = 64  # Frames stored per database transaction, at most.
    max_wait_s: float = 0.05  # The analyzer waits this long to fill a batch.
    retention_max_bytes: int | None = None  # Frame store size limit.
    retention_max_age_s: float | None = None  # Frames older than this are deleted.
    retention_every_s: float = 60.0
    health_every_s: float = 5.0
    latency_window: int = 10_000  # Latest frame-to-prediction latencies kept.


class LiveService:
    def __init__(self, db: Database, store: FrameStore, analyzer=None,
                 config: ServiceConfig = ServiceConfig(), *,
                 health_path: str | os.PathLike | None = None, seed: int = 0):
        self.db, self.store, self.analyzer, self.config = db, store, analyzer, config
        self.health_path = Path(health_path) if health_path else None
        self.ingest: LatestFrameQueue[Frame] = LatestFrameQueue(config.ingest_queue)
        self.to_classify: LatestFrameQueue[tuple[int, Frame]] = LatestFrameQueue(
            config.analyzer_queue)
        self.runtime = Runtime(self._list_devices, self.ingest,
                               max_concurrency=config.max_concurrency,
                               timeout_s=config.timeout_s, refresh_s=config.refresh_s,
                               fail_after=config.fail_after,
                               retry_failing_s=config.retry_failing_s, seed=seed)
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
        own_clients = client is None
        if own_clients:  # Small pools: see Runtime.run.
            c = self.config
            n = max(1, -(-c.max_concurrency // c.connections_per_client))
            limits = httpx.Limits(max_connections=c.connections_per_client,
                                  max_keepalive_connections=c.connections_per_client)
            allow = ssrf.AllowList.parse(c.allow)
            clients = [ssrf.guarded_client(allow, limits=limits, follow_redirects=False)
                       for _ in range(n)]
        else:
            clients = [client]
        self.started_at = time.time()
        self._writer_done = asyncio.Event()
        stages = [self.runtime.run(clients, stop), self._writer(stop),
                  self._retention(stop), self._health_loop(stop)]
        if self.analyzer is not None:
            stages.append(self._classifier(stop))
        try:
            await asyncio.gather(*stages)
        finally:
            if own_clients:
                for c in clients:
                    await c.aclose()
            self.write_health()

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

    async def _health_loop(self, stop: asyncio.Event) -> None:
        if self.health_path is None:
            return
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.config.health_every_s)
            except asyncio.TimeoutError:
                pass
            await asyncio.to_thread(self.write_health)

    # ------------------------------------------------------------------ the work (threads)

    def _list_devices(self):
        with self.db.session() as session:
            devices = registry.runtime_devices(session)
            self._device_ids = dict(session.execute(
                sa.select(DeviceRow.name, DeviceRow.id)).all())
        return devices

    def _register_model(self) -> int:
        a = self.analyzer
        with self.db.transaction() as session:
            row = session.scalars(sa.select(ModelVersionRow).where(
                ModelVersionRow.run_dir == str(a.run_dir),
                ModelVersionRow.step == a.step)).one_or_none()
            if row is None:
                row = ModelVersionRow(name=a.run_dir.name, run_dir=str(a.run_dir),
                                      step=a.step, class_names=list(a.class_names))
                session.add(row)
                session.flush()
            return row.id

    def store_frames(self, frames: list[Frame]) -> list[tuple[int, Frame]]:
        """Files first, then their rows in one transaction; files of a failed
        transaction are deleted again."""
        missing = {f.device for f in frames} - set(self._device_ids)
        if missing:  # Added since the last refresh.
            with self.db.session() as session:
                self._device_ids.update(session.execute(sa.select(
                    DeviceRow.name, DeviceRow.id).where(DeviceRow.name.in_(missing))
                ).all())
        known = [f for f in frames if f.device in self._device_ids]
        self.counters["dropped:device_removed"] += len(frames) - len(known)
        paths = [self.store.put(f) for f in known]
        try:
            with self.db.transaction() as session:
                rows = [FrameRow(device_id=self._device_ids[f.device],
                                 captured_at=f.captured_at, path=p, sha256=f.sha256,
                                 size=len(f.data), width=f.width, height=f.height)
                        for f, p in zip(known, paths)]
                session.add_all(rows)
                session.flush()
                ids = [r.id for r in rows]
        except Exception:
            for p in paths:
                self.store.delete(p)
            raise
        self.counters["stored"] += len(ids)
        return list(zip(ids, known))

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
            # Frames deleted by retention meanwhile have no row left to predict for.
            alive = set(session.scalars(sa.select(FrameRow.id).where(FrameRow.id.in_(ids))))
            rows = [r for r in rows if r["frame_id"] in alive]
            if rows:
                session.execute(sa.insert(PredictionRow), rows)
        done = time.time()
        self.counters["predictions"] += len(rows)
        self.counters["dropped:frame_expired"] += len(items) - len(rows)
        self.latencies.extend(done - f.captured_at for f in frames)

    def enforce_retention(self) -> int:
        c = self.config
        paths = self.store.expired(max_bytes=c.retention_max_bytes,
                                   max_age_s=c.retention_max_age_s)
        for start in range(0, len(paths), 500):  # Rows first, then files.
            chunk = paths[start:start + 500]
            with self.db.transaction() as session:
                session.execute(sa.delete(FrameRow).where(FrameRow.path.in_(chunk)))
            for p in chunk:
                self.store.delete(p)
        self.counters["retention_deleted"] += len(paths)
        return len(paths)

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
        }

    def write_health(self) -> None:
        if self.health_path is not None:
            write_json_atomic(self.health_path, self.health())
