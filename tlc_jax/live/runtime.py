"""The run-time: polls every device on its own interval and hands frames on.

- a global limit on concurrent fetches, a timeout per fetch;
- exponential backoff with jitter after an error; after `fail_after` consecutive errors
  a device is marked failing and retried every `retry_failing_s`;
- a frame whose content hash equals the device's previous one is skipped;
- the device list is re-read every `refresh_s` from a callable (in a worker thread: it is
  a database query in the live service), so devices added, removed or edited while
  running are picked up without a restart; a failed refresh keeps the current list;
- frames go to a bounded latest-frame queue that drops the oldest when full;
- every outcome is counted (`Runtime.counters`), rejections by reason.
A dead or slow device never delays the others: each device has its own task.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import zlib
from typing import Callable, Generic, Iterable, Sequence, TypeVar

import httpx
from absl import logging

from tlc_jax.live.devices import Device, FrameRejected

T = TypeVar("T")


class LatestFrameQueue(Generic[T]):
    """Bounded FIFO (of frames, or anything); when full, `put` drops the oldest and
    counts it."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1; got {maxsize}.")
        self._frames: collections.deque[T] = collections.deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, frame: T) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1  # deque(maxlen) discards the oldest on append.
        self._frames.append(frame)
        self._ready.set()

    async def get(self) -> T:
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def __len__(self) -> int:
        return len(self._frames)


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Delay before the next attempt after `errors` consecutive errors."""

    interval_s: float  # The device's normal poll interval.
    base_s: float = 1.0
    max_s: float = 300.0
    fail_after: int = 5  # Consecutive errors before the device is marked failing.
    retry_failing_s: float = 600.0

    def delay(self, errors: int, rng: random.Random) -> float:
        if errors == 0:
            return self.interval_s
        if errors >= self.fail_after:
            return self.retry_failing_s
        # Full jitter (AWS architecture blog): uniform in [0, min(max, base * 2^k)].
        return max(self.interval_s, rng.uniform(0, min(self.max_s,
                                                       self.base_s * 2 ** errors)))


@dataclasses.dataclass
class DeviceStatus:
    errors: int = 0  # Consecutive.
    failing: bool = False
    last_hash: str = ""
    last_reason: str = ""


class Runtime:
    """Polls the devices `list_devices()` returns (name -> (device, interval_s))."""

    def __init__(self, list_devices: Callable[[], dict[str, tuple[Device, float]]],
                 queue: LatestFrameQueue, *, max_concurrency: int = 64,
                 timeout_s: float = 10.0, refresh_s: float = 5.0, backoff_base_s: float = 1.0,
                 fail_after: int = 5, retry_failing_s: float = 600.0, seed: int = 0,
                 initial_hash: Callable[[str], str] | None = None,
                 restarted: Callable[[], Iterable[str]] | None = None):
        self.list_devices = list_devices
        # The hash of a device's last stored frame, when it starts being polled (a
        # device taken over from another process: its next frame is compared with it).
        self.initial_hash = initial_hash or (lambda name: "")
        # Called after each list_devices: listed devices whose polling must start
        # afresh (state and hash) although they were listed before: a lease lost and
        # taken back between two refreshes, while another process polled the device.
        self.restarted = restarted or (lambda: ())
        self.queue = queue
        self.timeout_s, self.refresh_s = timeout_s, refresh_s
        self.backoff = dict(base_s=backoff_base_s, fail_after=fail_after,
                            retry_failing_s=retry_failing_s)
        self._limit = asyncio.Semaphore(max_concurrency)
        self._rng = random.Random(seed)
        self._tasks: dict[str, tuple[asyncio.Task, Device, float]] = {}
        self.status: dict[str, DeviceStatus] = {}
        self.counters: collections.Counter[str] = collections.Counter()

    async def run(self, client: httpx.AsyncClient | Sequence[httpx.AsyncClient],
                  stop: asyncio.Event) -> None:
        """Until `stop` is set: keep one polling task per listed device. With several
        clients, each device always uses the same one (by a hash of its name): httpcore's
        connection pool does work proportional to connections x waiting requests, so a
        few small pools serve a thousand devices far faster than one large pool."""
        clients = (list(client) if isinstance(client, (list, tuple)) else [client])
        try:
            while not stop.is_set():
                try:  # Off the event loop: the list may come from a database.
                    wanted = await asyncio.to_thread(self.list_devices)
                except Exception as e:  # noqa: BLE001 - keep polling the known devices.
                    self.counters["device_list_errors"] += 1
                    logging.warning("Could not refresh the device list (%s: %s); keeping "
                                    "the current %d devices.", type(e).__name__, e,
                                    len(self._tasks))
                else:
                    self._sync(wanted, clients, set(self.restarted()))
                try:
                    await asyncio.wait_for(stop.wait(), self.refresh_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            self._cancel(list(self._tasks))
            await asyncio.gather(*(t for t, _, _ in self._tasks.values()),
                                 return_exceptions=True)
            self._tasks.clear()

    def failing(self) -> list[str]:
        return sorted(name for name, s in self.status.items() if s.failing)

    def _sync(self, wanted: dict[str, tuple[Device, float]], clients,
              restart: set[str] = frozenset()) -> None:
        gone = [n for n in self._tasks if n not in wanted]
        edited = [n for n, (_, dev, interval) in self._tasks.items()
                  if n in wanted and wanted[n] != (dev, interval) and n not in restart]
        restarted = [n for n in self._tasks if n in wanted and n in restart]
        self._cancel(gone + edited + restarted)
        for name in gone + restarted:
            self.status.pop(name, None)
        for name, (device, interval) in wanted.items():
            if name not in self._tasks:
                client = clients[zlib.crc32(name.encode()) % len(clients)]
                task = asyncio.create_task(self._poll(device, interval, client),
                                           name=f"poll:{name}")
                self._tasks[name] = (task, device, interval)

    def _cancel(self, names: Iterable[str]) -> None:
        for name in names:
            task, _, _ = self._tasks.pop(name)
            task.cancel()

    async def _poll(self, device: Device, interval_s: float, client) -> None:
        status = self.status.setdefault(
            device.name, DeviceStatus(last_hash=self.initial_hash(device.name)))
        backoff = Backoff(interval_s, **self.backoff)
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                async with self._limit:
                    frame = await asyncio.wait_for(device.fetch(client), self.timeout_s)
            except FrameRejected as e:
                self._error(device.name, status, e.reason)
            except asyncio.TimeoutError:
                self._error(device.name, status, "timeout")
            else:
                status.errors, status.failing = 0, False
                if frame.sha256 == status.last_hash:
                    self.counters["unchanged"] += 1
                else:
                    status.last_hash = frame.sha256
                    self.counters["frames"] += 1
                    self.queue.put(frame)
            # The interval runs from the start of this poll (a fixed rate while fetches
            # take less than the interval), backoff delays from its end.
            delay = backoff.delay(status.errors, self._rng)
            if status.errors == 0:
                delay -= loop.time() - started
            await asyncio.sleep(max(0.0, delay))

    def _error(self, name: str, status: DeviceStatus, reason: str) -> None:
        status.errors += 1
        status.last_reason = reason
        self.counters[f"rejected:{reason}"] += 1
        if status.errors >= self.backoff["fail_after"] and not status.failing:
            status.failing = True
            logging.warning("Device %s marked failing after %d errors (last: %s).",
                            name, status.errors, reason)
