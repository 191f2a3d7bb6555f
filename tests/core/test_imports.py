"""Who may import whom: the rules that keep one owner per idea, checked on the source.

Imports are read with `ast` (every `import` / `from ... import`, also inside
functions), so a rule cannot be dodged by a late import.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

PACKAGE = ROOT / "tlc_jax"


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute module names `path` imports (relative imports resolved from `root`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations(files, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in files:
        for module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    return sorted(bad)


RULES = [
    # (files, forbidden module prefixes, why)
    (sorted((PACKAGE / "live").rglob("*.py")), ("tlc_jax.train",),
     "the live system uses tlc_jax.inference, never the trainer"),
    ([PACKAGE / "sampling.py", PACKAGE / "quotas.py", PACKAGE / "active_sampling.py"],
     ("tlc_jax.train", "tlc_jax.models", "tlc_jax.step", "jax", "flax"),
     "the sampler and quota maths are portable: numpy only"),
    (sorted((PACKAGE / "models").rglob("*.py")), ("tlc_jax.data", "tlc_jax.train"),
     "models know nothing of data or training"),
    ([PACKAGE / "inference.py", PACKAGE / "preprocess.py", PACKAGE / "step.py"],
     ("tlc_jax.train", "tlc_jax.data", "grain", "matplotlib"),
     "inference and the step need no trainer, data pipeline or plots"),
]


@pytest.mark.parametrize("files,forbidden,why", RULES, ids=lambda x: str(x)[:40])
def test_import_rules(files, forbidden, why):
    assert files and all(p.is_file() for p in files)
    assert violations(files, forbidden) == [], why


def test_the_checker_sees_late_and_relative_imports(tmp_path):
    module = tmp_path / "tlc_jax" / "live" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from ..train import Trainer\n    import jax.numpy\n")
    found = imported_modules(module, root=tmp_path)
    assert {"tlc_jax.train", "tlc_jax.train.Trainer", "jax.numpy"} <= found


def test_no_test_module_imports_another():
    tests = ROOT / "tests"
    names = {p.stem for p in tests.rglob("test_*.py")}
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in tests.rglob("*.py")
           for m in imported_modules(p) if m.split(".")[0] in names]
    assert bad == []


def test_inference_imports_no_trainer_at_run_time():
    """What the live analyzer pulls in: the model and weights, not the training stack."""
    code = ("import sys, tlc_jax.inference; heavy = ['tlc_jax.train', 'tlc_jax.data', "
            "'grain', 'matplotlib', 'optax']; print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_a_training_run_starts_without_torch_or_scikit_learn(tmp_path):
    """The trainer's start-up: its metric writer (tensorboardX, which imports torch when
    it can) and the embedded digits (shipped inside scikit-learn) load neither package:
    5 s of every run's start-up. torch still imports afterwards."""
    code = ("import sys, tlc_jax.main, tlc_jax.train\n"
            "from tlc_jax.writers import MetricWriter\n"
            "from tlc_jax.data import load_dataset\n"
            f"w = MetricWriter({str(tmp_path)!r}); w.write(0, 'x', {{'a': 1.0}}); w.close()\n"
            "load_dataset('digits')\n"
            "print([m for m in ('torch', 'sklearn') if m in sys.modules])\n"
            "import importlib.util\n"
            "if importlib.util.find_spec('torch'): import torch; torch.zeros(1)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1


def test_no_undefined_names_or_unused_imports():
    """pyflakes' rules (ruff F): a NameError in a rarely taken branch fails here, at once,
    not in the one slow test that happens to reach it."""
    found = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "F", "--output-format",
         "concise", "--no-cache", "tlc_jax", "tests", "configs", "launch"],
        cwd=ROOT, capture_output=True, text=True)
    assert found.returncode == 0, found.stdout + found.stderr
