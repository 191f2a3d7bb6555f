"""tlc_jax.xla_cpu: which XLA flags a CPU gets, that the user's choice wins, and that
the flag does what it is for (convolutions leave YNNPACK, results unchanged)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tlc_jax import xla_cpu

from helpers import ROOT

ZEN3 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
        "flags\t\t: fpu sse sse2 avx avx2 fma bmi2\n\nprocessor\t: 1\n"
        "flags\t\t: fpu sse sse2 avx avx2 fma bmi2\n")
ZEN4 = ("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 17\n"
        "flags\t\t: fpu avx avx2 fma avx512f avx512bw avx512vl\n")
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


def test_flags_by_cpu():
    assert xla_cpu.cpu_flags(ZEN3) == {"fpu", "sse", "sse2", "avx", "avx2", "fma", "bmi2"}
    assert xla_cpu.tuned_flags(ZEN3) == [xla_cpu.NO_YNN_CONVOLUTIONS]
    assert xla_cpu.tuned_flags(ZEN4) == []  # YNNPACK's convolutions win there.
    assert xla_cpu.tuned_flags(ARM) == []  # Not measured: left alone.
    assert xla_cpu.tuned_flags("") == []  # Unknown: no guessing.


def test_the_users_flags_are_kept_and_win():
    assert xla_cpu.tuned_xla_flags("", ZEN3) == xla_cpu.NO_YNN_CONVOLUTIONS
    assert (xla_cpu.tuned_xla_flags("--xla_dump_to=/tmp/x ", ZEN3)
            == "--xla_dump_to=/tmp/x " + xla_cpu.NO_YNN_CONVOLUTIONS)
    mine = "--xla_cpu_experimental_ynn_fusion_type=invalid"
    assert xla_cpu.tuned_xla_flags(mine, ZEN3) == mine
    assert xla_cpu.tuned_xla_flags("--xla_dump_to=/tmp/x", ZEN4) == "--xla_dump_to=/tmp/x"


def test_configure_sets_the_environment_unless_switched_off():
    env = {}
    assert xla_cpu.configure(env, ZEN3) == xla_cpu.NO_YNN_CONVOLUTIONS
    assert env == {"XLA_FLAGS": xla_cpu.NO_YNN_CONVOLUTIONS}
    assert xla_cpu.configure(env, ZEN3) == xla_cpu.NO_YNN_CONVOLUTIONS  # Idempotent.
    for off in ("off", "0", "FALSE", "no"):
        env = {xla_cpu.SWITCH: off, "XLA_FLAGS": "--a"}
        assert xla_cpu.configure(env, ZEN3) == "--a" and env["XLA_FLAGS"] == "--a"
    env = {}
    assert xla_cpu.configure(env, ZEN4) == "" and env == {}


PROBE = """
import json, sys
from tlc_jax import xla_cpu
if sys.argv[1] == "tuned":
    xla_cpu.configure(cpuinfo=sys.argv[2])
import jax, jax.numpy as jnp, numpy as np
# numpy's random numbers: jax.random's threefry takes ~4 s per shape to compile at
# XLA's default optimisation level, which this probe keeps.
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(4, 12, 12, 8)), jnp.float32)
w = jnp.asarray(rng.normal(size=(3, 3, 8, 6)), jnp.float32)
def loss(w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.tanh(y))
fn = jax.jit(jax.value_and_grad(loss))
text = fn.lower(w).compile().as_text()
value, grad = fn(w)
late = None
try:
    xla_cpu.configure(cpuinfo=sys.argv[2])
except RuntimeError as e:
    late = str(e)
print(json.dumps({"hlo": text, "value": float(value), "grad": np.asarray(grad).tolist(),
                  "late": late}))
"""


def convolutions_in_ynn_fusions(hlo: str) -> int:
    """How many convolutions XLA hands to YNNPACK in this compiled module."""
    bodies = {m.group(1): m.group(2) for m in re.finditer(
        r"^%(\S+) \([^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M)}
    called = re.findall(r"calls=%([\w.\-]+), backend_config=\{\"fusion_config\":"
                        r"\{\"kind\":\"__ynn_fusion\"", hlo)
    return sum("convolution(" in bodies.get(name, "") for name in called)


@pytest.mark.slow
def test_the_flag_moves_convolutions_off_ynnpack_with_the_same_results():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.SWITCH)}
    env["JAX_PLATFORMS"] = "cpu"
    runs = {}
    for mode in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", PROBE, mode, ZEN3], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    tuned, default = runs["tuned"], runs["default"]
    assert "convolution(" in tuned["hlo"]  # The convolutions are there ...
    assert convolutions_in_ynn_fusions(tuned["hlo"]) == 0  # ... and none in YNNPACK.
    assert tuned["value"] == pytest.approx(default["value"], rel=1e-5)
    np.testing.assert_allclose(tuned["grad"], default["grad"], rtol=1e-4, atol=1e-4)
    # Called after JAX has read its flags, configure() says so instead of doing nothing
    # (and with nothing left to change, it is a no-op).
    assert "after JAX started its backend" in default["late"]
    assert tuned["late"] is None
