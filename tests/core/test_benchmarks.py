"""The benchmark script runs end to end at its --quick sizes and prints every row.

A smoke test, not a timed test: figures depend on the machine and its load, so only
the table's shape is checked (the full run's figures live in docs/BENCHMARKS.md).
"""

import subprocess
import sys

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
