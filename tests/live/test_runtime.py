"""The run-time with in-process devices: healthy, unchanged, dead, slow, added, removed."""

import asyncio
import random

import pytest

from tlc_jax.live import devices as D
from tlc_jax.live.runtime import Backoff, LatestFrameQueue, Runtime

from live_helpers import FRAMES


def frame(name, i):
    return D.make_frame(name, FRAMES[i % len(FRAMES)], D.DEFAULT_MAX_PIXELS)


async def until(condition, what="the condition", timeout_s=30.0):
    """Yields to the event loop until `condition()` holds; fails after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.01)


class Fake:
    """A device whose behaviour the test chooses."""

    def __init__(self, name, mode="healthy", delay=0.0):
        self.name, self.mode, self.delay, self.calls = name, mode, delay, 0

    async def fetch(self, client):
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.mode == "dead":
            raise D.FrameRejected(self.name, "unreachable")
        return frame(self.name, 0 if self.mode == "unchanged" else self.calls)


def test_queue_drops_the_oldest_and_counts():
    async def run():
        q = LatestFrameQueue(2)
        for i in range(5):
            q.put(frame("cam", i))
        got = [await q.get(), await q.get()]
        return q, got

    q, got = asyncio.run(run())
    assert q.dropped == 3 and len(q) == 0
    assert [f.data for f in got] == [FRAMES[3 % 3], FRAMES[4 % 3]]
    with pytest.raises(ValueError):
        LatestFrameQueue(0)


def test_backoff_grows_with_jitter_then_marks_failing():
    b = Backoff(interval_s=1.0, base_s=2.0, max_s=60.0, fail_after=4, retry_failing_s=600)
    rng = random.Random(0)
    assert b.delay(0, rng) == 1.0
    for errors in (1, 2, 3):
        delays = [b.delay(errors, rng) for _ in range(200)]
        assert 1.0 <= min(delays) and max(delays) <= 2.0 * 2**errors
        assert len(set(delays)) > 100  # Jittered.
    assert b.delay(4, rng) == b.delay(9, rng) == 600


def run_runtime(devices, done, what, **kwargs):
    """Runs a Runtime over a device dict until `done(runtime)` holds (30 s deadline)."""
    async def main():
        queue = LatestFrameQueue(1000)
        runtime = Runtime(lambda: dict(devices), queue, refresh_s=0.05, **kwargs)
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(None, stop))
        await until(lambda: done(runtime), what)
        stop.set()
        await task
        return runtime, queue

    return asyncio.run(main())


def test_dead_and_slow_devices_never_delay_the_healthy_one():
    healthy, dead = Fake("healthy"), Fake("dead", "dead")
    slow, same = Fake("slow", delay=5.0), Fake("same", "unchanged")
    devices = {d.name: (d, 0.02) for d in (healthy, dead, slow, same)}
    runtime, queue = run_runtime(
        devices, lambda r: healthy.calls >= 10 and len(r.failing()) == 2
        and r.counters["unchanged"] >= 5, "ten polls, two devices failing",
        timeout_s=0.1, backoff_base_s=0.01, fail_after=3, retry_failing_s=10.0)
    # The healthy camera polled at its pace whatever the others do (dead, hanging).
    assert runtime.failing() == ["dead", "slow"]
    assert runtime.status["dead"].last_reason == "unreachable"
    assert runtime.status["slow"].last_reason == "timeout"
    assert dead.calls == 3  # Then it waits retry_failing_s.
    assert runtime.counters["rejected:unreachable"] == 3
    assert runtime.counters["rejected:timeout"] == 3
    # The unchanged camera gives one frame; the rest are skipped by hash.
    names = [f.device for f in list(queue._frames)]
    assert names.count("same") == 1 and runtime.counters["unchanged"] >= 5
    assert names.count("healthy") == runtime.counters["frames"] - 1


def test_devices_added_and_removed_while_running():
    first, second = Fake("first"), Fake("second")
    # The lister runs in a worker thread: the list changes in one assignment, so no
    # refresh can see the device added but the other not yet removed.
    listed = {"devices": {"first": (first, 0.02)}}

    async def main():
        queue = LatestFrameQueue(1000)
        runtime = Runtime(lambda: dict(listed["devices"]), queue, refresh_s=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(None, stop))
        await until(lambda: first.calls >= 3, "the first device polled")
        listed["devices"] = {"second": (second, 0.02)}  # One added, one removed.
        await until(lambda: second.calls >= 1 and "first" not in runtime.status,
                    "a refresh that added one device and removed the other")
        calls_at_removal = first.calls  # Its task is cancelled: no poll can follow.
        await until(lambda: second.calls >= 6, "the added device polled again")
        stop.set()
        await task
        return runtime, calls_at_removal

    runtime, calls_at_removal = asyncio.run(main())
    assert first.calls == calls_at_removal  # No polling after removal.
    assert "first" not in runtime.status


def test_a_device_restarted_by_the_lister_polls_afresh_from_its_initial_hash():
    """A device whose lease was lost and taken back between two refreshes (another
    process polled it meanwhile) is listed again as if new: its polling state and hash
    start over from `initial_hash` (the hash of its newest stored frame), instead of
    comparing with the last picture this process saw before losing it."""

    camera = Fake("cam", "unchanged")  # Always the same picture.
    initial = {"cam": ""}
    restart = set()

    def take_restarts():
        names = set(restart)
        restart.clear()
        return names

    async def main():
        queue = LatestFrameQueue(100)
        runtime = Runtime(lambda: {"cam": (camera, 0.01)}, queue, refresh_s=0.02,
                          initial_hash=lambda n: initial[n], restarted=take_restarts)
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(None, stop))
        await until(lambda: runtime.counters["unchanged"] >= 3)
        assert runtime.counters["frames"] == 1  # Listed every refresh, polled once.
        status = runtime.status["cam"]
        initial["cam"] = "the other holder's last picture"
        restart.add("cam")
        await until(lambda: runtime.counters["frames"] == 2)  # Compared afresh.
        assert runtime.status["cam"] is not status
        initial["cam"] = frame("cam", 0).sha256  # Same picture as the stored one.
        restart.add("cam")
        await until(lambda: not restart and "cam" in runtime.status  # Task started.
                    and runtime.status["cam"].last_hash == initial["cam"])
        unchanged = runtime.counters["unchanged"]
        await until(lambda: runtime.counters["unchanged"] >= unchanged + 3)
        stop.set()
        await task
        return runtime, queue

    runtime, queue = asyncio.run(main())
    assert runtime.counters["frames"] == 2 and len(queue) == 2
