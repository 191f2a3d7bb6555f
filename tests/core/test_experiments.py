"""The experiment runner end to end on configs/grids/tiny.py (2 methods x 2 seeds of a
one-epoch DenseNet-BC-10 on 8 px digits), and grid files checked without training.

The grid is started, stopped with SIGTERM as soon as its first run has finished, and
started again: everything later is checked on the grid that second invocation
completed. Waits poll a condition against a deadline; nothing sleeps a fixed time.
"""

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score

from tlc_jax.data.prepare import SPLIT_FILE, prepare
from tlc_jax.experiments import baseline
from tlc_jax.experiments.grid import (BASELINE_METHOD, GridError, evaluation_sources,
                                     load_grid)
from tlc_jax.experiments.results import loss_rows, method_losses
from tlc_jax.experiments.runner import source_finished
from tlc_jax.experiments.runs import (CONFLICT, FINISHED, MISSING, record_path,
                                      run_state, write_record)

from helpers import ROOT, wait_for

TINY = "configs/grids/tiny.py"
DIGITS = str(ROOT / "configs" / "digits_lt.py")
METHODS = ("tlc", "no-aug")
SEEDS = (0, 1)
METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "worst_class_accuracy",
           "tail_accuracy", "many_shot_accuracy", "medium_shot_accuracy",
           "few_shot_accuracy", "contrast_macro_f1", "contrast_balanced_accuracy")


def command(workdir, *extra, grid=TINY):
    return [sys.executable, "-m", "tlc_jax.experiments", f"--grid={grid}",
            f"--workdir={workdir}", *extra]


def run_grid(workdir, *extra, grid=TINY, timeout=240):
    return subprocess.run(command(workdir, *extra, grid=grid), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)



def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention `path`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in line and proc.name != str(os.getpid()):
            found.append(line)
    return found


def attempts(folder: Path) -> list[dict]:
    return json.loads((folder / "attempts.json").read_text())["attempts"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    """The tiny grid, stopped by SIGTERM after its first finished run, then completed."""
    workdir = tmp_path_factory.mktemp("grid")
    log = open(workdir.parent / "first_invocation.txt", "w")
    # One run at a time at first: little work is lost when it is stopped.
    runner = subprocess.Popen(command(workdir), cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    first = wait_for(lambda: next(workdir.glob("default/*/seed*/report.json"), None),
                     180, "the first finished run").parent
    # The next run has started (its log exists, and its process began writing to it).
    started = lambda p: p != first and (p / "log.txt").exists() and (
        (p / "log.txt").stat().st_size > 0)
    second_run = wait_for(lambda: next((p for p in workdir.glob("default/*/seed*")
                                        if started(p)), None), 60, "a second run")
    runner.send_signal(signal.SIGTERM)
    code = runner.wait(timeout=90)
    log.close()
    output = (workdir.parent / "first_invocation.txt").read_text()
    assert code == 128 + signal.SIGTERM, output
    assert "Stopping on SIGTERM" in output
    assert processes_using(workdir) == []  # The run was stopped with the runner.
    assert [a["returncode"] for a in attempts(first)] == [0]
    assert attempts(second_run)[-1]["stopped"] is True
    # A run whose report was written before the stop reached it is left to finish
    # (runner._stop); on a fast or idle machine the tiny run can get there first, and
    # is then skipped like the first. Otherwise it was stopped without a report.
    second_finished = (second_run / "report.json").exists()

    again = run_grid(workdir, "--parallel=2")
    assert again.returncode == 0, again.stdout + again.stderr
    for done in [first] + ([second_run] if second_finished else []):
        skipped = f"[skip] {done.relative_to(workdir).as_posix()}: finished earlier"
        assert skipped in again.stdout
        assert len(attempts(done)) == 1  # Not started again.
    if not second_finished:
        assert len(attempts(second_run)) == 2  # Started again, and finished.
    return workdir


@pytest.mark.slow
def test_every_run_of_the_grid_finished_with_its_command_beside_it(grid_dir):
    for method in METHODS:
        for seed in SEEDS:
            folder = grid_dir / "default" / method / f"seed{seed}"
            report = json.loads((folder / "report.json").read_text())
            assert report["config"]["seed"] == seed
            assert report["config"]["augment"]["enabled"] is (method == "tlc")
            line = (folder / "command.txt").read_text()
            assert f"--config.seed={seed}" in line and f"--workdir={folder}" in line
            assert "-m tlc_jax.main" in line
            assert attempts(folder)[-1]["returncode"] == 0
            assert "==== " in (folder / "log.txt").read_text()


def reports(grid_dir, method):
    return [json.loads((grid_dir / "default" / method / f"seed{s}" / "report.json")
                       .read_text()) for s in SEEDS]


def expected_metrics(report):
    """The run's metrics computed here, tail accuracy included, from the report."""
    test = report["test"]
    out = {key: test[key] for key in METRICS[:-2] if key != "tail_accuracy"}
    contrast = report.get("contrast", {})  # The sklearn row has none.
    out["contrast_macro_f1"] = contrast.get("macro_f1")
    out["contrast_balanced_accuracy"] = contrast.get("balanced_accuracy")
    counts = np.asarray(test["per_class"]["train_count"])
    tail = np.argsort(counts, kind="stable")[:3]
    out["tail_accuracy"] = float(np.mean(np.asarray(test["per_class"]["accuracy"])[tail]))
    return out


@pytest.mark.slow
def test_csv_means_and_stds_match_numpy_on_the_reports(grid_dir):
    rows = read_csv(grid_dir / "results.csv")
    for method in METHODS + (BASELINE_METHOD,):
        values = [expected_metrics(r) for r in reports(grid_dir, method)]
        mine = {r["row"]: r for r in rows if r["method"] == method and r["row"] != "run"}
        assert mine["mean"]["n"] == "2" and mine["mean"]["n_expected"] == "2"
        for key in METRICS:
            column = [v[key] for v in values if v[key] is not None]
            if not column:
                assert mine["mean"][key] == "" and mine["std"][key] == ""
                continue
            assert float(mine["mean"][key]) == pytest.approx(np.mean(column), abs=1e-12)
            if len(column) > 1:
                assert float(mine["std"][key]) == pytest.approx(np.std(column, ddof=1),
                                                                abs=1e-12)
        runs = [r for r in rows if r["method"] == method and r["row"] == "run"]
        assert [int(r["seed"]) for r in runs] == list(SEEDS)
        for run, value in zip(runs, values):
            assert run["state"] == "finished"
            assert float(run["balanced_accuracy"]) == pytest.approx(
                value["balanced_accuracy"], abs=1e-12)
            assert float(run["wall_seconds"]) > 0
        if method != BASELINE_METHOD:
            assert all(float(r["train_seconds"]) > 0 for r in runs)


@pytest.mark.slow
def test_results_md_tables(grid_dir):
    text = (grid_dir / "results.md").read_text()
    for method in METHODS + (BASELINE_METHOD,):
        values = [r["test"]["balanced_accuracy"] for r in reports(grid_dir, method)]
        cell = f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
        summary = next(l for l in text.splitlines() if l.startswith(f"| {method} | 2 of 2"))
        assert cell in summary
    # Paper style: both methods train with CE (the config's loss), in one CE column.
    paper = text.split("paper style")[1].split("###")[0]
    assert "| Method | CE |" in paper
    assert "| tlc |" in paper and "| no-aug |" in paper
    # Per-class table: methods as rows, classes as columns, most trained first.
    per_class = text.split("Per-class test accuracy")[1].split("##")[0]
    report = reports(grid_dir, "tlc")[0]
    counts = report["test"]["per_class"]["train_count"]
    head = int(np.argmax(counts))
    assert f"| Method | n | {head} ({counts[head]}) |" in per_class
    mean_head = np.mean([r["test"]["per_class"]["accuracy"][head]
                         for r in reports(grid_dir, "tlc")])
    assert re.search(rf"\| tlc \| 2 of 2 \| {mean_head:.3f} \|", per_class)
    assert "None: every run finished." in text
    # Model selection reads the contrast set: its table, and the active-sampling
    # method with the higher mean contrast balanced accuracy is the one chosen.
    selection = text.split("Model selection: the contrast set")[1].split("###")[0]
    means = {}
    for method in METHODS:
        values = [r["contrast"]["balanced_accuracy"] for r in reports(grid_dir, method)]
        means[method] = np.mean(values)
        assert re.search(rf"\| {method} \| 2 of 2 \| [0-9.± ]+ \| {np.mean(values):.3f}",
                         selection), selection
    assert f"**{max(means, key=means.get)}**" in selection
    for name in ("default_metrics.png", "default_per_class.png"):
        assert (grid_dir / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_second_invocation_starts_nothing(grid_dir):
    before = {p: len(attempts(p)) for p in grid_dir.glob("default/*/seed*")}
    out = run_grid(grid_dir, "--parallel=2")
    assert out.returncode == 0, out.stderr
    assert "[start" not in out.stdout
    assert out.stdout.count("finished earlier") == 6  # 4 runs, 2 sklearn rows.
    assert {p: len(attempts(p)) for p in grid_dir.glob("default/*/seed*")} == before


@pytest.mark.slow
def test_a_run_missing_its_report_is_listed_then_resumed_from_its_checkpoint(grid_dir):
    folder = grid_dir / "default" / "no-aug" / "seed1"
    original = json.loads((folder / "report.json").read_text())
    (folder / "report.json").unlink()

    out = run_grid(grid_dir, "--report_only")
    assert out.returncode == 0, out.stderr
    text = (grid_dir / "results.md").read_text()
    assert re.search(r"\| no-aug \| 1 of 2 \|", text)
    assert re.search(r"\| default/no-aug/seed1 \| partial \| .*resumes", text)
    rows = read_csv(grid_dir / "results.csv")
    mean = next(r for r in rows if r["method"] == "no-aug" and r["row"] == "mean")
    assert (mean["n"], mean["n_expected"]) == ("1", "2")
    assert mean["balanced_accuracy"] != "" and mean["accuracy"] != ""

    log_size = (folder / "log.txt").stat().st_size
    out = run_grid(grid_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("[start") == 1
    new_output = (folder / "log.txt").read_text()[log_size:]
    assert "Resumed finetune after epoch 1 of 1" in new_output
    resumed = json.loads((folder / "report.json").read_text())
    assert resumed["test"] == original["test"]  # The same final checkpoint, evaluated.
    assert "None: every run finished." in (grid_dir / "results.md").read_text()


@pytest.mark.slow
def test_sklearn_row_matches_an_independent_fit_on_the_runs_split(grid_dir, tmp_path):
    rows = read_csv(grid_dir / "results.csv")
    for seed in SEEDS:
        run = grid_dir / "default" / "tlc" / f"seed{seed}"
        config = json.loads((run / "config.json").read_text())
        splits = prepare(ml_collections.ConfigDict(config["data"]), config["seed"],
                         tmp_path / f"seed{seed}")
        # The sklearn row was fitted on the run's split.
        row_folder = grid_dir / "default" / BASELINE_METHOD / f"seed{seed}"
        assert (json.loads((row_folder / SPLIT_FILE).read_text())
                == json.loads((run / SPLIT_FILE).read_text()))
        flat = lambda images: images.reshape(len(images), -1) / 255.0
        model = LogisticRegression(class_weight="balanced", max_iter=baseline.MAX_ITER)
        model.fit(flat(splits.train.images), splits.train.labels)
        expected = balanced_accuracy_score(splits.test.labels,
                                           model.predict(flat(splits.test.images)))
        row = next(r for r in rows if r["method"] == BASELINE_METHOD
                   and r["row"] == "run" and r["seed"] == str(seed))
        assert float(row["balanced_accuracy"]) == pytest.approx(expected, abs=1e-9)


TINY_OVERRIDES = load_grid(ROOT / TINY).overrides


def write_grid(path: Path, **grid) -> Path:
    path.write_text(f"def get_grid():\n    return {grid!r}\n")
    return path


@pytest.mark.slow
def test_records_carry_the_grid_to_an_empty_workdir(grid_dir, tmp_path):
    """A grid with a records folder: --report_only records the runs finished in the
    work directory; from an empty work directory (a fresh machine with the committed
    records) nothing is trained and the results are the same."""
    records = tmp_path / "records"
    grid = tmp_path / "tiny_records.py"
    grid.write_text((ROOT / TINY).read_text().replace(
        '"seeds": [0, 1],', f'"seeds": [0, 1], "records": {str(records)!r},'))
    out = run_grid(grid_dir, "--report_only", grid=str(grid))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("[record]") == 6  # 4 runs, 2 sklearn rows.
    for method in METHODS + (BASELINE_METHOD,):
        for seed in SEEDS:
            folder = grid_dir / "default" / method / f"seed{seed}"
            record = json.loads((records / "default" / method / f"seed{seed}.json")
                                .read_text())
            assert record["report"] == json.loads((folder / "report.json").read_text())
            split = json.loads((folder / SPLIT_FILE).read_text())
            assert record["split_sha256"] == hashlib.sha256(
                json.dumps(split, sort_keys=True).encode()).hexdigest()
            assert record["wall_seconds"] == pytest.approx(
                sum(a["seconds"] for a in attempts(folder)))
    again = run_grid(grid_dir, "--report_only", grid=str(grid))
    assert "[record]" not in again.stdout  # Unchanged records are not rewritten.

    fresh = tmp_path / "fresh"
    out = run_grid(fresh, grid=str(grid))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[start" not in out.stdout and out.stdout.count("finished earlier") == 6
    assert not list(fresh.glob("default/*/seed*/report.json"))
    key = lambda rows: {(r["row"], r["method"], r["seed"]): {
        k: v for k, v in r.items() if k != "folder"} for r in rows}
    assert key(read_csv(fresh / "results.csv")) == key(read_csv(grid_dir / "results.csv"))
    text = (fresh / "results.md").read_text()
    assert "(6 of the runs here were read from there" in text
    assert "None: every run finished." in text and "another data split" not in text

    # A record of another config, or a damaged one, is a conflict that says what to
    # do; the run is not trained over it.
    record = records / "default" / "tlc" / "seed0.json"
    data = json.loads(record.read_text())
    data["report"]["config"]["train"]["epochs"] = 9
    record.write_text(json.dumps(data))
    record_two = records / "default" / "tlc" / "seed1.json"
    record_two.write_text("{not json")
    out = run_grid(tmp_path / "fresh2", "--only=tlc/", grid=str(grid))
    assert out.returncode == 1 and "[start" not in out.stdout
    assert re.search(r"\[FAILED\] default/tlc/seed0: its record .* is of another "
                     r"config \(train.epochs\); delete the record", out.stderr)
    assert "[FAILED] default/tlc/seed1: " in out.stderr
    assert "is not a run record" in out.stderr and "restore it from git" in out.stderr


def test_record_round_trip_and_precedence(tmp_path):
    """A folder's own report wins over its record; a record counts as finished only
    for the config it records."""
    grid = load_grid(ROOT / TINY)
    cell = grid.cells()[0]
    expected = json.loads(grid.config(cell).to_json())
    folder, records = tmp_path / "run", tmp_path / "records"
    folder.mkdir()
    record = record_path(records, cell.variant, cell.method, cell.seed)
    assert record == records / "default" / "tlc" / "seed0.json"
    (folder / "report.json").write_text(json.dumps({"test": {"a": 1}, "config": expected}))
    assert write_record(folder, record) and not write_record(folder, record)
    state = run_state(tmp_path / "empty", expected, record=record)
    assert state.state == FINISHED and state.record == record
    assert state.report["test"] == {"a": 1} and state.stored["wall_seconds"] is None
    (folder / "report.json").write_text(json.dumps({"test": {"a": 2}, "config": expected}))
    state = run_state(folder, expected, record=record)
    assert state.record is None and state.report["test"] == {"a": 2}
    assert run_state(tmp_path / "empty", expected).state == MISSING


@pytest.mark.slow
def test_a_failing_run_is_reported_and_the_others_go_on(tmp_path):
    grid = write_grid(tmp_path / "broken.py", config=DIGITS,
                      methods={"broken": {"train.loss": "no-such-loss"}}, seeds=[0, 1],
                      overrides=TINY_OVERRIDES)
    out = run_grid(tmp_path / "work", "--parallel=2", grid=grid)
    assert out.returncode == 1, out.stdout + out.stderr
    for seed in (0, 1):
        # A config the trainer refuses is a usage error: exit status 2.
        assert f"[FAILED] default/broken/seed{seed}: exit code 2" in out.stderr
    assert "no-such-loss" in out.stderr  # The end of the run's log.
    # The sklearn rows (the same data) were still computed.
    assert out.stdout.count(f"[done] default/{BASELINE_METHOD}") == 2
    text = (tmp_path / "work" / "results.md").read_text()
    assert re.search(r"\| broken \| 0 of 2 \|", text)
    assert len(re.findall(r"\| default/broken/seed\d \| failed \| exit code 2", text)) == 2


def test_dry_run_prints_the_selected_commands_and_writes_nothing(tmp_path):
    out = run_grid(tmp_path / "work", "--dry_run", "--only=no-aug/seed1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "default/no-aug/seed1: missing"
    assert "--config.augment.enabled=false --config.seed=1" in lines[1]
    assert len(lines) == 2
    assert not (tmp_path / "work").exists()
    bad = run_grid(tmp_path / "work", "--dry_run", "--only=nothing-matches")
    assert bad.returncode == 2 and "matches none of the runs" in bad.stderr


def test_grid_files_of_the_project_load():
    for name in ("tiny", "digits_ablation", "fashion_mnist_lt", "cifar10_lt",
                 "cifar100_lt", "fashion_mnist_lt_transfer",
                 "fashion_mnist_lt_transfer_methods", "fashion_mnist_lt_transfer_tuning",
                 "fashion_mnist_lt_update_period"):
        grid = load_grid(ROOT / "configs" / "grids" / f"{name}.py")
        assert grid.cells()
    grid = load_grid(ROOT / "configs/grids/fashion_mnist_lt.py")
    assert list(grid.variants) == ["ratio=100", "ratio=10"]
    assert len(grid.cells()) == 2 * 22 * 3  # Ratios x methods x seeds.
    configs = {c.id: grid.config(c) for c in grid.cells()}
    assert configs["ratio=10/tlc-cot/seed2"].train.loss == "cot"
    assert configs["ratio=10/tlc-cot/seed2"].data.imbalance_ratio == 10
    assert configs["ratio=10/tlc-cot/seed2"].seed == 2
    combined = configs["ratio=100/tlc-combined/seed0"].sampling
    assert (combined.composition, combined.signal, combined.f1_momentum,
            combined.mix_balanced) == ("active", "recall", 0.5, 0.5)
    assert configs["ratio=100/tlc-combined/seed0"].train.loss == "balanced_softmax"
    tlc_ldam = configs["ratio=100/tlc-ldam/seed0"]
    assert (tlc_ldam.sampling.composition, tlc_ldam.train.loss, tlc_ldam.model.head,
            tlc_ldam.train.class_weighting) == ("active", "ldam", "cosine", "none")
    # The update-period grid shares its tlc / tlc-combined cells (and records) with the
    # main grid; its other rows change only the quota update period and averaging.
    period = load_grid(ROOT / "configs/grids/fashion_mnist_lt_update_period.py")
    rows = {c.id.split("/")[1]: period.config(c) for c in period.cells() if c.seed == 1}
    assert len(period.cells()) == 5 * 3
    for name in ("tlc", "tlc-combined"):
        assert rows[name].to_json() == configs[f"ratio=100/{name}/seed1"].to_json(), name
    expected = {"tlc-update4": ("tlc", 42, 0.0),
                "tlc-update4-momentum": ("tlc", 42, 0.75),
                "tlc-combined-update4": ("tlc-combined", 42, 0.5)}
    for name, (base_name, every, momentum) in expected.items():
        c, base = rows[name], configs[f"ratio=100/{base_name}/seed1"]
        assert (c.sampling.update_every_steps, c.sampling.f1_momentum) == (every, momentum)
        assert base.sampling.update_every_steps == 0
        c.sampling.update_every_steps = 0
        c.sampling.f1_momentum = base.sampling.f1_momentum
        assert c.to_json() == base.to_json(), name  # Nothing else changes.
    transfer = load_grid(ROOT / "configs/grids/fashion_mnist_lt_transfer.py")
    assert len(transfer.cells()) == 2 * 3 * 2 * 2 * 3  # Ratios x sizes x inits x methods x seeds.
    big = transfer.config(next(c for c in transfer.cells()
                               if c.id == "ratio=100_size=96_imagenet/class-balanced/seed1"))
    assert (big.data.resize_to, big.model.pretrained, big.sampling.composition,
            big.seed) == (96, "imagenet", "class_balanced", 1)
    # The methods grid shares its tlc / class-balanced cells (and records) with the
    # transfer grid at 64 px: the same configs, so a run recorded by one counts for both.
    methods = load_grid(ROOT / "configs/grids/fashion_mnist_lt_transfer_methods.py")
    assert len(methods.cells()) == 2 * 22 * 3
    by_id = {c.id: c for c in transfer.cells()}
    for cell in methods.cells():
        if cell.id.split("/")[1] in ("tlc", "class-balanced"):
            assert (methods.config(cell).to_json()
                    == transfer.config(by_id[cell.id]).to_json()), cell.id
    # The tuning grid changes one choice per row; its `tlc` row is the transfer grid's.
    tuning = load_grid(ROOT / "configs/grids/fashion_mnist_lt_transfer_tuning.py")
    tuned = {c.id.split("/")[1]: tuning.config(c) for c in tuning.cells() if c.seed == 0}
    base = transfer.config(by_id["ratio=100_size=64_imagenet/tlc/seed0"])
    assert tuned["tlc"].to_json() == base.to_json()
    # Its tlc-ldam row is the methods grid's (one records folder, the same configs).
    shared = {c.id: c for c in methods.cells()}
    for cell in tuning.cells():
        if cell.id.split("/")[1] == "tlc-ldam":
            assert (tuning.config(cell).to_json()
                    == methods.config(shared[cell.id]).to_json()), cell.id
    assert (tuned["tlc-frozen1"].train.frozen_stages, tuned["tlc-frozen0"].train.frozen_stages,
            base.train.frozen_stages) == (1, 0, 2)
    assert (tuned["tlc-lite1"].model.name, tuned["tlc-lite1"].model.pretrained) == (
        "efficientnet_lite1", "imagenet")
    assert (tuned["tlc-18epochs"].train.epochs, base.train.epochs) == (18, 8)
    assert (tuned["tlc-ldam"].train.loss, tuned["tlc-ldam"].model.head,
            tuned["tlc-ldam"].sampling.composition) == ("ldam", "cosine", "active")
    deferred = tuned["tlc-ldam-deferred"]
    assert (deferred.train.loss, deferred.model.head, deferred.sampling.composition,
            deferred.sampling.defer_epochs, base.sampling.defer_epochs) == (
        "ldam", "cosine", "active", 6, 0)
    deferred.sampling.defer_epochs = base.sampling.defer_epochs
    for name, c in tuned.items():  # Nothing else changes.
        for field in ("data", "sampling", "warmup", "augment", "eval"):
            assert c[field].to_json() == base[field].to_json(), (name, field)
    drs = methods.config(next(c for c in methods.cells()
                              if c.id == "ratio=10_size=64_imagenet/drs/seed0"))
    assert (drs.sampling.defer_epochs, drs.train.epochs, drs.warmup.epochs) == (6, 8, 2)


def test_cifar_grids_follow_the_paper_protocol(monkeypatch):
    """Every method of the GPU grids trains the same pretrained DenseNet-121 for the
    same 200 epochs; DRS / DRW switch at 160, cRT re-trains for 10 epochs."""
    monkeypatch.setenv("CIFAR_ROOT", "/somewhere/cifar")
    for name, classes in (("cifar10_lt", "cifar10"), ("cifar100_lt", "cifar100")):
        grid = load_grid(ROOT / "configs" / "grids" / f"{name}.py")
        assert len(grid.cells()) == 2 * 22 * 3
        configs = {c.id: grid.config(c) for c in grid.cells() if c.seed == 0}
        for run, c in configs.items():
            assert (c.data.name, c.model.name, c.model.pretrained, c.train.epochs) == (
                classes, "densenet121", "imagenet", 200), run
            assert c.data.root == "/somewhere/cifar" and c.data.download, run
        assert configs["ratio=100/drs/seed0"].sampling.defer_epochs == 160
        assert configs["ratio=100/ldam-drw/seed0"].train.reweight_epoch == 160
        assert configs["ratio=100/ldam-drw/seed0"].model.head == "cosine"
        assert configs["ratio=10/crt/seed0"].decoupled.epochs == 10
        assert configs["ratio=10/tlc/seed0"].data.imbalance_ratio == 10


def test_paper_style_rows_pair_methods_that_differ_only_in_the_loss():
    grid = load_grid(ROOT / "configs/grids/fashion_mnist_lt.py")
    losses = method_losses(grid, "ratio=100")
    assert {m: losses[m] for m in ("tlc", "tlc-focal", "tlc-cot", "instance",
                                   "ldam-drw", "posthoc-la")} == {
        "tlc": "ce", "tlc-focal": "focal", "tlc-cot": "cot", "instance": "ce",
        "ldam-drw": "ldam", "posthoc-la": "ce"}
    rows = dict(loss_rows(grid, losses))
    assert rows["tlc"] == {"ce": "tlc", "focal": "tlc-focal", "cot": "tlc-cot",
                           "balanced_softmax": "tlc-balanced-softmax"}
    assert rows["tlc-recall"] == {"ce": "tlc-recall",
                                  "balanced_softmax": "tlc-recall-balanced-softmax"}
    assert rows["instance"] == {"ce": "instance", "logit_adjusted": "logit-adjusted",
                                "balanced_softmax": "balanced-softmax"}
    # LDAM-DRW also defers re-weighting: its own row, not the CE baseline's.
    assert rows["ldam-drw"] == {"ldam": "ldam-drw"} and "cb-ce" in rows


@pytest.mark.parametrize("grid,message", [
    (dict(methods={"a": {}}, seeds=[0]), r"no \['config'\]"),
    (dict(config=DIGITS, methods={"a": {}}, seeds=[0], epochs=3),
     r"unknown keys \['epochs'\]"),
    (dict(config="configs/nope.py", methods={"a": {}}, seeds=[0]), "not found"),
    (dict(config=DIGITS, methods={}, seeds=[0]), "non-empty dict"),
    (dict(config=DIGITS, methods={"a/b": {}}, seeds=[0]),
     "names a folder"),
    (dict(config=DIGITS, methods={BASELINE_METHOD: {}}, seeds=[0]),
     "reserved"),
    (dict(config=DIGITS, methods={"a": {}}, seeds=[0, 0]), "distinct"),
    (dict(config=DIGITS, methods={"a": {"--config.train.loss": "ce"}},
          seeds=[0]), "leave out the '--config.' prefix"),
    (dict(config=DIGITS, methods={"a": {"seed": 1}}, seeds=[0]),
     "seeds come from"),
    (dict(config=DIGITS, methods={"a": {"train.lost": "ce"}}, seeds=[0]),
     r"method 'a'.*--config.train.lost=ce"),
    (dict(config=DIGITS, methods={"a": {"train.epochs": "many"}},
          seeds=[0]), r"method 'a'.*--config.train.epochs=many"),
    (dict(config=DIGITS, variants=["ration=3"], methods={"a": {}},
          seeds=[0]), r"variant 'ration=3'"),
])
def test_bad_grid_files_fail_with_what_to_fix(tmp_path, grid, message):
    with pytest.raises(GridError, match=message):
        load_grid(write_grid(tmp_path / "bad.py", **grid))


def test_grid_file_without_get_grid(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("GRID = {}\n")
    with pytest.raises(GridError, match="defines no get_grid"):
        load_grid(path)


def test_run_state_compares_the_recorded_config(tmp_path):
    grid = load_grid(ROOT / TINY)
    cell = grid.cells()[0]
    expected = json.loads(grid.config(cell).to_json())
    assert run_state(tmp_path, expected).state == MISSING
    report = {"test": {}, "config": expected}
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert run_state(tmp_path, expected).state == FINISHED
    # A field a resumed run may change does not matter; any other does.
    changed = json.loads(json.dumps(expected))
    changed["eval"]["batch_size"] = 7
    assert run_state(tmp_path, changed).state == FINISHED
    changed["train"]["epochs"] = 7
    state = run_state(tmp_path, changed)
    assert state.state == CONFLICT and "train.epochs" in state.detail


def test_contrast_choice_reads_contrast_figures_only():
    """The choice between active-sampling variants: highest mean contrast balanced
    accuracy over the seeds all candidates have; contrast macro-F1 when they share no
    seed with the former (runs recorded before it existed); never a test figure; None
    without finished runs."""
    from tlc_jax.experiments.aggregate import Group, Run
    from tlc_jax.experiments.grid import Cell
    from tlc_jax.experiments.results import contrast_choice, contrast_choice_detail
    from tlc_jax.experiments.runs import RunState

    def group(method, f1s, baccs, test=0.5, finished=True):
        runs = tuple(Run(Cell("v", "", method, seed, ()), Path("."),
                         RunState(FINISHED if finished else MISSING),
                         {"contrast_macro_f1": f1, "contrast_balanced_accuracy": b,
                          "balanced_accuracy": test}, 1.0, 1.0)
                     for seed, (f1, b) in enumerate(zip(f1s, baccs)))
        return Group("v", method, runs)

    a = group("a", [0.7, 0.7], [0.80, 0.82], test=0.99)  # Best on the test set.
    b = group("b", [0.6, 0.6], [0.85, 0.83], test=0.10)
    c = group("c", [0.9, 0.9], [0.95, 0.95], finished=False)
    assert contrast_choice([a, b, c], ["a", "b", "c"]) == "b"
    assert contrast_choice([a, b], ["a"]) == "a"
    legacy = group("b", [0.6, 0.6], [None, None])
    assert contrast_choice([a, legacy], ["a", "b"]) == "a"  # By macro-F1: 0.7 > 0.6.
    assert contrast_choice([c], ["c"]) is None
    # Compared on the seeds both have: d's extra seed does not count.
    d = group("d", [0.7, 0.7], [0.80, 0.99])
    e = group("e", [0.7], [0.85])
    assert contrast_choice([d, e], ["d", "e"]) == "e"
    assert contrast_choice_detail([d, e], ["d", "e"]) == (
        "e", "contrast_balanced_accuracy", [0])


def test_evaluation_sources_pair_methods_that_differ_only_in_posthoc_corrections():
    methods = {"instance": {"sampling.composition": "instance"},
               "posthoc-la": {"sampling.composition": "instance",
                              "eval.logit_adjust_tau": 1.0},
               "tau-norm": {"sampling.composition": "instance", "eval.tau_norm": 1.0},
               "tlc": {}, "tlc-tau": {"eval.tau_norm": 0.5},
               "lonely": {"train.loss": "focal", "eval.tau_norm": 1.0}}
    assert evaluation_sources(methods) == {"posthoc-la": "instance",
                                           "tau-norm": "instance", "tlc-tau": "tlc"}
    grid = load_grid(ROOT / "configs/grids/fashion_mnist_lt.py")
    assert grid.evaluated_from == {"posthoc-la": "instance", "tau-norm": "instance"}
    cell = next(c for c in grid.cells() if c.id == "ratio=10/tau-norm/seed2")
    assert grid.source(cell).id == "ratio=10/instance/seed2"
    assert grid.config(grid.source(cell)).to_dict() == {
        **grid.config(cell).to_dict(), "eval": {**grid.config(cell).eval.to_dict(),
                                                "tau_norm": 0.0, "tau_candidates": ()}}


@pytest.mark.slow
def test_a_posthoc_method_evaluates_its_source_run_instead_of_training(tmp_path):
    """tlc-tau = tlc + tau-normalisation: with two runs at once it waits for tlc's run
    and evaluates its weights (no training of its own); its uncorrected figures are
    tlc's. Where tlc's run is not finished, it would train on its own."""
    grid = write_grid(tmp_path / "posthoc.py", config=DIGITS,
                      methods={"tlc-tau": {"eval.tau_norm": 1.0}, "tlc": {}},
                      seeds=[0], overrides=TINY_OVERRIDES)
    dry = run_grid(tmp_path / "work", "--dry_run", "--only=tlc-tau", grid=grid)
    assert "default/tlc-tau/seed0: missing\n" in dry.stdout
    assert "--evaluate_from" not in dry.stdout
    dry = run_grid(tmp_path / "work", "--dry_run", grid=grid)
    assert ("default/tlc-tau/seed0: missing (evaluates default/tlc/seed0's trained run, "
            "once it has finished)") in dry.stdout
    out = run_grid(tmp_path / "work", "--parallel=2", grid=grid)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    starts = [l for l in lines if l.startswith("[start")]
    assert "default/tlc/seed0" in starts[0]
    assert "default/tlc-tau/seed0 (evaluates default/tlc/seed0's trained run;" in starts[1]
    assert lines.index(starts[1]) > lines.index(
        next(l for l in lines if l.startswith("[done] default/tlc/seed0")))
    work = tmp_path / "work" / "default"
    command = (work / "tlc-tau" / "seed0" / "command.txt").read_text()
    assert f"--evaluate_from={work / 'tlc' / 'seed0'}" in command
    tau = json.loads((work / "tlc-tau" / "seed0" / "report.json").read_text())
    tlc = json.loads((work / "tlc" / "seed0" / "report.json").read_text())
    assert tau["test_without_posthoc"] == tlc["test"]
    assert tau["history"] == tlc["history"]
    assert not (work / "tlc-tau" / "seed0" / "checkpoints").exists()
    assert not re.search(r"epoch \d+/\d+: loss",
                         (work / "tlc-tau" / "seed0" / "log.txt").read_text())
    assert re.search(r"epoch \d+/\d+: loss", (work / "tlc" / "seed0" / "log.txt").read_text())

    # A source known only from elsewhere (not finished in this work directory, so no
    # weights to evaluate): the cell trains on its own.
    loaded = load_grid(grid)
    tau = next(c for c in loaded.cells() if c.method == "tlc-tau")
    assert source_finished(loaded, tmp_path / "work", tau)
    assert not source_finished(loaded, tmp_path / "elsewhere", tau)
