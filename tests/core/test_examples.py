"""The sampler-port example runs as documented."""

import subprocess
import sys

from tlc_jax.examples import sampler_port


def test_sampler_port_runs_and_moves_quotas():
    r = sampler_port.run(active=True, steps=60, batch_per_class=6)
    assert sum(r["final_quotas"]) == 60 and min(r["final_quotas"]) >= 1
    assert r["final_quotas"] != [6] * 10  # The quotas followed the contrast F1.
    assert 0.5 < r["balanced_accuracy"] <= 1.0
    uniform = sampler_port.run(active=False, steps=60, batch_per_class=6)
    assert uniform["final_quotas"] is None


def test_sampler_port_command_line():
    out = subprocess.run([sys.executable, "-m", "tlc_jax.examples.sampler_port",
                          "--steps", "40"], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("uniform sampling: balanced accuracy")
    assert lines[1].startswith("active sampling : balanced accuracy")
