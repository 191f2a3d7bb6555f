"""JAX against PyTorch on this CPU, side by side in one run: training steps of the
three configurations issue 16 names and inference of the live analyzer's networks.

    python -m tlc_jax.benchmarks.cpu_speed                # full size (minutes)
    python -m tlc_jax.benchmarks.cpu_speed --quick        # tiny shapes (CI: runs, no timing asserted)
    python -m tlc_jax.benchmarks.cpu_speed --only=eval    # rows whose name matches

Training rows time the trainer's own jitted step (`tlc_jax.step`, via
`jax_measure.train_step_call`: uint8 in, normalisation, train-mode forward, CE, SGD with
momentum) against torchvision's DenseNet class with the same topology (forward, CE,
backward, SGD with momentum; `torch_reference.train_step_call`). Inference rows time the
jitted top-5 predict of `tlc_jax.inference.make_predict` (what the live analyzer runs)
against the PyTorch model in eval mode under `torch.inference_mode`.

The two sides of a row are timed interleaved, in `--steps` rounds: in each round each
side makes one untimed call (which brings it back to its steady state after the other
side's turn) and one timed call, the order of the sides alternating from round to
round, so both sides see the same machine - a VM's host runs 1.5x faster in one hour
than in another, and timing one side after the other let that drift into the ratio.
Each side's figure is the median of its timed calls (images/s = batch / median); the
ratio is the median over rounds of the round's own ratio, with the lowest and highest
round beside it. Beside the speed, each side's median minor page faults per timed
call (`getrusage`): the cost of memory the call maps afresh, which the C allocator
decides (docs/BENCHMARKS.md). Random weights: speed does not depend on them. The report names the
machine, its CPU, the C allocator (tcmalloc where `tlc_jax.allocator` preloaded it, for
both sides), the thread counts and the versions; XLA uses every core it sees, torch.get_num_threads()
threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from typing import Any, Callable

from tlc_jax import allocator, xla_cpu

# (name, kind, model, options): the full-size rows.
FULL = (
    ("train densenet_bc16 28px grey b80", "train", "densenet_bc",
     dict(depth=16, size=28, channels=1, batch=80, classes=10)),
    ("train densenet_bc100 32px b64", "train", "densenet_bc",
     dict(depth=100, size=32, channels=3, batch=64, classes=10)),
    ("train densenet121 224px b8", "train", "densenet121",
     dict(size=224, channels=3, batch=8, classes=1000)),
    ("eval densenet121 224px b8", "eval", "densenet121",
     dict(size=224, channels=3, batch=8, classes=1000)),
    ("eval efficientnet_lite0 224px b8", "eval", "efficientnet_lite0",
     dict(size=224, channels=3, batch=8, classes=1000)),
)
QUICK = (
    ("train densenet_bc10 16px grey b8", "train", "densenet_bc",
     dict(depth=10, size=16, channels=1, batch=8, classes=10)),
    ("eval efficientnet_lite0 32px b2", "eval", "efficientnet_lite0",
     dict(size=32, channels=3, batch=2, classes=10)),
)


def machine() -> dict[str, Any]:
    """The CPU (name, family / model, AVX-512 or not: XLA's kernels differ by CPU),
    cores, Python and the XLA_FLAGS in effect."""
    cpu = platform.processor() or "?"
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        info = ""
    field = lambda key: (re.findall(rf"^{key}\s*:\s*(.*)$", info, re.M) or [None])[0]
    if field("model name"):
        cpu = field("model name")
    if field("cpu family"):
        avx512 = "avx512f" in xla_cpu.cpu_flags(info)
        cpu += (f" (family {field('cpu family')} model {field('model')}, "
                f"{'AVX-512' if avx512 else 'no AVX-512'})")
    malloc = ("tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "")
              else "glibc malloc")
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "malloc": malloc}


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def minor_faults() -> int:
    """This process's minor page faults so far (all threads): each is a page the kernel
    had to map on first touch - what a per-call mmap of temporaries costs (47,600 a
    BC-16 training step on glibc's malloc, 18-180 with tcmalloc)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved_seconds(calls: dict[str, Callable[[], Any]], steps: int
                        ) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Seconds and minor page faults of each timed call over `steps` rounds. Every
    round runs each side twice in a
    row, timing only the second call: the first re-warms what the other side's turn
    let go cold (a JAX training step right after a pause of a second or more, or after
    a PyTorch step, took 4.3-6.0 s against 3.0 s back to back on DenseNet-BC-100; the
    trainer runs its steps back to back). The order of the sides alternates from round
    to round, so neither always runs right after the other; the first round's untimed
    calls also compile."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    faults: dict[str, list[int]] = {name: [] for name in calls}
    names = list(calls)
    for round_ in range(steps):
        for name in names if round_ % 2 == 0 else names[::-1]:
            calls[name]()
            faults_before, start = minor_faults(), time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
            faults[name].append(minor_faults() - faults_before)
    return times, faults


def jax_model(model: str, o: dict):
    from tlc_jax.models import create_model

    extra = {"depth": o["depth"], "growth_rate": 12} if model == "densenet_bc" else {}
    return create_model(model, num_classes=o["classes"], in_channels=o["channels"],
                        **extra)


def jax_eval(model: str, o: dict) -> Callable[[], Any]:
    """One call of the analyzer's jitted top-5 predict on a fixed uint8 batch."""
    import jax
    import numpy as np

    from tlc_jax.inference import make_predict
    from tlc_jax.models import init_variables

    net = jax_model(model, o)
    shape = (o["batch"], o["size"], o["size"], o["channels"])
    variables = init_variables(net, jax.random.key(0), (1, *shape[1:]))
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    predict = make_predict(net, top_k=min(5, o["classes"]))
    return lambda: jax.block_until_ready(predict(variables, images))


def torch_model(model: str, o: dict):
    import torch

    from tlc_jax.benchmarks import torch_reference

    if model == "densenet_bc":
        return torch_reference.cifar_densenet(o["depth"], 12, o["classes"],
                                              in_channels=o["channels"])
    if model.startswith("efficientnet_lite"):
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(model.replace("_", "-"), num_classes=o["classes"])
        return net
    return torch_reference.imagenet_densenet(model, o["classes"]).to(torch.float32)


def torch_eval(model: str, o: dict) -> Callable[[], Any]:
    """One eval-mode top-5 prediction of the PyTorch model under inference_mode."""
    import torch

    net = torch_model(model, o).eval()
    x = torch.randn(o["batch"], o["channels"], o["size"], o["size"])

    def call():
        with torch.inference_mode():
            return torch.topk(torch.softmax(net(x), -1), min(5, o["classes"]))

    return call


def measure(kind: str, model: str, o: dict, steps: int, torch_ok: bool) -> dict:
    """One row: both sides' calls built, then timed interleaved."""
    from tlc_jax.benchmarks import jax_measure, torch_reference

    calls: dict[str, Callable[[], Any]] = {}
    if kind == "train":
        calls["jax"] = jax_measure.train_step_call(
            jax_model(model, o), o["batch"], o["size"], o["classes"],
            channels=o["channels"])[0]
        if torch_ok:
            calls["torch"] = torch_reference.train_step_call(
                torch_model(model, o), o["batch"], o["size"], o["classes"],
                in_channels=o["channels"])
    else:
        calls["jax"] = jax_eval(model, o)
        if torch_ok:
            calls["torch"] = torch_eval(model, o)
    times, faults = interleaved_seconds(calls, steps)
    row: dict[str, Any] = {}
    for side, seconds in times.items():
        row[f"{side}_times"] = seconds  # Each round's call, in round order.
        row[f"{side}_faults"] = median(faults[side])  # Minor page faults per call.
        row[f"{side}_s"] = median(seconds)
        row[f"{side}_img_s"] = o["batch"] / row[f"{side}_s"]
    if "torch" in times:
        # JAX / PyTorch images/s within each round = PyTorch seconds / JAX seconds.
        rounds = [t / j for j, t in zip(times["jax"], times["torch"])]
        row["ratio"] = median(rounds)
        row["ratio_low"], row["ratio_high"] = min(rounds), max(rounds)
    return row


def markdown(info: dict, rows: list[dict]) -> str:
    lines = [f"CPU speed, JAX against PyTorch ({info['date']}; {info['machine']['cpu']}, "
             f"{info['machine']['cores']} cores; {info['versions']}; "
             f"{info['machine']['malloc']} (both sides); torch threads "
             f"{info.get('torch_threads', '-')}; XLA_FLAGS "
             f"{info['machine'].get('xla_flags') or '(none)'}):", "",
             "| row | JAX img/s | PyTorch img/s | JAX / PyTorch | rounds: lowest - highest "
             "| page faults / call: JAX, PyTorch |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        fmt = lambda k: f"{r[k]:.1f}" if k in r else "-"  # noqa: E731
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        spread = (f"{r['ratio_low']:.2f} - {r['ratio_high']:.2f}" if "ratio" in r
                  else "-")
        faults = ", ".join(f"{r[k]:,}" for k in ("jax_faults", "torch_faults") if k in r)
        lines.append(f"| {r['name']} | {fmt('jax_img_s')} | {fmt('torch_img_s')} | "
                     f"{ratio} | {spread} | {faults} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Tiny shapes, 2 steps.")
    parser.add_argument("--steps", type=int, default=None, help="Rounds per row (two calls of each side a round, the "
                             "second timed; default 5, --quick 2).")
    parser.add_argument("--only", default="", help="Regex on the row names.")
    parser.add_argument("--no-torch", action="store_true", help="JAX rows only.")
    parser.add_argument("--out", default="", help="Also write the rows as JSON here.")
    args = parser.parse_args(argv)
    import jax

    from tlc_jax.benchmarks.torch_reference import torch_status, versions

    torch_ok, why = (False, "--no-torch") if args.no_torch else torch_status()
    info = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "versions": f"jax {jax.__version__}" + (f", {versions()}" if torch_ok else
                                                    f" (PyTorch: {why})")}
    if torch_ok:
        import torch
        info["torch_threads"] = torch.get_num_threads()
    steps = args.steps or (2 if args.quick else 5)
    rows = []
    for name, kind, model, o in QUICK if args.quick else FULL:
        if args.only and not re.search(args.only, name):
            continue
        row = {"name": name, "kind": kind, "model": model, **o,
               **measure(kind, model, o, steps, torch_ok)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(markdown(info, rows))
    if args.out:
        from tlc_jax.fileio import write_json_atomic
        write_json_atomic(args.out, {**info, "rows": rows})
    return {**info, "rows": rows}


if __name__ == "__main__":
    allocator.use_tcmalloc()  # Restarts with tcmalloc where installed, as tlc_jax.main.
    xla_cpu.configure()  # Before any computation: XLA reads its flags once.
    main()
