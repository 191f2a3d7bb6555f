"""The benchmark script runs end to end at its --quick sizes and prints every row.

A smoke test, not a timed test: figures depend on the machine and its load, so only
the table's shape is checked (the full run's figures live in docs/BENCHMARKS.md).
"""

import os
import subprocess
import sys

import pytest

ROWS = (
    "1a. QuotaSampler.next_batch() + numpy gather",
    "1a'. QuotaSampler.plan(steps_per_epoch) once",
    "1b. QuotaBatchIterator + ArrayBatchLoader, worker_count=0",
    "2a. load_image_folder, 1 thread",
    "2a. load_image_folder, 2 threads",
    "2b. QuotaBatchIterator + Pillow batch loader, worker_count=0",
    "2b. QuotaBatchIterator + Pillow batch loader, worker_count=2",
    "2c. Same, worker_count=0: time to the first batch",
    "2c. Same, worker_count=2: time to the first batch",
    "3. Epoch plan",
    "4. update_quotas",
)


def test_quick_benchmark_prints_every_row():
    proc = subprocess.run([sys.executable, "-m", "tlc_jax.benchmarks.sampler", "--quick"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    for header in ("Machine:", "Python ", "grain ", "Load average"):
        assert header in out, out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| What | Figure | Unit | Target | Met |"
    rows = table[1:]
    assert len(rows) == len(ROWS), out
    for row, name in zip(rows, ROWS):
        what, figure, unit, target, met = (c.strip() for c in row.strip("|").split("|"))
        assert what.startswith(name), (what, name)
        assert float(figure.replace(",", "")) > 0, row
        assert unit in ("images/s", "s", "ms"), row
        assert met in (("yes", "no") if target != "-" else ("-",)), row


def test_cpu_speed_interleaves_the_two_sides_round_by_round():
    """Every round calls each side twice in a row (an untimed call, then a timed one),
    the order of the sides alternating, and each side's seconds are its own calls'."""
    from tlc_jax.benchmarks import cpu_speed

    order = []
    calls = {"jax": lambda: order.append("jax"), "torch": lambda: order.append("torch")}
    times, faults = cpu_speed.interleaved_seconds(calls, steps=3)
    assert order == ["jax", "jax", "torch", "torch",
                     "torch", "torch", "jax", "jax",
                     "jax", "jax", "torch", "torch"]
    assert [len(t) for t in times.values()] == [3, 3]
    assert all(t >= 0 for side in times.values() for t in side)
    assert [len(f) for f in faults.values()] == [3, 3]
    assert cpu_speed.median([3.0, 1.0, 2.0]) == 2.0


def test_cpu_speed_counts_the_page_faults_of_each_timed_call():
    """A call that maps 8 MiB afresh and touches every page faults at least once a page
    (2,048 pages of 4 KiB); a call that touches nothing new faults (almost) never."""
    import mmap

    from tlc_jax.benchmarks import cpu_speed

    size, page = 8 << 20, mmap.PAGESIZE

    def fresh_pages():
        with mmap.mmap(-1, size) as region:
            for offset in range(0, size, page):
                region[offset] = 1

    kept = bytearray(size)
    calls = {"fresh": fresh_pages, "kept": lambda: kept.__setitem__(0, 1)}
    _, faults = cpu_speed.interleaved_seconds(calls, steps=2)
    assert min(faults["fresh"]) >= size // page, faults
    assert max(faults["kept"]) < 64, faults


def test_cpu_speed_quick_runs_both_sides_and_reports_the_machine(tmp_path, capsys):
    """`python -m tlc_jax.benchmarks.cpu_speed --quick` (no timing is asserted)."""
    import json as json_module

    from tlc_jax.benchmarks import cpu_speed

    result = cpu_speed.main(["--quick", "--steps=1", f"--out={tmp_path / 'speed.json'}"])
    rows = result["rows"]
    assert [r["kind"] for r in rows] == ["train", "eval"]
    for row in rows:
        assert row["jax_img_s"] > 0
        if "torch_img_s" in row:
            # One round: its ratio is the ratio of the two sides' only calls.
            assert row["ratio"] == pytest.approx(row["jax_img_s"] / row["torch_img_s"])
            assert row["ratio_low"] == row["ratio"] == row["ratio_high"]
    saved = json_module.loads((tmp_path / "speed.json").read_text())
    assert saved["rows"] == json_module.loads(json_module.dumps(rows))
    assert saved["machine"]["cores"] == os.cpu_count()
    out = capsys.readouterr().out
    assert ("| row | JAX img/s | PyTorch img/s | JAX / PyTorch | rounds: lowest - highest "
            "| page faults / call: JAX, PyTorch |" in out)
    assert all(row["jax_faults"] >= 0 for row in rows)
    assert "| eval efficientnet_lite0 32px b2 |" in out


def test_startup_quick_compares_both_init_settings(capsys):
    """`python -m tlc_jax.benchmarks.startup --quick` (no timing is asserted)."""
    from tlc_jax.benchmarks import startup

    (row,) = startup.main(["--quick"])
    assert row["model"] == "densenet_bc10 8px"
    assert row["default_s"] > 0 and row["init_options_s"] > 0
    assert row["max_abs_difference"] < 1e-6  # Float rounding, the same random numbers.
    assert "| densenet_bc10 8px |" in capsys.readouterr().out


UPDATE_COST_ROWS = ("Contrast set", "Contrast evaluation", "Quota update in full",
                    "Training step", "Steps per epoch", "Epoch of training",
                    "One update per epoch adds", "Four updates per epoch add")


def test_update_cost_benchmark_prints_every_row():
    """The quota-update cost benchmark runs the trainer's own steps on the embedded
    digits config and prints every row with a positive figure; the epoch row is steps
    per epoch times the step row, and four updates add four times what one adds."""
    proc = subprocess.run([sys.executable, "-m", "tlc_jax.benchmarks.update_cost",
                           "--config=configs/digits_lt.py", "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "machine: cpu " in out and "load average" in out, out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| What | Figure | Unit |", out
    figures = {}
    for row, name in zip(table[1:], UPDATE_COST_ROWS, strict=True):
        what, figure, unit = (c.strip() for c in row.strip("|").split("|"))
        assert what.startswith(name), (what, name)
        figures[name] = float(figure.replace(",", ""))
        assert figures[name] > 0, row
    # The digits config: 10% of 739 long-tailed training images, batch 80.
    assert 50 <= figures["Contrast set"] <= 100, out
    epoch = figures["Steps per epoch"] * figures["Training step"] / 1000
    assert abs(figures["Epoch of training"] - epoch) <= 0.05 + 0.02 * epoch, out
    # Both percentages are printed to 0.1: four times a rounded figure is off by up to
    # 4 x 0.05, the other rounded figure by up to 0.05 more.
    assert (abs(figures["Four updates per epoch add"]
                - 4 * figures["One update per epoch adds"]) <= 0.25 + 1e-9), out


@pytest.mark.parametrize("argv, message", [
    (["--quick"], "--config=FILE[:ARGS] is required"),
    (["--config=configs/digits_lt.py", "--step=3"], "unknown arguments ['--step=3']"),
    (["--config=configs/digits_lt.py", "--rounds=0"], "must be at least 1"),
])
def test_update_cost_benchmark_rejects_bad_arguments(argv, message, capsys):
    from tlc_jax.benchmarks import update_cost

    with pytest.raises(SystemExit):
        update_cost.parse(argv)
    assert message in capsys.readouterr().err


def test_update_cost_benchmark_needs_active_sampling(tmp_path):
    from tlc_jax.benchmarks import update_cost
    from tlc_jax.experiments.grid import resolve_config

    config = resolve_config(["--config=configs/digits_lt.py",
                             "--config.sampling.composition=class_balanced"])
    with pytest.raises(ValueError, match="makes no quota update to time"):
        update_cost.measure(config, rounds=1, steps=1)
