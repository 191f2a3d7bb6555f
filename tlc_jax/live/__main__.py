"""`python -m tlc_jax.live ...`: see tlc_jax/live/cli.py."""

import sys

from tlc_jax import xla_cpu
from tlc_jax.live.cli import main

xla_cpu.configure()  # Before any computation: XLA reads its flags once.
sys.exit(main())
