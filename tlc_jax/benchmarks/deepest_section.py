"""Section 3 of the memory / speed benchmark: the deepest DenseNet-BC (k=12, batch
--batch_size, 32 px) whose training state fits --budget_gib, per mode.

An estimate, from the memory section's figures: JAX's training state is its traced
saved-for-backward bytes + 3 x parameter bytes (parameters, gradients, SGD momentum) +
BatchNorm statistics + the input batch (`jax_measure.total_estimate`); PyTorch's is its
measured saved bytes + 3 x parameter bytes. A quadratic in the layers per block is
fitted over the three deepest depths and bisected over depths 4 mod 6. With
--deepest_check the JAX answer is traced to check the fit; on a GPU
(--deepest_gpu_check) the peak at the answer is measured.
"""

from __future__ import annotations

import time

from tlc_jax.benchmarks.isolated import run_row
from tlc_jax.benchmarks.jax_measure import jax_traced, total_estimate
from tlc_jax.benchmarks.result_rows import GIB, log, row


def quadratic_fit(points: list[tuple[int, float]]):
    """Least-squares quadratic in the layers per block n = (depth - 4) / 6."""
    import numpy as np
    n = np.array([(d - 4) / 6 for d, _ in points], float)
    v = np.array([b for _, b in points], float)
    deg = min(2, len(points) - 1)
    coef = np.polyfit(n, v, deg)
    return lambda depth: float(np.polyval(coef, (depth - 4) / 6))


def deepest_by_fit(fit, budget: float, start: int = 10, limit: int = 100_000) -> int:
    """Largest depth (4 mod 6) whose fitted figure is within budget (bisection)."""
    lo, hi = 0, (limit - 4) // 6  # Layers per block.
    if fit(start) > budget:
        return 0
    lo = (start - 4) // 6
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fit(6 * mid + 4) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return 6 * lo + 4


def deepest_section(args, rows, measured, gpu: bool) -> None:
    """Section 3: the deepest BC network within the budget, per mode (estimate);
    `measured` is what `memory_section` returned."""
    for mode, policy in [("naive", "-")] + [("recompute", q) for q in args.policies]:
        d_star = _jax_deepest_rows(args, rows, measured["jax"], mode, policy)
        if gpu and args.gpu_peak is not False and args.deepest_gpu_check and d_star:
            _gpu_check_rows(args, rows, mode, policy, d_star)
        else:
            rows.append(row("deepest", "jax", "densenet_bc", batch_size=args.batch_size,
                            image_size=32, mode=mode, policy=policy,
                            metric="gpu_peak_bytes", status="not measured",
                            note="no GPU: the measured check runs only on a GPU"
                            if not gpu else "skipped (--no-deepest_gpu_check)"))
    for mode in ("naive", "efficient"):
        _torch_deepest_rows(args, rows, measured["torch"], mode)


def _jax_deepest_rows(args, rows, traced, mode: str, policy: str) -> int:
    """The fitted (and with --deepest_check, traced) deepest depth of one JAX mode and
    its training-state estimate; returns the depth (0: not even depth 10 fits)."""
    budget, batch = args.budget_gib * GIB, args.batch_size
    pts = [(d, total_estimate(t)) for (m, d, mo, q), t in traced.items()
           if m == "densenet_bc" and mo == mode and q == policy]
    # A quadratic needs three depths; trace small extra ones if needed (the saved bytes
    # are a quadratic in the depth, so three small depths give the same fit: 10, 16, 22
    # and 10, 40, 100 both give 1,498 layers for naive at batch 4).
    extra = [d for d in (16, 22, 28, 40) if d not in dict(pts)]
    while len(pts) < 3 and extra:
        d = extra.pop(0)
        pts.append((d, total_estimate(jax_traced("densenet_bc", d, mode, policy,
                                                 batch, 32))))
    pts.sort()
    fit = quadratic_fit(pts[-3:])  # The deepest three points.
    d_star = deepest_by_fit(fit, budget)
    total = fit(d_star)
    note = (f"estimate: saved-for-backward (traced) + 3 x params + BN stats + batch, "
            f"quadratic fit over depths {[d for d, _ in pts[-3:]]}")
    if args.deepest_check and d_star:
        start = time.perf_counter()
        total = total_estimate(jax_traced("densenet_bc", d_star, mode, policy, batch, 32))
        while total > budget and d_star > 10:  # The fit was optimistic.
            d_star -= 6
            total = total_estimate(jax_traced("densenet_bc", d_star, mode, policy,
                                              batch, 32))
        note += (f"; traced at {d_star}: {total / GIB:.2f} GiB (fit "
                 f"{fit(d_star) / GIB:.2f}), {time.perf_counter() - start:.0f} s")
    log(f"[deepest] jax {mode}/{policy}: {d_star} layers within "
        f"{args.budget_gib:g} GiB ({note})")
    rows.append(row("deepest", "jax", "densenet_bc", depth=d_star, batch_size=batch,
                    image_size=32, mode=mode, policy=policy, metric="deepest_depth",
                    value=d_star, unit="depth", status="estimated", note=note))
    rows.append(row("deepest", "jax", "densenet_bc", depth=d_star, batch_size=batch,
                    image_size=32, mode=mode, policy=policy,
                    metric="total_estimate_bytes", value=int(total), unit="bytes",
                    status="estimated"))
    return d_star


def _gpu_check_rows(args, rows, mode: str, policy: str, d_star: int) -> None:
    """One measured GPU peak at the estimated depth (a full measured bisection would
    compile a deep network per step: too slow for the GPU suite)."""
    budget, batch = args.budget_gib * GIB, args.batch_size
    base = dict(depth=d_star, batch_size=batch, image_size=32, mode=mode, policy=policy,
                metric="gpu_peak_bytes")
    res = run_row(dict(kind="jax_peak", model="densenet_bc", depth=d_star, mode=mode,
                       policy=policy, batch=batch, size=32), args.row_timeout)
    if "error" in res or not res.get("peak"):
        rows.append(row("deepest", "jax", "densenet_bc", **base, status="not measured",
                        note=res.get("error", "no allocator stats")))
        return
    fits = res["peak"] <= budget
    rows.append(row("deepest", "jax", "densenet_bc", **base, value=res["peak"],
                    unit="bytes", note=f"measured at the estimated depth: "
                    f"{'within' if fits else 'OVER'} the budget"))
    log(f"[deepest] jax {mode}/{policy}: GPU peak at {d_star}: "
        f"{res['peak'] / GIB:.2f} GiB ({'fits' if fits else 'over budget'})")


def _torch_deepest_rows(args, rows, torch_measured, mode: str) -> None:
    """PyTorch's fitted deepest depth of one mode (needs three measured depths)."""
    batch = args.batch_size
    pts = sorted((d, r["saved_bytes"] + 3 * r["param_bytes"])
                 for (m, d, mo), r in torch_measured.items()
                 if m == "densenet_bc" and mo == mode)
    if len(pts) < 3:
        rows.append(row("deepest", "pytorch", "densenet_bc", batch_size=batch,
                        image_size=32, mode=mode, metric="deepest_depth",
                        status="skipped", note="needs three measured PyTorch depths"))
        return
    fit = quadratic_fit(pts[-3:])
    d_star = deepest_by_fit(fit, args.budget_gib * GIB)
    note = (f"estimate: saved (hooks, CPU) + 3 x params, quadratic fit over depths "
            f"{[d for d, _ in pts[-3:]]}; not traced at the answer")
    log(f"[deepest] pytorch {mode}: {d_star} layers within {args.budget_gib:g} GiB "
        f"({note})")
    rows.append(row("deepest", "pytorch", "densenet_bc", depth=d_star, batch_size=batch,
                    image_size=32, mode=mode, metric="deepest_depth", value=d_star,
                    unit="depth", status="estimated", note=note))
