"""`python -m tlc_jax.live`: run the live system, manage its devices, simulate cameras.

    python -m tlc_jax.live run --workdir W --checkpoint RUN_DIR [--db URL]
    python -m tlc_jax.live devices import devices.csv --workdir W
    python -m tlc_jax.live devices export devices.csv --workdir W [--with-credentials]
    python -m tlc_jax.live devices search --near LAT,LON --km 5 --workdir W
    python -m tlc_jax.live simulate --cameras N --workdir W
    python -m tlc_jax.live serve --workdir W [--port 8000]     # API + web interface
    python -m tlc_jax.live keys create NAME --scope write --workdir W
    python -m tlc_jax.live fsck --workdir W [--repair]            # files vs rows

The database is `--db URL` (sqlite:///... or postgresql://user:pass@host/db), or else
SQLite at W/live.db. Frames go to W/frames/, the service's health to W/health.json.
`run`, `serve` and `devices import` take the operator's device policy: `--allow` (internal
addresses devices may reach), `--folder-root` (folders `folder` devices may read),
`--max-frame-bytes` / `--max-frame-pixels` (the most a device may be set to); give
them the same values.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging as std_logging
import re
import shutil
import signal
import sys
import time
from pathlib import Path

from absl import logging


def _database(args, migrate: bool = True):
    from tlc_jax.live.db import default_url, open_database

    if args.db:
        url = args.db
    elif args.workdir:
        url = default_url(args.workdir)
    else:
        raise SystemExit("Give --workdir (SQLite in it) or --db URL.")
    return open_database(url, migrate=migrate)


def _policy(args):
    """The operator's DevicePolicy from --allow, --folder-root, --max-frame-*."""
    from tlc_jax.live.policy import DevicePolicy

    return DevicePolicy.from_options(args.allow, args.folder_root, args.max_frame_bytes,
                                     args.max_frame_pixels)


ALLOW_HINT = ("Cameras on your own network must be allowed by name: --allow with an IP, a "
              "CIDR network or a host name (e.g. --allow 127.0.0.1 for `simulate` cameras, "
              "--allow 192.168.1.0/24, --allow camera.local); give serve and devices "
              "import the same.")


def _warn_refused_devices(database, policy) -> None:
    """At start: the active devices this run's policy refuses (no DNS), with the fix."""
    import sqlalchemy as sa

    from tlc_jax.live.db import DeviceRow
    from tlc_jax.live.registry import DeviceSpec, InvalidDevice

    with database.session() as session:
        rows = session.scalars(sa.select(DeviceRow).where(DeviceRow.active)).all()
    refused = {}
    for row in rows:
        try:
            problems = policy.problems(DeviceSpec.from_row(row))
        except (InvalidDevice, ValueError, TypeError) as e:
            problems = [str(e)]
        if problems:
            refused[row.name] = problems[0]
    if not refused:
        return
    why = collections.Counter(
        m.group(1) if (m := re.search(r"is refused \((\w+)\)", p)) else "invalid"
        for p in refused.values())
    examples = "; ".join(f"{name}: {p.split('; ')[0]}"
                         for name, p in list(refused.items())[:3])
    logging.warning("%d of %d active devices will be refused by this run (%s), e.g. "
                    "%s.%s", len(refused), len(rows),
                    ", ".join(f"{k}: {n}" for k, n in why.most_common()), examples,
                    (" " + ALLOW_HINT) if set(why) - {"invalid", "metadata"} else "")


def _warn_no_retention(database, frames: Path) -> None:
    import sqlalchemy as sa

    from tlc_jax.live.db import FrameRow

    with database.session() as session:
        stored = session.scalar(sa.select(sa.func.coalesce(sa.func.sum(FrameRow.size), 0)))
    frames.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(frames).free
    logging.warning("No retention limit is set: frames are kept until the disk is full "
                    "(%s holds %.2f GB of frames; %.1f GB free). Set --max-store-gb "
                    "and/or --max-age-days.", frames, stored / 1e9, free / 1e9)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Not the main thread / Windows.
            pass


async def _until(stop: asyncio.Event, duration_s: float | None) -> None:
    if duration_s is None:
        await stop.wait()
        return
    try:
        await asyncio.wait_for(stop.wait(), duration_s)
    except asyncio.TimeoutError:
        stop.set()


def cmd_run(args) -> int:
    from tlc_jax.live.service import LiveService, ServiceConfig
    from tlc_jax.live.store import FrameStore

    if not args.workdir:
        raise SystemExit("run needs --workdir (frames, health.json; the SQLite database "
                         "unless --db).")
    if args.role != "runtime" and not args.checkpoint:
        raise SystemExit(f"--role {args.role} classifies frames: give --checkpoint (the "
                         f"work directory of a tlc_jax.main run).")
    workdir = Path(args.workdir)
    database = _database(args)
    analyzer = None
    if args.role != "runtime":
        from tlc_jax.live.analyzer import Analyzer

        verbosity = logging.get_verbosity()
        logging.set_verbosity(logging.WARNING)  # Orbax logs every step of a restore.
        try:
            analyzer = Analyzer(args.checkpoint, batch_sizes=args.batch_sizes,
                                top_k=args.top_k)
        finally:
            logging.set_verbosity(verbosity)
    config = ServiceConfig(
        max_concurrency=args.max_concurrency, timeout_s=args.timeout_s,
        refresh_s=args.refresh_s, allow=tuple(args.allow), role=args.role,
        folder_roots=tuple(args.folder_root), max_frame_bytes=args.max_frame_bytes,
        max_frame_pixels=args.max_frame_pixels, lease_s=args.lease_s,
        orphan_grace_s=args.orphan_grace_s,
        retention_max_bytes=None if args.max_store_gb is None
        else int(args.max_store_gb * 2**30),
        retention_max_age_s=None if args.max_age_days is None
        else args.max_age_days * 86400.0)
    service = LiveService(database, FrameStore(workdir / "frames"), analyzer, config,
                          health_path=workdir / "health.json")
    if args.role != "analyzer":
        _warn_refused_devices(database, service.policy)
        if args.max_store_gb is None and args.max_age_days is None:
            _warn_no_retention(database, workdir / "frames")

    async def main():
        stop = asyncio.Event()
        _stop_on_signals(stop)
        task = asyncio.create_task(service.run(stop))
        report = asyncio.create_task(_report(service, stop, args.report_every_s))
        await _until(stop, args.duration_s)
        await task
        await report

    logging.info("Live service (%s): %r, model %s, frames in %s.", args.role, database,
                 f"{analyzer.run_dir} (step {analyzer.step})" if analyzer else "none",
                 workdir / "frames")
    asyncio.run(main())
    health = service.health()
    print(json.dumps({k: health[k] for k in ("counters", "latency_s", "failing",
                                             "frames_per_s", "predictions_per_s")},
                     indent=1))
    database.dispose()
    return 0


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


async def _report(service, stop: asyncio.Event, every_s: float) -> None:
    hinted = False
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except asyncio.TimeoutError:
            pass
        h = service.health()
        c = h["counters"]
        latency = h["latency_s"] or {}
        logging.info("%d devices, %d failing | stored %d, predicted %d, unchanged %d, "
                     "rejected %d, dropped %d | latency p50 %s, p95 %s",
                     h["devices_polled"], len(h["failing"]), c.get("stored", 0),
                     c.get("predictions", 0), c.get("unchanged", 0),
                     sum(v for k, v in c.items() if k.startswith("rejected:")),
                     sum(v for k, v in c.items() if k.startswith("dropped:")),
                     _seconds(latency.get("p50")), _seconds(latency.get("p95")))
        forbidden = c.get("rejected:forbidden_address", 0)
        if forbidden and not hinted:
            hinted = True
            logging.warning("%d fetch(es) refused as forbidden_address: the device's "
                            "address is loopback, private or link-local (refused against "
                            "request forgery). %s", forbidden, ALLOW_HINT)


def cmd_serve(args) -> int:
    import uvicorn

    from tlc_jax.live.api import create_app
    from tlc_jax.live.leases import fleet_health
    from tlc_jax.live.webui import mount_web

    database = _database(args)
    frames = Path(args.frames_root) if args.frames_root else (
        Path(args.workdir) / "frames" if args.workdir else None)

    def health():
        with database.session() as session:
            return fleet_health(session)

    app = mount_web(create_app(database, frames_root=frames, health=health,
                               read_requires_key=args.read_requires_key,
                               policy=_policy(args)))
    logging.info("Serving the API and web interface of %r on http://%s:%d/ (frames from "
                 "%s).", database, args.host, args.port, frames)
    uvicorn.run(app, host=args.host, port=args.port, proxy_headers=args.proxy_headers,
                forwarded_allow_ips=args.forwarded_allow_ips, log_level="warning")
    return 0


def cmd_keys(args) -> int:
    from tlc_jax.live import apikeys

    database = _database(args)
    try:
        with database.transaction() as session:
            if args.keys_command == "create":
                token = apikeys.create_key(session, args.name, args.scope or ["read"],
                                           rate_per_min=args.rate_per_min)
                print(f"Key {args.name!r} created. Its token, shown this once only:\n"
                      f"{token}")
            elif args.keys_command == "revoke":
                changed = apikeys.revoke(session, args.name)
                print(f"Key {args.name!r} " + ("revoked." if changed
                                              else "was already revoked."))
            else:
                for k in apikeys.list_keys(session):
                    print(f"{k.name:<24} {k.prefix}...  {','.join(k.scopes):<16} "
                          f"{k.rate_per_min}/min  "
                          + ("active" if k.active else "revoked"))
    except apikeys.ApiKeyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_openapi(args) -> int:
    from tlc_jax.live import apidoc

    spec = apidoc.openapi_spec(read_requires_key=args.read_requires_key)
    print(apidoc.openapi_markdown(spec) if args.markdown else json.dumps(spec, indent=1),
          end="" if args.markdown else "\n")
    return 0


def cmd_devices_import(args) -> int:
    from tlc_jax.live import registry

    policy = _policy(args)
    database = _database(args)
    try:
        with database.transaction() as session:
            report = registry.import_csv(session, args.csv,
                                         check=lambda spec: spec.check(policy))
    except (registry.InvalidDevice, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report)
    return 1 if report.errors else 0


def cmd_fsck(args) -> int:
    import sqlalchemy as sa

    from tlc_jax.live import fsck
    from tlc_jax.live.db import default_url, open_database
    from tlc_jax.live.store import FrameStore

    if not (args.db or args.workdir):
        raise SystemExit("Give --workdir (SQLite in it) or --db URL.")
    url = args.db or default_url(args.workdir)
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        print(f"error: no live database at {parsed.database} (give the --workdir or --db "
              f"of the live system to check).", file=sys.stderr)
        return 2
    frames = Path(args.frames_root) if args.frames_root else (
        Path(args.workdir) / "frames" if args.workdir else None)
    if frames is None:
        raise SystemExit("Give --frames-root (the frame store) with --db.")
    database = open_database(url, migrate=False)
    try:
        if database.revision() is None:
            print(f"error: no live database in {database!r} (no tables).", file=sys.stderr)
            return 2
        if not frames.is_dir():
            print(f"error: no frame store at {frames} (--frames-root).", file=sys.stderr)
            return 2
        try:
            report = fsck.check(database, FrameStore(frames), grace_s=args.grace_s,
                                repair=args.repair, force=args.force)
        except fsck.FsckRefused as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    finally:
        database.dispose()
    print(json.dumps(report.as_dict(), indent=1) if args.json else report)
    return 0 if report.clean or report.repaired else 1


def cmd_devices_export(args) -> int:
    from tlc_jax.live import registry

    database = _database(args)
    with database.session() as session:
        n = registry.export_csv(session, args.csv,
                                include_credentials=args.with_credentials)
    print(f"{n} devices written to {args.csv}"
          + ("" if args.with_credentials else " (without credentials)."))
    return 0


def cmd_devices_search(args) -> int:
    from tlc_jax.live import registry

    near = registry.parse_point(args.near) if args.near else None
    if (near is None) != (args.km is None):
        raise SystemExit("Give --near LAT,LON and --km together.")
    database = _database(args)
    with database.session() as session:
        matches = registry.search(session, near=near, km=args.km, city=args.city,
                                  region=args.region, country=args.country,
                                  sector=args.sector, text=args.text, limit=args.limit)
        rows = [{"name": m.device.name, "kind": m.device.kind,
                 "latitude": m.device.latitude, "longitude": m.device.longitude,
                 "city": m.device.city, "country": m.device.country,
                 "sector": m.device.sector, "active": m.device.active,
                 "distance_km": None if m.distance_km is None
                 else round(m.distance_km, 3)} for m in matches]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            where = "" if r["distance_km"] is None else f"{r['distance_km']:9.3f} km  "
            print(f"{where}{r['name']:<24} {r['kind']:<14} {r['city']}, {r['country']} "
                  f"({r['latitude']}, {r['longitude']}) {r['sector']}"
                  + ("" if r["active"] else " [inactive]"))
        print(f"{len(rows)} device(s).")
    return 0


def cmd_simulate(args) -> int:
    from tlc_jax.live import registry
    from tlc_jax.live.simulate import CameraServer, mix_behaviours

    fractions = {}
    for part in filter(None, (args.behaviours or "").split(",")):
        name, _, value = part.partition("=")
        try:
            fractions[name.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"--behaviours: {part!r} is not NAME=FRACTION "
                             f"(e.g. dead=0.01,slow=0.02).") from None
    center = registry.parse_point(args.center)
    server = CameraServer(args.cameras, mix_behaviours(args.cameras, fractions, args.seed),
                          port=args.port, change_every_s=args.change_every_s)
    database = _database(args) if (args.db or args.workdir) else None

    async def main():
        stop = asyncio.Event()
        _stop_on_signals(stop)
        async with server:
            rows = server.device_rows(center=center, spread_km=args.spread_km,
                                      city=args.city, country=args.country,
                                      interval_s=args.interval_s)
            if database is not None:
                with database.transaction() as session:
                    created, updated = registry.upsert(session, registry.rows_to_specs(rows))
                print(f"{args.cameras} cameras at {server.base_url}; registered in "
                      f"{database!r}: {created} created, {updated} updated.", flush=True)
            else:
                print(f"{args.cameras} cameras at {server.base_url} (not registered: "
                      f"give --workdir or --db to register them).", flush=True)
            started = time.time()
            await _until(stop, args.duration_s)
            print(f"Served {server.served} frames over {server.connections} connections in "
                  f"{time.time() - started:.1f} s.")

    asyncio.run(main())
    return 0


# ---------------------------------------------------------------------------- arguments


def _where(p: argparse.ArgumentParser) -> None:
    """The database's whereabouts: --workdir and --db (see `_database`)."""
    p.add_argument("--workdir", help="Work directory (SQLite database live.db, "
                                     "frames/, health.json).")
    p.add_argument("--db", help="Database URL (default: SQLite in --workdir).")


def _policy_args(p: argparse.ArgumentParser) -> None:
    """The operator's device policy (tlc_jax/live/policy.py)."""
    from tlc_jax.live.policy import DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_FRAME_PIXELS

    p.add_argument("--allow", action="append", default=[],
                   help="A network (CIDR), IP or host name that devices may be at although "
                        "it is loopback / private / link-local (refused otherwise, against "
                        "request forgery). Repeat or comma-separate; e.g. --allow "
                        "127.0.0.1 for `simulate` cameras.")
    p.add_argument("--folder-root", action="append", default=[], metavar="DIR",
                   help="A folder whose images `folder` devices may read (repeatable). "
                        "None by default: folder devices are refused (they read this "
                        "machine's files). Through the API only admin keys create them.")
    p.add_argument("--max-frame-bytes", type=int, default=DEFAULT_MAX_FRAME_BYTES,
                   help="The largest max_bytes a device may be set to (default "
                        f"{DEFAULT_MAX_FRAME_BYTES}); larger settings are refused, and "
                        "clamped by the run-time.")
    p.add_argument("--max-frame-pixels", type=int, default=DEFAULT_MAX_FRAME_PIXELS,
                   help="The largest max_pixels a device may be set to (default "
                        f"{DEFAULT_MAX_FRAME_PIXELS}).")


def positive(text: str) -> float:
    """An argument type: a number > 0 (argparse names it in errors: "invalid positive
    value")."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
    return value


def sizes(text: str) -> list[int]:
    """An argument type: comma-separated batch sizes >= 1, sorted, without repeats."""
    try:
        values = sorted({int(x) for x in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1,8,32") from None
    if values[0] < 1:
        raise argparse.ArgumentTypeError("batch sizes must be >= 1")
    return values


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="Poll the devices, store frames, classify them.")
    _where(run)
    run.add_argument("--checkpoint",
                     help="Work directory of a tlc_jax.main run (model.json + checkpoints); "
                          "not needed with --role runtime.")
    run.add_argument("--role", choices=("all", "runtime", "analyzer"), default="all",
                     help="all: poll, store and classify; runtime: poll and store; "
                          "analyzer: classify what others stored. Any number of each "
                          "share one database (devices leased, frames claimed).")
    run.add_argument("--lease-s", type=positive, default=30.0,
                     help="Device lease length: a crashed process's devices move to the "
                          "others within this time.")
    run.add_argument("--batch-sizes", type=sizes, default=[1, 8, 32],
                     help="Fixed analyzer batch sizes, each compiled at start (default "
                          "1,8,32).")
    run.add_argument("--top-k", type=int, default=3, help="Classes kept per prediction.")
    run.add_argument("--max-concurrency", type=int, default=64,
                     help="Fetches in flight at once.")
    run.add_argument("--timeout-s", type=positive, default=10.0, help="Per fetch.")
    run.add_argument("--refresh-s", type=positive, default=5.0,
                     help="How often the device list is re-read from the database.")
    _policy_args(run)
    run.add_argument("--max-store-gb", type=positive,
                     help="Frame store size limit (none by default: a warning says so).")
    run.add_argument("--max-age-days", type=positive, help="Delete frames older than this.")
    run.add_argument("--orphan-grace-s", type=float, default=60.0,
                     help="Frame files without a row (left by a killed process) are removed "
                          "at start and every 10 minutes once older than this; 0 when this "
                          "is the only process writing the frame store.")
    run.add_argument("--duration-s", type=positive,
                     help="Stop after this long (default: until Ctrl-C / SIGTERM).")
    run.add_argument("--report-every-s", type=positive, default=10.0,
                     help="Progress line interval.")
    run.set_defaults(func=cmd_run)


def _add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="Serve the HTTP API (/api/v1, /docs) and the "
                                         "web interface (/).")
    _where(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--frames-root", help="The frame store (default: WORKDIR/frames).")
    serve.add_argument("--read-requires-key", action="store_true",
                       help="Reads need an API key too (writes always do).")
    serve.add_argument("--proxy-headers", action="store_true",
                       help="Behind a reverse proxy: take the client address from "
                            "X-Forwarded-For (per-address rate limits).")
    serve.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                       help="Proxies trusted for --proxy-headers.")
    _policy_args(serve)
    serve.set_defaults(func=cmd_serve)


def _add_openapi(sub) -> None:
    openapi = sub.add_parser("openapi", help="Print the API's OpenAPI document (or, "
                                             "with --markdown, its reference).")
    openapi.add_argument("--markdown", action="store_true")
    openapi.add_argument("--read-requires-key", action="store_true",
                         help="The document of a server run with --read-requires-key "
                              "(reads declare the key required).")
    openapi.set_defaults(func=cmd_openapi)


def _add_keys(sub) -> None:
    keys = sub.add_parser("keys", help="API keys: create, list, revoke.")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="Create a key; its token is printed once.")
    create.add_argument("name")
    create.add_argument("--scope", action="append", choices=("read", "write", "admin"),
                        help="Repeatable; default read. write allows reads too.")
    create.add_argument("--rate-per-min", type=int, default=600)
    _where(create)
    revoke = ksub.add_parser("revoke", help="Revoke a key (its name is never reused).")
    revoke.add_argument("name")
    _where(revoke)
    listing = ksub.add_parser("list", help="List keys (never their secrets).")
    _where(listing)
    for p in (create, revoke, listing):
        p.set_defaults(func=cmd_keys)


def _add_devices(sub) -> None:
    devices = sub.add_parser("devices", help="Import, export or search devices.")
    dsub = devices.add_subparsers(dest="devices_command", required=True)
    imp = dsub.add_parser("import", help="Import devices from CSV (create or update by "
                                         "name); bad rows are listed with line numbers.")
    imp.add_argument("csv")
    _where(imp)
    _policy_args(imp)
    imp.set_defaults(func=cmd_devices_import)
    exp = dsub.add_parser("export", help="Export devices to CSV.")
    exp.add_argument("csv")
    exp.add_argument("--with-credentials", action="store_true",
                     help="Include usernames, passwords and API keys.")
    _where(exp)
    exp.set_defaults(func=cmd_devices_export)
    search = dsub.add_parser("search", help="Find devices by place, radius or text.")
    search.add_argument("--near", help="LAT,LON (with --km).")
    search.add_argument("--km", type=positive, help="Radius around --near.")
    for key in ("city", "region", "country", "sector"):
        search.add_argument(f"--{key}", help=f"Exact {key}, any case.")
    search.add_argument("--text", help="Name or any place field contains this.")
    search.add_argument("--limit", type=int, default=100)
    search.add_argument("--json", action="store_true", help="Print JSON.")
    _where(search)
    search.set_defaults(func=cmd_devices_search)


def _add_simulate(sub) -> None:
    sim = sub.add_parser("simulate", help="Start N simulated cameras on loopback (and "
                                          "register them with --workdir / --db); `run` "
                                          "needs --allow 127.0.0.1 to poll them.")
    sim.add_argument("--cameras", type=int, required=True)
    sim.add_argument("--port", type=int, default=0, help="Default: any free port.")
    sim.add_argument("--center", default="40.4237,-86.9212",
                     help="LAT,LON the cameras are placed around.")
    sim.add_argument("--spread-km", type=float, default=10.0)
    sim.add_argument("--city", default="Simulated City")
    sim.add_argument("--country", default="Simulated Country")
    sim.add_argument("--interval-s", type=positive, default=1.0,
                     help="Poll interval registered for each camera.")
    sim.add_argument("--change-every-s", type=positive, default=1.0,
                     help="How often each camera's picture changes.")
    sim.add_argument("--behaviours", default="",
                     help="Fractions of misbehaving cameras, e.g. dead=0.01,slow=0.02 "
                          "(also flapping, malformed, oversized, basic, digest).")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--duration-s", type=positive, help="Stop after this long.")
    _where(sim)
    sim.set_defaults(func=cmd_simulate)


def _add_fsck(sub) -> None:
    check = sub.add_parser("fsck", help="Check that frame files and frame rows agree "
                                        "(after a crash); --repair fixes.")
    _where(check)
    check.add_argument("--frames-root", help="The frame store (default: WORKDIR/frames).")
    check.add_argument("--repair", action="store_true",
                       help="Remove files without rows (older than --grace-s), rows "
                            "without files and temporary files of interrupted writes.")
    check.add_argument("--grace-s", type=float, default=60.0,
                       help="Files without a row younger than this are left alone (a "
                            "running process may be about to commit them).")
    check.add_argument("--force", action="store_true",
                       help="Repair even when the database has no frames at all and no "
                            "file lies in a folder of its devices (another database?).")
    check.add_argument("--json", action="store_true", help="Print the report as JSON.")
    check.set_defaults(func=cmd_fsck)


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per `cmd_*` function, in the order of --help."""
    parser = argparse.ArgumentParser(prog="python -m tlc_jax.live", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_serve, _add_openapi, _add_keys, _add_devices, _add_simulate,
                _add_fsck):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tlc_jax.live.db import DatabaseError
    from tlc_jax.live.registry import InvalidDevice

    from absl import flags

    args = build_parser().parse_args(argv)
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # absl logging without absl's flag parsing.
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    for noisy in ("httpx", "alembic"):
        std_logging.getLogger(noisy).setLevel(std_logging.WARNING)
    try:
        return args.func(args)
    except (DatabaseError, InvalidDevice, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
