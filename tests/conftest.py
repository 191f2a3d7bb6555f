"""Shared test setup: deterministic, strict about silent broadcasting, small."""

import jax
import pytest

# Silent rank promotion hides shape bugs; make it an error in every test.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
    return jax.random.key(0)
