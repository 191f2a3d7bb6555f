"""XLA:CPU settings chosen for the CPU at hand, set before JAX starts its CPU backend.

XLA reads `XLA_FLAGS` once, when the first backend is created, so the command-line
entry points (`tlc_jax.main`, the benchmarks, the live analyzer) call `configure()` at
start-up, before any computation; the library itself never touches the environment.

The one setting today: on x86 CPUs with AVX2 and without AVX-512, convolutions are
taken away from YNNPACK (`--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`;
XLA then uses its Eigen convolutions, while matrix products stay with YNNPACK). Measured with
`python -m tlc_jax.benchmarks.cpu_speed --no-torch` (docs/BENCHMARKS.md, "XLA:CPU
settings by CPU"):
- AMD EPYC Zen 3 (family 25 model 1, AVX2, no AVX-512), 2 cores: the BC-16 train step
  1.71x faster (141 -> 240 img/s), BC-100 1.32x, DenseNet-121 train 1.37x and eval
  1.27x, EfficientNet-Lite0 eval 1.02x. YNNPACK's weight-gradient convolution was 160 ms
  where the Eigen one takes a fraction of it.
- AMD EPYC Zen 4 (family 25 model 17, AVX-512), 2 cores: YNNPACK's convolutions are the
  faster ones (YNNPACK for dots only, the nearest setting measured there, made the BC-16
  step 4% slower; this exact flag was not run there), so nothing is changed.

Opt out with TLC_JAX_CPU_TUNING=off, or by setting any `ynn_fusion_type` in XLA_FLAGS
yourself (yours is kept as it is).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping

from tlc_jax.switches import switched_off

SWITCH = "TLC_JAX_CPU_TUNING"  # off / 0 / false / no: leave XLA_FLAGS alone.
NO_YNN_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The instruction-set flags of the first processor listed in /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM spellings.
            return set(value.split())
    return set()


def tuned_flags(cpuinfo: str) -> list[str]:
    """The XLA flags this module adds for a CPU described by /proc/cpuinfo text; none
    for an unreadable description (no guessing)."""
    flags = cpu_flags(cpuinfo)
    if flags and "avx2" in flags and "avx512f" not in flags:
        return [NO_YNN_CONVOLUTIONS]
    return []


def tuned_xla_flags(existing: str, cpuinfo: str) -> str:
    """`existing` XLA_FLAGS with this CPU's settings appended, unless they already
    choose the same thing (the user's choice wins)."""
    added = [f for f in tuned_flags(cpuinfo) if "ynn_fusion_type" not in existing]
    return " ".join(part for part in (existing.strip(), *added) if part)


def configure(environ: MutableMapping[str, str] | None = None,
              cpuinfo: str | None = None) -> str:
    """Sets XLA_FLAGS in `environ` (default: this process's) for this CPU; returns what
    it holds now. Call before JAX's first computation: later, XLA has read its flags
    and this changes nothing (it then raises, so the mistake is seen)."""
    environ = os.environ if environ is None else environ
    existing = environ.get("XLA_FLAGS", "")
    if switched_off(environ, SWITCH):
        return existing
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:  # Not Linux: nothing known, nothing changed.
            return existing
    new = tuned_xla_flags(existing, cpuinfo)
    if new != existing:
        if environ is os.environ and _backend_started():
            raise RuntimeError("tlc_jax.xla_cpu.configure() was called after JAX "
                               "started its backend; call it before any computation.")
        environ["XLA_FLAGS"] = new
    return new


def _backend_started() -> bool:
    """Whether this process's JAX has created a backend (XLA_FLAGS are read then)."""
    import sys
    bridge = sys.modules.get("jax._src.xla_bridge")
    if bridge is None:
        return False
    if hasattr(bridge, "backends_are_initialized"):
        return bool(bridge.backends_are_initialized())
    return bool(getattr(bridge, "_backends", None))
