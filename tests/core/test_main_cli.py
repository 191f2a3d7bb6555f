"""`python -m tlc_jax.main` as a user meets it: one-line errors with exit status 2 for
mistakes (tracebacks only with --verbose or for bugs), --help with every config field,
Ctrl-C and resume, and a finished run that is printed, not recomputed.

Each case is a subprocess; waits poll a condition against a deadline.
"""

import os
import signal
import subprocess
import sys

import pytest

from tlc_jax.config import base_config

from helpers import ROOT, wait_for

DIGITS = str(ROOT / "configs" / "digits_lt.py")
TINY = ["--config.data.image_size=0", "--config.model.depth=10",
        "--config.model.growth_rate=4", "--config.train.images_per_class=4",
        "--config.train.lr_schedule=constant", "--config.eval.batch_size=64"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def main(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tlc_jax.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=ENV)


@pytest.mark.parametrize("args,message", [
    (["--config.train.epoch=3"],
     '--config.train.epoch: no such config field (did you mean "epochs" instead of '
     '"epoch"?)'),
    (["--config.trian.epochs=3"], "--config.trian.epochs: no such config field"),
    (["--config.train.epochs=abc"], "flag --config.train.epochs=abc: invalid literal"),
    (["--config.data.image_size=-5"], "config.data.image_size must be a side in pixels"),
    (["--config.data.name=fashion_mnist"],
     "config.data.root is empty, and dataset 'fashion_mnist' reads its files from a "
     "folder: set --config.data.root=DIR."),
    (["--config.data.name=cifar10", "--config.data.root=/nonexistent/cifar"],
     "Pass --config.data.download=true to fetch it"),
    (["--evaluate_from=/nonexistent/run"],
     "--evaluate_from=/nonexistent/run: no finished run there (it needs config.json and "
     "report.json); train that run to the end first"),
])
def test_mistakes_end_in_one_line_and_status_2(tmp_path, args, message):
    out = main(f"--config={DIGITS}", *args, f"--workdir={tmp_path / 'run'}")
    assert out.returncode == 2, out.stderr[-2000:]
    error = next(l for l in out.stderr.splitlines() if l.startswith("error: "))
    assert message in error
    assert "Traceback" not in out.stderr
    assert "download=True" not in out.stderr  # Command-line spelling only.


def test_verbose_keeps_the_traceback(tmp_path):
    out = main(f"--config={DIGITS}", "--config.data.name=fashion_mnist", "--verbose",
               f"--workdir={tmp_path / 'run'}")
    assert out.returncode != 0 and "Traceback" in out.stderr
    assert "config.data.root is empty" in out.stderr


def test_help_exits_0_and_lists_every_config_field():
    out = main("--help", timeout=120)
    assert out.returncode == 0, out.stderr
    fields = [line.split("=")[0].strip() for line in out.stdout.splitlines()
              if line.startswith("  --config.")]
    flat = []
    for section, value in base_config().items():
        flat += ([f"--config.{section}.{k}" for k in value] if hasattr(value, "items")
                 else [f"--config.{section}"])
    assert sorted(fields) == sorted(flat) and len(fields) == len(set(fields))
    assert "--config.train.epochs=200\n      Paper: 200 fine-tuning epochs." in out.stdout
    assert "--config.data.download=false" in out.stdout
    assert "--workdir" in out.stdout and "--reevaluate" in out.stdout



def test_ctrl_c_resume_and_a_finished_run_printed_not_recomputed(tmp_path):
    workdir = tmp_path / "run"
    args = [f"--config={DIGITS}", *TINY, "--config.train.epochs=4",
            f"--workdir={workdir}"]
    process = subprocess.Popen([sys.executable, "-m", "tlc_jax.main", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=ENV)
    try:
        wait_for(lambda: (workdir / "checkpoints" / "0").is_dir(), 240,
                 "the first checkpoint")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err[-2000:]
    assert "stopping before the next step" in err
    assert "interrupted; run the same command again to resume" in err
    assert "Traceback" not in err

    done = main(*args)  # Resumes and finishes.
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Resumed finetune after epoch" in done.stderr
    for name in ("report.json", "summary.md", "plots"):
        assert str(workdir / name) in done.stdout
    report = workdir / "report.json"
    written = report.stat().st_mtime_ns

    again = main(*args)  # Finished: printed from the report.
    assert again.returncode == 0 and "Test: accuracy" in again.stdout
    assert "finished run: its report is read, not recomputed" in again.stderr
    assert report.stat().st_mtime_ns == written

    anew = main(*args, "--reevaluate")
    assert anew.returncode == 0 and report.stat().st_mtime_ns != written
    assert anew.stdout.splitlines()[0] == again.stdout.splitlines()[0]  # Same figures.
