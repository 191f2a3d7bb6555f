"""The memory / speed benchmark runs end to end at --quick sizes (smoke test, no timings
asserted): output files and their schema, naive >= recompute in saved bytes for both
frameworks, clear errors for bad input, and JAX rows without torch."""

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tlc_jax.benchmarks import deepest_section, memory_speed
from tlc_jax.benchmarks.result_rows import FIELDS

QUICK = ["--quick", "--depths=10,16", "--batch_size=4"]
# The full quick run measures one depth (each PyTorch row is a process of its own, ~6 s);
# growth with depth is checked on the JAX-only run, which measures two.
# Without the torch extra the PyTorch rows are "skipped" (test_without_torch_... checks
# that); the comparisons with PyTorch need it.
HAVE_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "torchvision"))


def _run(args, *, hide_torch=False, timeout=240):
    code = ("import sys\n"
            + ("sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
               if hide_torch else "")
            + "from tlc_jax.benchmarks.memory_speed import main\n"
            + f"sys.exit(main({list(args)!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout)


def _rows(out):
    with open(Path(out) / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == FIELDS
        return list(reader)


def _saved(rows, framework, depth, mode, policy=None):
    (row,) = [r for r in rows if r["section"] == "memory" and r["framework"] == framework
              and r["depth"] == str(depth) and r["mode"] == mode
              and r["metric"] == "saved_bytes"
              and (policy is None or r["policy"] == policy)]
    assert row["status"] == "measured", row
    return int(row["value"])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # --speed_first as the GPU suite runs it (step times before the memory rows).
    proc = _run(QUICK + [f"--out={out}", "--steps=1", "--speed_first", "--depths=10"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc.stdout


def test_outputs_and_schema(quick_run):
    out, stdout = quick_run
    assert (out / "memory_vs_depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    for heading in ("### Saved for the backward pass", "### Deepest DenseNet-BC",
                    "### Quoted, not measured", "### Training step speed"):
        assert heading in md and heading in stdout
    rows = _rows(out)
    sections = {r["section"] for r in rows}
    assert {"memory", "quoted", "deepest", "speed"} <= sections
    statuses = {"measured", "estimated", "quoted", "not measured", "skipped"}
    for r in rows:
        assert r["status"] in statuses, r
        if r["status"] in ("measured", "estimated", "quoted") and r["value"] != "":
            float(r["value"])
    # No GPU here: its columns say so.
    peaks = [r for r in rows if r["metric"] == "gpu_peak_bytes"]
    assert peaks and all(r["status"] == "not measured" for r in peaks)
    quoted = [r for r in rows if r["section"] == "quoted"]
    assert any("478" in r["note"] for r in quoted)
    speed = [r for r in rows if r["section"] == "speed" and r["metric"] == "images_per_s"]
    assert {(r["framework"], r["mode"]) for r in speed} == {
        ("jax", "naive"), ("jax", "recompute")} | (
        {("pytorch", "naive"), ("pytorch", "efficient")} if HAVE_TORCH else set())
    assert all(float(r["value"]) > 0 for r in speed)


def test_speed_first_order_and_elapsed_times(quick_run):
    """--speed_first: the speed rows are measured before the memory rows; every
    progress line carries the seconds since the start."""
    lines = [ln for ln in quick_run[1].splitlines() if "] [" in ln]
    first = {tag: next(i for i, ln in enumerate(lines) if f"] [{tag}]" in ln)
             for tag in ("speed", "memory")}
    assert first["speed"] < first["memory"]
    assert all(ln.startswith("[") and " s] " in ln for ln in lines)


def test_naive_keeps_more_than_recompute_in_both_frameworks(quick_run):
    rows = _rows(quick_run[0])
    naive = _saved(rows, "jax", 10, "naive")
    for policy in ("dots_saveable", "nothing_saveable"):
        assert naive >= _saved(rows, "jax", 10, "recompute", policy)
    if HAVE_TORCH:
        assert (_saved(rows, "pytorch", 10, "efficient")
                < _saved(rows, "pytorch", 10, "naive"))


@pytest.mark.parametrize("flag, message", [
    ("--depths=10,17", "depth % 6 == 4"),
    ("--depths=4", "depth % 6 == 4"),
    ("--policies=dots_saveable,no_such_policy", "Unknown remat policy 'no_such_policy'"),
    ("--imagenet_models=densenet999", "Unknown ImageNet model"),
])
def test_bad_input_is_a_clear_error(flag, message, capsys):
    with pytest.raises(SystemExit) as e:
        memory_speed.parse_args(["--out=/nonexistent", flag])
    assert message in str(e.value)


def test_without_torch_jax_rows_still_run(tmp_path):
    proc = _run(QUICK + [f"--out={tmp_path}", "--no-speed", "--no-deepest"],
                hide_torch=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "PyTorch rows skipped: torch/torchvision not importable" in proc.stdout
    rows = _rows(tmp_path)
    torch_rows = [r for r in rows if r["framework"] == "pytorch"]
    assert torch_rows and all(r["status"] == "skipped" for r in torch_rows)
    for depth in (10, 16):
        naive = _saved(rows, "jax", depth, "naive")
        for policy in ("dots_saveable", "nothing_saveable"):
            assert naive >= _saved(rows, "jax", depth, "recompute", policy)
    # Deeper keeps more, in every mode.
    for mode, policy in (("naive", None), ("recompute", "dots_saveable"),
                         ("recompute", "nothing_saveable")):
        assert (_saved(rows, "jax", 16, mode, policy) > _saved(rows, "jax", 10, mode, policy))


def test_gpu_suite_dry_run(tmp_path):
    """launch/gpu_suite.sh --dry-run prints the commands it would run, runs nothing."""
    script = Path(__file__).parents[2] / "launch" / "gpu_suite.sh"
    proc = subprocess.run(["bash", str(script), "--dry-run", str(tmp_path / "suite")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "tlc_jax.benchmarks.memory_speed" in proc.stdout
    assert "--out=" in proc.stdout


def test_deepest_fit_bisection():
    fit = deepest_section.quadratic_fit([(40, 1.0), (100, 4.0), (160, 9.0)])
    d = deepest_section.deepest_by_fit(fit, 12.0)
    assert d % 6 == 4 and fit(d) <= 12.0 < fit(d + 6)


@pytest.mark.parametrize("saved_gib, max_gib, why", [
    (3, None, "estimated 3 GiB exceeds the device's memory"),
    # Past the device, though within 1.5x of it: the first GPU suite (H200,
    # 2026-11-30) compiled naive BC-1000 (142 GiB estimated) for minutes this way.
    (1.25, None, "estimated 1 GiB exceeds the device's memory"),
    (0.75, 0.5, "estimated 1 GiB exceeds --gpu_peak_max_gib=0.5"),
])
def test_gpu_row_too_big_for_the_device_says_why(monkeypatch, saved_gib, max_gib, why):
    """A JAX configuration estimated past the device's memory (or --gpu_peak_max_gib)
    is not run: its compiled and peak rows say 'not measured' with the estimate."""
    import argparse

    from tlc_jax.benchmarks import memory_section
    from tlc_jax.benchmarks.result_rows import Config

    def no_subprocess(*args, **kwargs):
        raise AssertionError("a row too big for the device was run")

    monkeypatch.setattr(memory_section, "device_bytes", lambda: 2.0 ** 30)
    monkeypatch.setattr(memory_section, "run_row", no_subprocess)
    rows = []
    traced = {"saved_bytes": int(saved_gib * 2 ** 30), "param_bytes": 0,
              "batch_stats_bytes": 0, "input_bytes": 0}
    memory_section._jax_gpu_rows(argparse.Namespace(row_timeout=1,
                                                    gpu_peak_max_gib=max_gib), rows,
                                 Config("densenet_bc", 1000, 64, 32), "naive", "-", traced)
    assert [r["metric"] for r in rows] == ["compiled_temp_bytes", "gpu_peak_bytes"]
    for r in rows:
        assert r["status"] == "not measured" and why in r["note"]
