"""Shared test setup: deterministic, strict about silent broadcasting, small."""

import atexit
import collections
import os
import shutil
import tempfile

# One persistent compilation cache for the session, fresh each time and deleted at its
# end, shared with every process the tests start (through the environment, read when
# they import jax): the many runs of the same tiny models - each grid cell, each
# resumed or re-evaluated run - compile once. Set before jax is imported here.
_CACHE = tempfile.mkdtemp(prefix="tlc_jax_test_xla_cache_")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.update({"JAX_COMPILATION_CACHE_DIR": _CACHE,
                   "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                   "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})

# XLA:CPU's own kernels (the fusions around the library convolutions and matrix
# products) built without LLVM's optimisations, by XLA's older loop emitters instead of
# its MLIR fusion emitters: the tests' tiny models spend far longer compiling than
# running, and a random-number generator (threefry, one per parameter initialised)
# takes ~0.6 s each to compile optimised. Measured on test_pretrained.py,
# test_models.py and test_memory.py (two workers, quiet): 364 s at the default level,
# 295 s at -O0, though some of them run 224 px DenseNets; at -O0 the loop emitters then
# compile a DenseNet-BC-16 gradient in 1.0 s instead of 3.1 s and a DenseNet-121
# forward in 2.3 s instead of 3.8 s (2026-12-01; the whole suite: 15 min 55 s -> 13 min
# 40 s, README). Results stay within every test's tolerance; speed is measured by the
# benchmarks, never here. Inherited by the processes tests start.
from helpers import TEST_XLA_FLAGS  # noqa: E402 - numpy only, no jax.

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

import jax  # noqa: E402 - after the cache settings.
import pytest  # noqa: E402

from tlc_jax import xla_cpu  # noqa: E402

# The XLA:CPU settings the command-line tools use on this CPU (tlc_jax/xla_cpu.py); set
# before any test computes, and inherited by the processes tests start.
xla_cpu.configure()

# The same cache in this process, should a plugin have imported jax before this file.
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# Silent rank promotion hides shape bugs; make it an error in every test.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def rng():
    return jax.random.key(0)


def pytest_collection_modifyitems(items):
    """Every item gets a node id of its own. schemathesis names each API operation's
    item after it (`item.name`, "test_x[GET /api/v1/health]") but leaves them the test
    function's node id; pytest-xdist (the two workers of pyproject.toml) schedules and
    reports by node id, and would run one of them per function. Those get their name's
    operation as the id's parameter; any other duplicate stops the session, so no test
    is dropped silently."""
    counts = collections.Counter(item.nodeid for item in items)
    for item in items:
        if counts[item.nodeid] > 1 and "[" in item.name and "[" not in item.nodeid:
            unique = f"{item.nodeid}[{item.name.split('[', 1)[1][:-1]}]"
            if hasattr(item, "_id"):  # pytest >= 9: a structured id.
                from _pytest.nodes import NodeId
                item._id = NodeId.parse(unique)
            else:
                item._nodeid = unique
    duplicates = [n for n, c in collections.Counter(i.nodeid for i in items).items() if c > 1]
    if duplicates:
        raise pytest.UsageError(f"tests share node ids (pytest-xdist would run only one "
                                f"of each): {duplicates[:5]}")
