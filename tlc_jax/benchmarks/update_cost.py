"""What one active-sampling quota update costs, against the epoch of training it
interrupts: prints a markdown table of measured figures.

    python -m tlc_jax.benchmarks.update_cost --config=configs/fashion_mnist_lt.py
    python -m tlc_jax.benchmarks.update_cost --config=configs/digits_lt.py --quick
    ... --config.eval.batch_size=500                  # any config field, as tlc_jax.main

A quota update (`Trainer.update_quotas`) evaluates the model on the whole contrast set
(forward only: the trainer's jitted eval step in batches of `eval.batch_size`), turns
the confusion matrix into quotas on the host (`tlc_jax.active_sampling.next_quotas`),
hands them to the batch sampler and writes them to the metrics. This script builds the
config's `Trainer` in a temporary work directory with random weights (speed does not
depend on them), compiles the train and eval steps outside the timing, and then, in
`--rounds` rounds, times one after the other:
  - `Trainer.confusion` on the contrast set (the update's evaluation alone);
  - `Trainer.update_quotas` in full (a fresh step number each round, so its cached
    confusion matrix is never reused: evaluation included);
  - `--steps` training steps of the first stage (its own batch iterator, quota input
    and class weights; dispatched as the trainer does and waited for at the end).
Each figure is the median over rounds, so all three see the same machine load. An
epoch's training time is steps per epoch x the median step; the last rows are what one
and four updates per epoch add to it. The figures depend on the machine and its load:
the header names the machine, the load average and the versions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from tlc_jax import allocator, xla_cpu

QUICK = {"rounds": 2, "steps": 2}  # --quick: enough to run every row (CI), not to time.


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    parser.add_argument("--rounds", type=int, default=7, help="Timed rounds (medians).")
    parser.add_argument("--steps", type=int, default=20,
                        help="Training steps timed per round.")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['rounds']} rounds of {QUICK['steps']} steps.")
    args, config_argv = parser.parse_known_args(argv)
    if not any(a.startswith("--config=") for a in config_argv):
        parser.error("--config=FILE[:ARGS] is required (e.g. "
                     "--config=configs/fashion_mnist_lt.py).")
    unknown = [a for a in config_argv if not a.startswith("--config")]
    if unknown:
        parser.error(f"unknown arguments {unknown}: besides --rounds, --steps and "
                     f"--quick, only --config=... and --config.FIELD=VALUE are accepted.")
    if args.quick:
        args.rounds, args.steps = QUICK["rounds"], QUICK["steps"]
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1.")
    return args, config_argv


def measure(config, rounds: int, steps: int) -> dict:
    """The figures (seconds, counts) of the module docstring for `config`."""
    import jax

    from tlc_jax.stages import ACTIVE
    from tlc_jax.train import Trainer, variables_of

    with tempfile.TemporaryDirectory(prefix="tlc_update_cost_") as workdir:
        trainer = Trainer(config, workdir)
        stage = trainer.stages[0]
        if stage.composition != ACTIVE:
            raise ValueError(
                f"the config's first stage samples by {stage.composition!r}, so it makes "
                f"no quota update to time: use an active-sampling config (e.g. "
                f"--config.sampling.composition=active).")
        rng = jax.random.key(config.seed)
        variables = trainer.init_variables(rng)
        iterators = trainer.batches(stage)
        steps_per_epoch = iterators["sampler"].sampler.steps_per_epoch
        tx, cot_tx = trainer.optimizers(stage, variables["params"], steps_per_epoch)
        state = trainer.make_state(variables, tx, cot_tx)
        train_step = trainer.compile_train_step(state, tx, cot_tx,
                                                trainer.step_config(stage))
        iterator, quota_input, class_weights = trainer.begin_epoch(stage, 0, iterators)

        def train(n: int):
            nonlocal state
            for _ in range(n):
                state, out = train_step(state, trainer.device_batch(next(iterator)),
                                        quota_input, rng, class_weights)
            jax.block_until_ready(out["loss"])

        def timed(fn) -> float:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        # Untimed: compiles the train and eval steps and fills the caches.
        train(1)
        trainer.update_quotas(stage, state, iterator, step=-1)
        times = {"confusion": [], "update": [], "step": []}
        for r in range(rounds):
            times["confusion"].append(timed(lambda: trainer.confusion(
                variables_of(state), trainer.data.contrast)))
            times["update"].append(timed(lambda: trainer.update_quotas(
                stage, state, iterator, step=r)))
            times["step"].append(timed(lambda: train(steps)) / steps)
        for it in iterators.values():
            it.close()
        trainer.writer.close()
    median = {k: statistics.median(v) for k, v in times.items()}
    epoch = steps_per_epoch * median["step"]
    return {"contrast_images": len(trainer.data.contrast),
            "eval_batch_size": int(config.eval.batch_size),
            "batch_size": stage.batch_size, "steps_per_epoch": steps_per_epoch,
            "confusion_s": median["confusion"], "update_s": median["update"],
            "step_s": median["step"], "epoch_s": epoch,
            "one_per_epoch_pct": 100 * median["update"] / epoch,
            "four_per_epoch_pct": 400 * median["update"] / epoch}


def table(m: dict) -> str:
    rows = [
        ("Contrast set", f"{m['contrast_images']:,}", "images"),
        (f"Contrast evaluation (`Trainer.confusion`, eval batch {m['eval_batch_size']})",
         f"{m['confusion_s']:.3f}", "s"),
        ("Quota update in full (`Trainer.update_quotas`, evaluation included)",
         f"{m['update_s']:.3f}", "s"),
        (f"Training step (batch {m['batch_size']})", f"{1000 * m['step_s']:.1f}", "ms"),
        ("Steps per epoch", f"{m['steps_per_epoch']:,}", "steps"),
        ("Epoch of training (steps x median step)", f"{m['epoch_s']:.1f}", "s"),
        ("One update per epoch adds", f"{m['one_per_epoch_pct']:.1f}", "%"),
        ("Four updates per epoch add", f"{m['four_per_epoch_pct']:.1f}", "%"),
    ]
    lines = ["| What | Figure | Unit |", "|---|---:|---|"]
    lines += [f"| {what} | {figure} | {unit} |" for what, figure, unit in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args, config_argv = parse(argv)
    import jax

    from tlc_jax.benchmarks.cpu_speed import machine
    from tlc_jax.experiments.grid import resolve_config

    config = resolve_config(config_argv)
    print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}; machine: "
          f"{', '.join(f'{k} {v}' for k, v in machine().items())}; "
          f"jax {jax.__version__}, backend "
          f"{jax.default_backend()}; load average {os.getloadavg()[0]:.2f}; "
          f"{' '.join(config_argv)}; {args.rounds} rounds of {args.steps} steps",
          flush=True)
    m = measure(config, args.rounds, args.steps)
    print(table(m))
    return m


if __name__ == "__main__":
    allocator.use_tcmalloc()  # Restarts with tcmalloc where installed, as tlc_jax.main.
    xla_cpu.configure()  # Before any computation: XLA reads its flags once.
    main()
