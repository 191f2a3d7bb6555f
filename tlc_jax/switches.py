"""Environment switches that turn one of tlc-jax's automatic settings off
(`TLC_JAX_TCMALLOC` in tlc_jax/allocator.py, `TLC_JAX_CPU_TUNING` in
tlc_jax/xla_cpu.py): the same words mean "off" for every one."""

from typing import Mapping

OFF = ("off", "0", "false", "no")


def switched_off(environ: Mapping[str, str], name: str) -> bool:
    """Whether `environ[name]` says off (case and surrounding spaces ignored)."""
    return environ.get(name, "").strip().lower() in OFF
