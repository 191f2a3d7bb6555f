"""The live system: frames from network devices, classified as they arrive.

Needs the `live` extra (`pip install 'tlc-jax[live]'`). So far: `devices` (one
interface for every kind of device) and `runtime` (per-device polling with backoff,
failing devices, hash de-duplication, a bounded latest-frame queue, live device-list
refresh) and `store` (atomic frame files, retention by size and age). The database,
analyzer and CLI follow.
"""
