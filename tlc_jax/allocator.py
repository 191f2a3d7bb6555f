"""The C allocator under JAX's CPU runtime: tcmalloc where it is installed.

XLA:CPU allocates the temporaries of each call of a compiled function as one block
(186 MiB for the DenseNet-BC-16 train step at batch 80). glibc's malloc serves a block
that large from mmap - from a thread's arena always, whatever its mmap threshold - and
hands it back to the kernel on free, so every call faults it in again, one 4 KiB page
at a time: 47,600 minor faults per BC-16 step. tcmalloc keeps freed memory for reuse
(18-180 faults a step). Measured on the 2-core Zen 3 VM, JAX rows of `python -m
tlc_jax.benchmarks.cpu_speed --no-torch`, tcmalloc against glibc's malloc in the same
quiet half hour (docs/BENCHMARKS.md, "Page faults"): training 1.80x (BC-16), 1.45x
(BC-100) and 1.19x (DenseNet-121) faster, inference 1.19x (DenseNet-121) and 1.26x
(EfficientNet-Lite0). glibc's own knobs (one arena, no mmap, no trimming, set with
mallopt) removed most faults but made the BC-100 step slower and PyTorch's threads
contend for the single arena, so they are not used.

An allocator is chosen when a process starts (`LD_PRELOAD`), so the command-line
entry points (`tlc_jax.main`, the CPU benchmarks) call `use_tcmalloc()` first thing:
where `libtcmalloc_minimal` is installed (Debian / Ubuntu: `apt-get install
libtcmalloc-minimal4`) and not yet loaded, it starts the same command again with the
library preloaded (`os.execve`: same process id, arguments and environment). Where it
is missing, nothing changes (glibc's malloc, the slower figures) and one line says how
to install it. TLC_JAX_TCMALLOC=off keeps glibc's malloc; TLC_JAX_TCMALLOC=<path>
names the library. The library itself never re-executes anything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

from tlc_jax.switches import switched_off

SWITCH = "TLC_JAX_TCMALLOC"  # off / 0 / false / no: glibc's malloc; a path: that file.
# Where Debian's libtcmalloc-minimal4 (and Ubuntu's, Fedora's) put the library.
CANDIDATES = tuple(f"/usr/lib/{arch}-linux-gnu/libtcmalloc_minimal.so.4"
                   for arch in ("x86_64", "aarch64")) + (
    "/usr/lib64/libtcmalloc_minimal.so.4", "/usr/lib/libtcmalloc_minimal.so.4")
HINT = ("tlc-jax: tcmalloc not found; XLA:CPU runs 1.2-1.8x slower on glibc's malloc. "
        "Install it (Debian / Ubuntu: apt-get install libtcmalloc-minimal4) or set "
        f"{SWITCH}=off to silence this.")


def tcmalloc_path(environ: Mapping[str, str], candidates=CANDIDATES) -> str | None:
    """The tcmalloc library to preload: the path `environ` names, else the first
    candidate that exists; None when switched off or not found."""
    if switched_off(environ, SWITCH):
        return None
    choice = environ.get(SWITCH, "").strip()
    for path in ((choice,) if choice and choice.lower() != "on" else candidates):
        if Path(path).is_file():
            return path
    return None


def preloaded(environ: Mapping[str, str], path: str) -> bool:
    """Whether `path` is already in LD_PRELOAD."""
    return path in environ.get("LD_PRELOAD", "").replace(":", " ").split()


def preload_environment(environ: Mapping[str, str],
                        candidates=CANDIDATES) -> dict[str, str] | None:
    """The environment to start again with (LD_PRELOAD with tcmalloc first), or None
    when there is nothing to do: switched off, not Linux, not found, already loaded."""
    if not sys.platform.startswith("linux"):
        return None
    path = tcmalloc_path(environ, candidates)
    if path is None or preloaded(environ, path):
        return None
    existing = environ.get("LD_PRELOAD", "").strip()
    return {**environ, "LD_PRELOAD": f"{path} {existing}".strip()}


def use_tcmalloc() -> None:
    """Restarts this command with tcmalloc preloaded, if it is installed and not yet
    loaded (see the module's docstring); otherwise returns, after printing the hint
    to stderr when tcmalloc is missing. Call first thing in a `__main__` block,
    before threads start or files are written."""
    environ = dict(os.environ)
    new = preload_environment(environ)
    if new is None:
        if sys.platform.startswith("linux") and not switched_off(environ, SWITCH) and (
                tcmalloc_path(environ) is None):
            print(HINT, file=sys.stderr, flush=True)
        return
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], new)
