"""Shared test setup: deterministic, strict about silent broadcasting, small."""

import jax
import pytest

from tlc_jax import xla_cpu

# The XLA:CPU settings the command-line tools use on this CPU (tlc_jax/xla_cpu.py); set
# before any test computes, and inherited by the processes tests start.
xla_cpu.configure()

# Silent rank promotion hides shape bugs; make it an error in every test.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
    return jax.random.key(0)
