"""Experiment grids: many training runs, one command, one results table.

    python -m tlc_jax.experiments --grid=configs/grids/digits_ablation.py \
        --workdir=workdir/digits_ablation [--parallel=N] [--only=REGEX] \
        [--dry_run] [--report_only]

A grid file (configs/grids/*.py, format in `grid.py`) names a config file, config
argument variants, methods (config field overrides) and seeds; every variant x method
x seed is an ordinary `python -m tlc_jax.main` run in <workdir>/<variant>/<method>/
seed<S>, started by `runner.py` as a process of its own (finished runs are skipped,
unfinished ones resumed), plus a scikit-learn sanity row per variant and seed
(`baseline.py`). `aggregate.py` reads the run folders back (`runs.py` says what state
a run is in), `results.py` writes results.md / results.csv and `plots.py` the figures.
"""
