"""Live-system benchmark: N simulated cameras at 1 frame/s through the whole service.

    python -m tlc_jax.main --config=configs/digits_lt.py --workdir=workdir/digits_lt
    python -m tlc_jax.benchmarks.live --checkpoint workdir/digits_lt --out bench/live

A `python -m tlc_jax.live simulate` process plays the cameras on loopback (each picture
changes every second, so every poll of a healthy camera brings a new frame) and
registers them in a fresh SQLite (or `--db`) database; this process runs the live
service against it (run-time -> frame store + frames rows -> analyzer -> predictions
rows) until its first prediction is stored (the model compiled, the cameras answering),
then for a warm-up, then measures a window of at least `--seconds` that lasts until
`--min_predictions` frames were stored and classified in it (so a busy machine gives a
longer window, never an empty one; `--start_timeout_s` bounds each wait):
fetch attempts/s, frames stored/s, analyzer images/s, p50 / p95 / max
frame-to-prediction latency (frame arrival to its prediction row committed), drops and
rejections by reason. A few cameras misbehave (`--behaviours`) as real fleets do.
Writes `live.json` and `live.md` into --out and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from tlc_jax import xla_cpu


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tlc_jax.benchmarks.live",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="Work directory of a tlc_jax.main run (the model classified with).")
    p.add_argument("--cameras", type=int, default=1000)
    p.add_argument("--interval_s", type=float, default=1.0, help="Poll interval.")
    p.add_argument("--seconds", type=float, default=60.0, help="Measured window.")
    p.add_argument("--warmup_s", type=float, default=15.0)
    p.add_argument("--behaviours", default="dead=0.01,slow=0.01,malformed=0.005",
                   help="Fractions of misbehaving cameras (see `simulate --behaviours`).")
    p.add_argument("--max_concurrency", type=int, default=64)
    p.add_argument("--connections_per_client", type=int, default=2,
                   help="Pool size of each of the run-time's HTTP clients.")
    p.add_argument("--timeout_s", type=float, default=5.0)
    p.add_argument("--batch_sizes", default="1,8,32,128")
    p.add_argument("--min_predictions", type=int, default=1,
                   help="The window lasts until this many frames were stored and "
                        "classified in it (and at least --seconds).")
    p.add_argument("--start_timeout_s", type=float, default=600.0,
                   help="The longest wait for the first prediction, and for "
                        "--min_predictions after --seconds.")
    p.add_argument("--db", help="Database URL (default: SQLite in a temporary folder).")
    p.add_argument("--out", default="bench/live", help="Folder for live.json / live.md.")
    args = p.parse_args(argv)
    if (args.cameras < 1 or args.seconds <= 0 or args.warmup_s < 0
            or args.min_predictions < 1 or args.start_timeout_s <= 0):
        p.error("--cameras must be >= 1, --seconds > 0, --warmup_s >= 0, "
                "--min_predictions >= 1, --start_timeout_s > 0.")
    return args


def start_cameras(args, workdir: Path) -> subprocess.Popen:
    where = ["--db", args.db] if args.db else ["--workdir", str(workdir)]
    cmd = [sys.executable, "-m", "tlc_jax.live", "simulate", "--cameras", str(args.cameras),
           "--interval-s", str(args.interval_s), "--change-every-s", str(args.interval_s),
           "--behaviours", args.behaviours,
           "--duration-s",
           str(args.warmup_s + args.seconds + 2 * args.start_timeout_s + 120), *where]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    line = proc.stdout.readline()
    if "registered" not in line:
        proc.kill()
        raise RuntimeError(f"The camera simulator did not start: {line}"
                           f"{proc.stdout.read()}")
    return proc


def run(args) -> dict:
    from tlc_jax.live.analyzer import Analyzer
    from tlc_jax.live.db import default_url, open_database
    from tlc_jax.live.service import LiveService, ServiceConfig
    from tlc_jax.live.store import FrameStore

    workdir = Path(tempfile.mkdtemp(prefix="tlc-live-bench-"))
    cameras = start_cameras(args, workdir)
    try:
        database = open_database(args.db or default_url(workdir))
        analyzer = Analyzer(args.checkpoint,
                            batch_sizes=[int(b) for b in args.batch_sizes.split(",")])
        config = ServiceConfig(max_concurrency=args.max_concurrency,
                               connections_per_client=args.connections_per_client,
                               timeout_s=args.timeout_s,
                               allow=("127.0.0.1",))  # The simulated cameras.
        service = LiveService(database, FrameStore(workdir / "frames"), analyzer, config)
        marks = {}

        async def main():
            stop = asyncio.Event()
            task = asyncio.create_task(service.run(stop))

            async def until(condition, what):
                deadline = time.monotonic() + args.start_timeout_s
                while not condition():
                    if task.done():
                        task.result()
                        raise RuntimeError(f"The live service stopped before {what}.")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"No {what} within {args.start_timeout_s} s "
                                           f"(--start_timeout_s): {service.health()}")
                    await asyncio.sleep(0.05)

            def in_window(key):
                return service.counters[key] - marks["start"][1].get(key, 0)

            try:
                await until(lambda: service.counters["predictions"] > 0,
                            "first prediction")
                await asyncio.sleep(args.warmup_s)
                service.latencies.clear()
                marks["start"] = (time.perf_counter(), service.health()["counters"])
                await asyncio.sleep(args.seconds)
                await until(lambda: min(in_window("stored"), in_window("predictions"),
                                        len(service.latencies)) >= args.min_predictions,
                            f"{args.min_predictions} predictions in the window")
                marks["end"] = (time.perf_counter(), service.health()["counters"])
                marks["latencies"] = np.asarray(service.latencies, float)
            finally:
                stop.set()
                await task

        asyncio.run(main())
    finally:
        cameras.terminate()
        cameras.wait(30)
    (t0, c0), (t1, c1) = marks["start"], marks["end"]
    elapsed = t1 - t0
    delta = {k: c1.get(k, 0) - c0.get(k, 0) for k in sorted(set(c0) | set(c1))}
    lat = marks["latencies"]
    attempts = (delta.get("frames", 0) + delta.get("unchanged", 0)
                + sum(v for k, v in delta.items() if k.startswith("rejected:")))
    return {
        "cameras": args.cameras, "interval_s": args.interval_s, "seconds": elapsed,
        "behaviours": args.behaviours, "offered_frames_per_s": args.cameras / args.interval_s,
        "fetch_attempts_per_s": attempts / elapsed,
        "frames_stored_per_s": delta.get("stored", 0) / elapsed,
        "analyzer_images_per_s": delta.get("predictions", 0) / elapsed,
        "latency_s": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                      "max": float(lat.max())} if lat.size else None,
        "counters_in_window": delta,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "jax": metadata.version("jax"), "httpx": metadata.version("httpx"),
                    "sqlalchemy": metadata.version("sqlalchemy")},
        "database": "sqlite (WAL)" if not args.db else args.db.split(":", 1)[0],
        "batch_sizes": args.batch_sizes, "max_concurrency": args.max_concurrency,
        "connections_per_client": args.connections_per_client,
    }


def markdown(r: dict) -> str:
    lat = r["latency_s"] or {"p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    c = r["counters_in_window"]
    drops = {k: v for k, v in c.items() if k.startswith("dropped:") and v}
    rejected = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("rejected:")}
    return "\n".join([
        "| cameras | offered frames/s | fetch attempts/s | frames stored/s | analyzer "
        "images/s | latency p50 | p95 | max | dropped | rejected |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['cameras']:,} at 1 per {r['interval_s']:g} s | {r['offered_frames_per_s']:.0f} "
        f"| {r['fetch_attempts_per_s']:.0f} | {r['frames_stored_per_s']:.0f} | "
        f"{r['analyzer_images_per_s']:.0f} | {lat['p50']:.3f} s | {lat['p95']:.3f} s | "
        f"{lat['max']:.3f} s | {sum(drops.values())} {drops or ''} | "
        f"{sum(rejected.values())} {rejected or ''} |",
        "",
        f"Window {r['seconds']:.0f} s after warm-up; database {r['database']}; batch sizes "
        f"{r['batch_sizes']}; max concurrency {r['max_concurrency']} over HTTP clients of "
        f"{r['connections_per_client']} connections; misbehaving cameras "
        f"{r['behaviours']}. Machine: {r['machine']['platform']}, {r['machine']['cpus']} "
        f"CPUs, Python {r['machine']['python']}, jax {r['machine']['jax']}, httpx "
        f"{r['machine']['httpx']}, SQLAlchemy {r['machine']['sqlalchemy']}.",
    ])


def main(argv=None) -> None:
    args = parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from tlc_jax.fileio import atomic_file, write_json_atomic

    write_json_atomic(out / "live.json", result)
    table = markdown(result)
    with atomic_file(out / "live.md") as tmp:
        tmp.write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    xla_cpu.configure()  # Before any computation: XLA reads its flags once.
    main()
