"""The live system: frames from network devices, classified as they arrive.

Needs the `live` extra (`pip install 'tlc-jax[live]'`); docs/LIVE.md is the guide.
- `devices`: one interface (`await device.fetch(client) -> Frame`) for every kind of
  device; `runtime`: per-device polling with backoff, failing devices, hash
  de-duplication, a bounded latest-frame queue, live device-list refresh;
- `store`: atomic frame files, retention by size and age; `analyzer`: a trained run's
  model over batched frames, fixed batch sizes warmed at start;
- `db`: the tables (SQLAlchemy 2) and their Alembic migrations; `registry`: validated
  device records, CSV import / export, location search;
- `policy`: what the operator lets device records do (allowed addresses, folder roots,
  frame-size bounds); `ssrf`: the request-forgery guard;
- `fsck`: frame files and rows reconciled after a crash;
- `service`: all of the above wired into one process; `simulate`: cameras on loopback;
  `cli`: `python -m tlc_jax.live run | serve | devices import/export/search | simulate |
  fsck`.
"""
