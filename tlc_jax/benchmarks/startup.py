"""Start-up cost: how long a model's initialisation takes to compile and run, with
XLA's default backend optimisations and with `tlc_jax.models.INIT_COMPILER_OPTIONS`
(what `tlc_jax.models.init_variables` - the trainer's initialisation - uses on CPU).

    python -m tlc_jax.benchmarks.startup            # DenseNet-BC-16 28 px grey, DenseNet-121
    python -m tlc_jax.benchmarks.startup --quick    # DenseNet-BC-10 8 px (CI: runs)

Each figure is one compilation plus one run of `model.init` (nothing cached: every
compilation is a new program), and the largest difference between the two settings'
variables, which should be float rounding only (the same random integers, turned into
floats by differently optimised code).
"""

from __future__ import annotations

import argparse
import json
import time

from tlc_jax import xla_cpu

# (name, create_model keywords, input shape)
FULL = (
    ("densenet_bc16 28px grey", dict(model="densenet_bc", depth=16, growth_rate=12,
                                     in_channels=1, num_classes=10), (1, 28, 28, 1)),
    ("densenet121 224px", dict(model="densenet121", num_classes=1000), (1, 224, 224, 3)),
)
QUICK = (
    ("densenet_bc10 8px", dict(model="densenet_bc", depth=10, growth_rate=4,
                               num_classes=10), (1, 8, 8, 3)),
)


def init_seconds(model, shape, options) -> tuple[float, object]:
    """Seconds to compile and run `model.init` once under `options`, and its variables."""
    import jax
    import jax.numpy as jnp

    start = time.perf_counter()
    init = lambda key: model.init(key, jnp.zeros(shape), train=False)  # noqa: E731
    compiled = jax.jit(init).lower(jax.random.key(0)).compile(compiler_options=options)
    variables = jax.block_until_ready(compiled(jax.random.key(0)))
    return time.perf_counter() - start, variables


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="One tiny model.")
    args = parser.parse_args(argv)
    import jax
    import numpy as np

    from tlc_jax.benchmarks.cpu_speed import machine
    from tlc_jax.models import INIT_COMPILER_OPTIONS, create_model

    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {machine()}, jax {jax.__version__}, "
          f"backend {jax.default_backend()}")
    rows = []
    for name, kwargs, shape in QUICK if args.quick else FULL:
        kwargs = dict(kwargs)
        model = create_model(kwargs.pop("model"), **kwargs)
        default_s, default_v = init_seconds(model, shape, None)
        lean_s, lean_v = init_seconds(model, shape, INIT_COMPILER_OPTIONS)
        diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                   for a, b in zip(jax.tree.leaves(default_v), jax.tree.leaves(lean_v)))
        row = {"model": name, "default_s": round(default_s, 2),
               "init_options_s": round(lean_s, 2), "max_abs_difference": diff}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| model | XLA defaults | `INIT_COMPILER_OPTIONS` | largest difference |\n"
          "|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['default_s']:.1f} s | {r['init_options_s']:.1f} s | "
              f"{r['max_abs_difference']:.1e} |")
    return rows


if __name__ == "__main__":
    xla_cpu.configure()  # Before any computation: XLA reads its flags once.
    main()
