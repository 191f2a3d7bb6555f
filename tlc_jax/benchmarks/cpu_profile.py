"""Where a training step's time goes on this CPU: the JAX step per compiled operation
(XLA's own profiler) beside PyTorch's profiler on the same step, grouped into the same
coarse categories.

    python -m tlc_jax.benchmarks.cpu_profile                  # the three training rows
    python -m tlc_jax.benchmarks.cpu_profile --only=bc16 --steps=3 --top=15

JAX: the trainer's compiled step (`jax_measure.compiled_train_step`) runs `--steps`
times under `jax.profiler.trace`; XLA:CPU records one event per executed instruction
of the compiled module (a fusion, a YNNPACK convolution / matrix product, a copy) on
the thread that ran it. Each event's instruction is looked up in the compiled module's
text; its `op_name` metadata gives the Flax module path (`denseblock1/denselayer1/
norm1/reduce_sum`), the primitive, and the direction (`transpose(jvp(...))` is the
backward pass, `jvp(...)` the forward pass). Per category the script reports CPU time
(events summed over threads), wall time (the union of each instruction's events) and
their ratio, the cores an instruction used; the comparison with PyTorch is on wall time.

PyTorch: `torch.profiler` (CPU activities) over the same number of steps of the same
topology (`torch_reference`), self CPU time per aten operator.

Categories (both frameworks): spatial convolution (3x3 / 7x7) forward and backward,
1x1 convolution forward and backward (JAX runs these as matrix products), batch
normalisation + ReLU forward and backward (JAX also separates the statistics'
reductions), concatenation, layout (transposes / copies XLA inserts), pooling,
classifier and loss, optimizer and the rest.
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import tempfile
import time
from typing import Any

from tlc_jax import allocator, xla_cpu
from tlc_jax.benchmarks.cpu_speed import FULL, QUICK, jax_model, machine, torch_model

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+\s+([\w\-]+)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def entry_instructions(hlo_text: str) -> dict[str, dict[str, Any]]:
    """Instruction name -> {opcode, op_name, ops, line} for the compiled module's entry
    computation (the instructions XLA:CPU executes, named in its trace events); `ops`
    is the set of opcodes the instruction runs (a fusion's body included). Fusion
    bodies are not listed themselves: they are not executed on their own."""
    bodies: dict[str, set[str]] = {}
    entry: list[tuple[str, str, str]] = []
    current, is_entry = None, False
    for line in hlo_text.splitlines():
        if not line.startswith(" ") and line.rstrip().endswith("{"):
            m = _COMPUTATION.match(line)
            current, is_entry = (m.group(1) if m else None), line.startswith("ENTRY")
            bodies.setdefault(current, set())
            continue
        if line.startswith("}"):
            current, is_entry = None, False
            continue
        m = _INSTR.match(line)
        if not m or current is None:
            continue
        bodies[current].add(m.group(2))
        if is_entry:
            entry.append((m.group(1), m.group(2), line))
    out: dict[str, dict[str, Any]] = {}
    for name, opcode, line in entry:
        ops = {opcode}
        called = _CALLS.search(line)
        if called:
            ops |= bodies.get(called.group(1), set())
        op = _OP_NAME.search(line)
        out[name] = {"opcode": opcode, "op_name": op.group(1) if op else "",
                     "ops": ops, "line": line}
    return out


def jax_category(name: str, info: dict[str, Any]) -> str:
    """Coarse category of one executed instruction (see the module docstring).
    Convolutions without metadata are the backward pass's filter gradients (XLA
    builds them from the transposed forward convolution and drops the name)."""
    op_name, ops = info["op_name"], info["ops"]
    path = op_name.split("/")
    prim = path[-1] if path else ""
    backward = "transpose(" in op_name
    direction = "backward" if backward else "forward"
    in_model = "jvp(" in op_name
    modules = [p for p in path if not p.startswith(("jit(", "jvp(", "transpose("))]
    module = modules[-2] if len(modules) >= 2 else ""
    if "convolution" in ops:
        return f"spatial conv {direction if op_name else 'backward'}"
    if "dot" in ops and (not op_name or module.startswith(("conv", "transition"))
                         or prim == "dot_general"):
        if module.startswith(("classifier", "head")):
            return "classifier"
        return f"1x1 conv (matmul) {direction if op_name else 'backward'}"
    if not op_name:
        if ops <= {"fusion", "transpose", "copy", "bitcast", "parameter"} or \
                "transpose" in name or "copy" in name:
            return "layout (transpose / copy)"
        return "loss, optimizer, grad norm"
    if not in_model:
        return "loss, optimizer, grad norm"
    if module.startswith(("classifier", "head")):
        return "classifier"
    if prim == "concatenate" or "concatenate" in ops:
        return f"concatenation {direction}"
    if module.startswith(("norm", "bn")) or "relu" in op_name:
        if prim.startswith("reduce") and not backward:
            return "BN statistics forward (reductions)"
        return f"BN + ReLU {direction}"
    if "pool" in op_name or "reduce-window" in ops:
        return f"pooling {direction}"
    if "transpose" in name or "copy" in name:
        return "layout (transpose / copy)"
    return f"other model ops {direction}"


def coarse(category: str) -> str:
    """The category shared with PyTorch's table."""
    if category.startswith("BN statistics"):
        return "BN + ReLU forward"
    if category.startswith("other") or category in ("loss, optimizer, grad norm",
                                                    "classifier"):
        return "classifier, loss, optimizer, other"
    return category


def profile_jax(model: str, o: dict, steps: int, top: int = 0) -> dict[str, Any]:
    """CPU ms per step by category (and the `top` slowest instructions) of the JAX
    train step, plus its median wall time per step."""
    import jax
    from jax.profiler import ProfileData

    from tlc_jax.benchmarks.jax_measure import compiled_train_step

    net = jax_model(model, o)
    compiled, _, state, data, quotas, key = compiled_train_step(
        net, o["batch"], o["size"], o["classes"], channels=o["channels"])
    index = entry_instructions(compiled.as_text())
    state, metrics = compiled(state, data, quotas, key)  # Warm-up.
    jax.block_until_ready(metrics)
    walls = []
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        for _ in range(steps):
            start = time.perf_counter()
            state, metrics = compiled(state, data, quotas, key)
            jax.block_until_ready((state, metrics))
            walls.append(time.perf_counter() - start)
        jax.profiler.stop_trace()
        (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
        profile = ProfileData.from_file(path)
    per_instr: dict[str, float] = collections.Counter()
    spans: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for plane in profile.planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in index:
                    per_instr[event.name] += event.duration_ns / 1e6 / steps
                    spans[event.name].append((event.start_ns, event.end_ns))
    per_cat: dict[str, float] = collections.Counter()
    wall_cat: dict[str, float] = collections.Counter()
    for name, ms in per_instr.items():
        cat = jax_category(name, index[name])
        per_cat[cat] += ms
        wall_cat[cat] += union_ns(spans[name]) / 1e6 / steps
    slowest = [(name, round(ms, 3), jax_category(name, index[name]),
                index[name]["op_name"].split("jvp(")[-1][:80])
               for name, ms in per_instr.most_common(top)]
    walls.sort()
    covered = union_ns([s for spans_ in spans.values() for s in spans_]) / 1e6 / steps
    return {"wall_ms": 1e3 * walls[len(walls) // 2], "cpu_ms": dict(per_cat),
            "op_wall_ms": dict(wall_cat), "slowest": slowest,
            "instructions": len(per_instr), "covered_ms": covered}


def union_ns(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals: the wall time an instruction
    ran, whichever threads ran its parts."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


_TORCH_RULES = (
    # (regex on the aten operator, category); first match wins. Convolutions are
    # split into 1x1 and spatial by their weight's shape (`torch_category`).
    (r"convolution_backward", "conv backward"),
    (r"(mkldnn_convolution|_convolution|thnn_conv|slow_conv|conv2d|convolution)$",
     "conv forward"),
    (r"batch_norm.*backward|threshold_backward", "BN + ReLU backward"),
    (r"batch_norm|relu|clamp_min", "BN + ReLU forward"),
    (r"::cat$", "concatenation forward"),
    (r"pool.*backward", "pooling backward"),
    (r"pool", "pooling forward"),
)


def torch_category(op: str, shapes: list | None = None) -> str:
    """Category of one aten operator; `shapes` (its inputs' shapes) tells a 1x1
    convolution from a spatial one."""
    for pattern, cat in _TORCH_RULES:
        if re.search(pattern, op):
            if cat.startswith("conv"):
                weight = (shapes or [None] * 3)[2 if "backward" in cat else 1]
                kind = ("1x1 conv (matmul)" if weight and len(weight) == 4
                        and weight[2:] == [1, 1] else "spatial conv")
                return f"{kind} {cat.split()[-1]}"
            return cat
    return "classifier, loss, optimizer, other"


def profile_torch(model: str, o: dict, steps: int, top: int = 0) -> dict[str, Any]:
    """Self CPU ms per step by category (and the `top` slowest operators) of the
    PyTorch training step (forward, CE, backward, SGD with momentum)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    net = torch_model(model, o).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(o["batch"], o["channels"], o["size"], o["size"])
    y = torch.randint(0, o["classes"], (o["batch"],))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    step()  # Warm-up.
    walls = []
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            start = time.perf_counter()
            step()
            walls.append(time.perf_counter() - start)
    per_op: dict[str, float] = collections.Counter()
    per_cat: dict[str, float] = collections.Counter()
    for ev in prof.key_averages(group_by_input_shape=True):
        ms = ev.self_cpu_time_total / 1e3 / steps
        per_op[ev.key] += ms
        per_cat[torch_category(ev.key, ev.input_shapes)] += ms
    walls.sort()
    return {"wall_ms": 1e3 * walls[len(walls) // 2], "cpu_ms": dict(per_cat),
            "slowest": [(op, round(ms, 3), torch_category(op))
                        for op, ms in per_op.most_common(top)]}


def uncovered_ms(jx: dict) -> float:
    """Median step wall time not covered by any executed instruction's events."""
    return max(0.0, jx["wall_ms"] - jx.get("covered_ms", jx["wall_ms"]))


def markdown(name: str, jx: dict, pt: dict | None) -> str:
    """One configuration's tables: the JAX categories (CPU time summed over threads,
    wall time while any thread ran them, and their ratio: the cores used), then the
    comparison with PyTorch on wall time (PyTorch's self time is measured on the
    calling thread, which waits for its intra-op threads: a wall time too)."""
    lines = [f"#### {name}", "",
             f"JAX wall {jx['wall_ms']:.1f} ms/step ({jx['instructions']} instructions "
             f"executed)" + (f"; PyTorch wall {pt['wall_ms']:.1f} ms/step" if pt else ""),
             "", "| JAX category | CPU ms/step | wall ms/step | cores used | share of wall |",
             "|---|---:|---:|---:|---:|"]
    cpu, wall = jx["cpu_ms"], jx["op_wall_ms"]
    wtotal = sum(wall.values()) or 1.0
    for cat in sorted(wall, key=lambda c: -wall[c]):
        lines.append(f"| {cat} | {cpu[cat]:.1f} | {wall[cat]:.1f} | "
                     f"{cpu[cat] / max(wall[cat], 1e-9):.2f} | {100 * wall[cat] / wtotal:.0f}% |")
    ctotal = sum(cpu.values())
    lines.append(f"| total | {ctotal:.1f} | {wtotal:.1f} | {ctotal / wtotal:.2f} | |")
    outside = uncovered_ms(jx)
    lines += ["", f"Step wall time outside every instruction's events: {outside:.1f} ms "
              f"({100 * outside / max(jx['wall_ms'], 1e-9):.0f}%): dispatch, and work "
              f"XLA hands to a thread pool without an event of its own (Eigen "
              f"convolutions, with tlc_jax.xla_cpu's setting, show up here, not as "
              f"spatial convolutions)."]
    if pt:
        jc: dict[str, float] = collections.Counter()
        for cat, ms in wall.items():
            jc[coarse(cat)] += ms
        pc = pt["cpu_ms"]
        ptotal = sum(pc.values()) or 1.0
        lines += ["", "| category | JAX wall ms | PyTorch ms | JAX / PyTorch time |",
                  "|---|---:|---:|---:|"]
        for cat in sorted(set(jc) | set(pc), key=lambda c: -(jc.get(c, 0) + pc.get(c, 0))):
            j, p = jc.get(cat, 0.0), pc.get(cat, 0.0)
            ratio = f"{j / p:.2f}" if p > 0.05 else "-"
            lines.append(f"| {cat} | {j:.1f} | {p:.1f} | {ratio} |")
        lines.append(f"| outside instruction events | {outside:.1f} | - | - |")
        lines.append(f"| total (step wall) | {wtotal + outside:.1f} | {ptotal:.1f} | "
                     f"{(wtotal + outside) / ptotal:.2f} |")
    if jx["slowest"]:
        lines += ["", "Slowest JAX instructions (CPU ms/step, category, Flax path):", ""]
        lines += [f"- `{n}` {ms:.2f} ms - {cat} - `{path}`"
                  for n, ms, cat, path in jx["slowest"]]
    if pt and pt["slowest"]:
        lines += ["", "Slowest PyTorch operators (self CPU ms/step):", ""]
        lines += [f"- `{op}` {ms:.2f} ms - {cat}" for op, ms, cat in pt["slowest"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="train", help="Regex on the row names "
                        "(cpu_speed's rows; only training rows are profiled).")
    parser.add_argument("--steps", type=int, default=3, help="Profiled steps per row.")
    parser.add_argument("--top", type=int, default=10, help="Slowest ops listed.")
    parser.add_argument("--quick", action="store_true", help="cpu_speed's tiny rows.")
    parser.add_argument("--no-torch", action="store_true", help="JAX only.")
    args = parser.parse_args(argv)
    import jax

    from tlc_jax.benchmarks.torch_reference import torch_status, versions

    torch_ok, why = (False, "--no-torch") if args.no_torch else torch_status()
    m = machine()
    print(f"CPU profile ({time.strftime('%Y-%m-%d')}; {m['cpu']}, {m['cores']} cores; "
          f"jax {jax.__version__}" + (f", {versions()}" if torch_ok else
                                      f"; PyTorch: {why}") + ")\n", flush=True)
    results = []
    for name, kind, model, o in QUICK if args.quick else FULL:
        if kind != "train" or not re.search(args.only, name):
            continue
        jx = profile_jax(model, o, args.steps, args.top)
        pt = profile_torch(model, o, args.steps, args.top) if torch_ok else None
        print(markdown(name, jx, pt) + "\n", flush=True)
        results.append({"name": name, "jax": jx, "torch": pt})
    return results


if __name__ == "__main__":
    allocator.use_tcmalloc()  # Restarts with tcmalloc where installed, as tlc_jax.main.
    xla_cpu.configure()  # Before any computation: XLA reads its flags once.
    main()
