"""The live system: frames from network devices, classified as they arrive.

Needs the `live` extra (`pip install 'tlc-jax[live]'`). So far: `devices` (one
interface for every kind of device). The run-time, frame store, database and analyzer
follow.
"""
