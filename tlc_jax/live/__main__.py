"""`python -m tlc_jax.live ...`: see tlc_jax/live/cli.py."""

import sys

from tlc_jax.live.cli import main

sys.exit(main())
