"""tlc_jax.allocator: which tcmalloc is preloaded and when, that the entry points'
restart really loads it, and that it removes the page faults it is there for."""

import json
import os
import subprocess
import sys

import pytest

from tlc_jax import allocator

from helpers import ROOT

INSTALLED = allocator.tcmalloc_path({}) is not None


def test_the_library_is_found_named_or_switched_off(tmp_path):
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    missing = str(tmp_path / "missing.so")
    assert allocator.tcmalloc_path({}, (missing, str(lib))) == str(lib)
    assert allocator.tcmalloc_path({}, (missing,)) is None
    assert allocator.tcmalloc_path({allocator.SWITCH: str(lib)}, ()) == str(lib)
    assert allocator.tcmalloc_path({allocator.SWITCH: missing}, (str(lib),)) is None
    assert allocator.tcmalloc_path({allocator.SWITCH: "on"}, (str(lib),)) == str(lib)
    for off in ("off", "0", "False", "no", " OFF "):  # tlc_jax.switches.OFF
        assert allocator.tcmalloc_path({allocator.SWITCH: off}, (str(lib),)) is None


def test_the_restart_environment_puts_tcmalloc_first_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    env = {"PATH": "/bin", "LD_PRELOAD": "/opt/other.so"}
    new = allocator.preload_environment(env, (str(lib),))
    assert new == {"PATH": "/bin", "LD_PRELOAD": f"{lib} /opt/other.so"}
    assert allocator.preload_environment(new, (str(lib),)) is None  # Already loaded.
    assert allocator.preload_environment({}, (str(lib),)) == {"LD_PRELOAD": str(lib)}
    assert allocator.preload_environment({allocator.SWITCH: "off"}, (str(lib),)) is None
    assert allocator.preload_environment({}, (str(tmp_path / "none.so"),)) is None
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.preload_environment({}, (str(lib),)) is None


RESTART = """
import sys
from tlc_jax import allocator
allocator.use_tcmalloc()
print(sys.argv[1:], any("tcmalloc" in line for line in open("/proc/self/maps")))
"""

FAULTS = """
import json
from tlc_jax import allocator
allocator.use_tcmalloc()
from tlc_jax.benchmarks.cpu_speed import minor_faults
import jax, jax.numpy as jnp, numpy as np
x = jnp.asarray(np.random.default_rng(0).standard_normal((8192, 2048), np.float32))
w = jnp.ones((2048, 8), jnp.float32)
f = jax.jit(lambda x, w: jnp.dot(jnp.sin(x) * x, w).sum())  # A 64 MiB temporary.
temp = f.lower(x, w).compile().memory_analysis().temp_size_in_bytes
for _ in range(5):
    f(x, w).block_until_ready()
faults = []
for _ in range(9):  # The median call: tcmalloc may hand memory back now and then.
    before = minor_faults()
    f(x, w).block_until_ready()
    faults.append(minor_faults() - before)
print(json.dumps({"temp_pages": temp / 4096, "faults": sorted(faults)[4]}))
"""


def run(code, switch, *args):
    env = {**os.environ, allocator.SWITCH: switch}
    env.pop("LD_PRELOAD", None)
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


needs_tcmalloc = pytest.mark.skipif(
    not INSTALLED and os.environ.get("CI") != "true",
    reason="apt-get install libtcmalloc-minimal4 (CI installs it and fails without)")


@needs_tcmalloc
def test_use_tcmalloc_restarts_the_command_with_it_loaded():
    on = run(RESTART, "on", "--a=1", "b")
    assert on.stdout.strip() == "['--a=1', 'b'] True", on.stdout  # Same arguments.
    off = run(RESTART, "off", "--a=1")
    assert off.stdout.strip() == "['--a=1'] False" and allocator.HINT not in off.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc / Linux only")
def test_a_missing_tcmalloc_is_said_once_and_changes_nothing(tmp_path):
    out = run(RESTART, str(tmp_path / "missing.so"))
    assert out.stdout.strip() == "[] False"
    assert out.stderr.count("tcmalloc not found") == 1


@needs_tcmalloc
def test_tcmalloc_stops_xla_temporaries_being_faulted_in_on_every_call():
    """glibc's malloc hands a 64 MiB temporary to mmap and back on every call, so each
    call faults all its pages in again; tcmalloc reuses the freed block (the median
    call: in CI one call in five once faulted the block in again, tcmalloc having
    returned it to the system in between)."""
    off = json.loads(run(FAULTS, "off").stdout.strip().splitlines()[-1])
    on = json.loads(run(FAULTS, "on").stdout.strip().splitlines()[-1])
    assert off["temp_pages"] == 16384
    assert off["faults"] > 0.5 * off["temp_pages"], off  # The problem, as measured.
    assert on["faults"] < 0.05 * on["temp_pages"], on
