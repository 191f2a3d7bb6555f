"""The live system: frames from network devices, classified as they arrive.

Needs the `live` extra (`pip install 'tlc-jax[live]'`). So far: `devices` (one
interface for every kind of device) and `runtime` (per-device polling with backoff,
failing devices, hash de-duplication, a bounded latest-frame queue, live device-list
refresh), `store` (atomic frame files, retention by size and age) and `analyzer`
(a trained run's model over batched frames, fixed batch sizes warmed at start). The
database, the wiring of these into one service, and the CLI follow.
"""
