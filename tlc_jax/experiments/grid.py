"""Grid files: which runs an experiment consists of, and the exact command of each.

A grid file is a Python file whose `get_grid()` returns a plain dict:

    def get_grid():
        return {
            "config": "configs/fashion_mnist_lt.py",  # the base config file
            "config_args": "epochs=10",   # its argument string (optional, "" = none)
            "variants": ["ratio=100", "ratio=10"],   # optional: config arguments added
            #   to config_args, one variant each (or a dict name -> argument string)
            "methods": {                  # name -> {config field: value}
                "tlc": {},
                "tlc-focal": {"train.loss": "focal"},
            },
            "seeds": [0, 1, 2],
            "overrides": {"train.epochs": 1},   # optional: set in every run
            "description": "...",               # optional: the opening of results.md
        }

Each cell (variant x method x seed) is one ordinary training run,

    python -m tlc_jax.main --config=<config>:<config_args>,<variant> \
        --config.<field>=<value> ... --config.seed=<seed> \
        --workdir=<root>/<variant>/<method>/seed<seed>

with the grid's `overrides`, then the method's (a method's value wins), as
`--config.field=value` flags. The runner knows no config field: the config file is the
schema, and every cell's config is resolved here exactly as `tlc_jax.main` resolves it
(ml_collections' config flags), so a mistyped field or a value of the wrong type fails
when the grid is loaded, naming the method, not in the middle of a grid.

A method whose fields are another method's plus only evaluation fields (post-hoc
corrections, `tlc_jax.workdir.EVALUATION_FIELDS`: e.g. "posthoc-la" = "instance" +
eval.logit_adjust_tau) trains exactly as that method does, so the runner evaluates that
method's finished run of the same variant and seed instead of training again (the
cell's command adds `--evaluate_from=<that run's folder>`); `Grid.evaluated_from` names
these pairs. When that run is not finished and not part of the invocation, the cell
trains on its own.

Relative config paths are looked up in the current directory, then in the grid file's
folder and the folders above it (so configs/grids/x.py may name configs/digits_lt.py).
Variant names are their argument strings with "," turned into "_" (or the dict's keys);
with no variants the grid has one, named "default".
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping

import ml_collections
from absl import flags
from ml_collections import config_flags

from tlc_jax.workdir import EVALUATION_FIELDS, config_changes

# The sklearn sanity row (tlc_jax.experiments.baseline) is stored as this method.
BASELINE_METHOD = "sklearn-logreg-balanced"
DEFAULT_VARIANT = "default"
REQUIRED_KEYS = ("config", "methods", "seeds")
OPTIONAL_KEYS = ("config_args", "variants", "overrides", "description", "records")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")
FIELD_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
SCALARS = (bool, int, float, str)
COMMAND_FILE = "command.txt"


class GridError(ValueError):
    """A grid file that cannot be used; the message says what is wrong and the fix."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the grid: a variant, a method and a seed."""

    variant: str
    variant_args: str
    method: str
    seed: int
    overrides: tuple[tuple[str, Any], ...]  # (field, value): the grid's, then the method's.

    @property
    def id(self) -> str:
        """The run's id, variant/method/seedS: also its folder under the grid's workdir."""
        return f"{self.variant}/{self.method}/seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Grid:
    """A loaded, checked grid file (see the module docstring)."""

    path: Path
    config_path: Path  # Absolute.
    config_args: str
    variants: dict[str, str]  # Name -> argument string.
    methods: dict[str, dict[str, Any]]  # Name -> {field: value}.
    seeds: tuple[int, ...]
    overrides: dict[str, Any]
    description: str
    records: Path | None = None  # Absolute; the finished runs' records (runs.py).
    # Method -> the method whose trained runs it evaluates (see the module docstring).
    evaluated_from: dict[str, str] = dataclasses.field(default_factory=dict)

    def cells(self) -> list[Cell]:
        """Every run, variant-major, then method, then seed (the order runs start in)."""
        return [Cell(variant, args, method, seed,
                     tuple({**self.overrides, **fields}.items()))
                for variant, args in self.variants.items()
                for method, fields in self.methods.items()
                for seed in self.seeds]

    def config_arg(self, cell: Cell) -> str:
        """The `--config=` value: the file, and its arguments after a colon if any."""
        args = ",".join(a for a in (self.config_args, cell.variant_args) if a)
        return f"{self.config_path}:{args}" if args else str(self.config_path)

    def flag_args(self, cell: Cell) -> list[str]:
        """The cell's `--config...` flags, in the order tlc_jax.main receives them."""
        return ([f"--config={self.config_arg(cell)}"]
                + [f"--config.{field}={flag_value(value)}"
                   for field, value in cell.overrides]
                + [f"--config.seed={cell.seed}"])

    def command(self, cell: Cell, root: Path, evaluate: bool = False) -> list[str]:
        """The argv that trains (or resumes) `cell` in its folder under `root`; with
        `evaluate`, that evaluates its `source` cell's finished run instead."""
        extra = [f"--evaluate_from={run_dir(root, self.source(cell))}"] if evaluate else []
        return [sys.executable, "-m", "tlc_jax.main", *self.flag_args(cell),
                f"--workdir={run_dir(root, cell)}", *extra]

    def source(self, cell: Cell) -> Cell | None:
        """The cell whose trained run `cell` evaluates (same variant and seed), if its
        method differs from another's only in evaluation fields."""
        method = self.evaluated_from.get(cell.method)
        if method is None:
            return None
        return Cell(cell.variant, cell.variant_args, method, cell.seed,
                    tuple({**self.overrides, **self.methods[method]}.items()))

    def config(self, cell: Cell) -> ml_collections.ConfigDict:
        """The cell's resolved config, exactly as `tlc_jax.main` would build it."""
        return resolve_config(self.flag_args(cell))


def run_dir(root: Path, cell: Cell) -> Path:
    """Where `cell` runs: <root>/<variant>/<method>/seed<seed> (absolute)."""
    return Path(root).absolute() / cell.variant / cell.method / f"seed{cell.seed}"


def command_line(argv: list[str]) -> str:
    """`argv` as one shell line (what command.txt holds)."""
    return shlex.join(argv)


def flag_value(value: Any) -> str:
    """A Python value as absl / ml_collections parse it from `--config.x=...`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return repr(tuple(value))
    return str(value)


def resolve_config(config_flags_argv: list[str]) -> ml_collections.ConfigDict:
    """Parses `--config=...` and `--config.x=...` flags in a private FlagValues, the
    way `tlc_jax.main` does (locked config, the file's argument string, overrides)."""
    argv = ["tlc_jax.main", *config_flags_argv]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                    flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


def config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A config as the plain JSON dict a run records (config.json, report["config"])."""
    return json.loads(config.to_json())


def config_differences(recorded: Mapping, expected: Mapping) -> list[str]:
    """Fields (dotted) whose values differ between a run's recorded config (its
    config.json or report["config"]) and `expected` (a `config_dict`), ignoring the
    fields a run may change when it resumes (`tlc_jax.workdir.RESUMABLE_FIELDS`)."""
    return list(config_changes(recorded, expected))


# --- loading and checking a grid file ------------------------------------------------

def load_grid(path: str | Path) -> Grid:
    """Reads and checks a grid file; every cell's config is resolved once, so a bad
    field or value fails here. Raises GridError saying what is wrong and how to fix it."""
    path = Path(path)
    raw = _call_get_grid(path)
    where = f"grid file {path}"
    unknown = sorted(set(raw) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if unknown or missing:
        raise GridError(f"{where}: get_grid() returned "
                        + (f"unknown keys {unknown}" if unknown else "")
                        + (" and " if unknown and missing else "")
                        + (f"no {missing}" if missing else "")
                        + f". Keys: {list(REQUIRED_KEYS)} (required), "
                          f"{list(OPTIONAL_KEYS)} (optional).")
    grid = Grid(path=path,
                config_path=_config_path(raw["config"], path, where),
                config_args=_string(raw.get("config_args", ""), "config_args", where),
                variants=_variants(raw.get("variants"), where),
                methods=_methods(raw["methods"], where),
                seeds=_seeds(raw["seeds"], where),
                overrides=_fields(raw.get("overrides") or {}, "overrides", where),
                description=_string(raw.get("description", ""), "description", where),
                records=_records_path(raw.get("records"), where))
    grid = dataclasses.replace(grid, evaluated_from=evaluation_sources(grid.methods))
    for cell in grid.cells():
        _check_cell(grid, cell, where)
    return grid


def evaluation_sources(methods: dict[str, dict[str, Any]]) -> dict[str, str]:
    """{method: source method} for each method whose fields are the source's plus
    evaluation fields only (the first such source in grid order)."""
    out = {}
    for name, fields in methods.items():
        training = {k: v for k, v in fields.items() if k not in EVALUATION_FIELDS}
        if training == fields:
            continue
        source = next((other for other, its in methods.items()
                       if other != name and its == training), None)
        if source is not None:
            out[name] = source
    return out


def _call_get_grid(path: Path) -> dict:
    if not path.is_file():
        raise GridError(f"grid file {path} does not exist; pass "
                        f"--grid=configs/grids/<name>.py.")
    spec = importlib.util.spec_from_file_location(f"_tlc_grid_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise GridError(f"grid file {path} failed to load: {type(e).__name__}: {e}") from e
    if not callable(getattr(module, "get_grid", None)):
        raise GridError(f"grid file {path} defines no get_grid(); add a function "
                        f"get_grid() returning a dict (see tlc_jax/experiments/grid.py).")
    raw = module.get_grid()
    if not isinstance(raw, dict):
        raise GridError(f"grid file {path}: get_grid() returned a {type(raw).__name__}; "
                        f"it must return a dict (see tlc_jax/experiments/grid.py).")
    return raw


def _string(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise GridError(f"{where}: {key!r} must be a string, got {value!r}.")
    return value


def _config_path(value: Any, grid_path: Path, where: str) -> Path:
    """The config file, absolute: relative to the current directory, else to the grid
    file's folder or one above it."""
    value = _string(value, "config", where)
    candidates = [Path(value)] if Path(value).is_absolute() else (
        [Path.cwd() / value] + [folder / value for folder in grid_path.absolute().parents])
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise GridError(f"{where}: config file {value!r} not found (looked in the current "
                    f"directory and above the grid file); give a path such as "
                    f"'configs/digits_lt.py'.")


def _records_path(value: Any, where: str) -> Path | None:
    """The records folder, absolute (relative paths: to the current directory, like
    the work directory); None when the grid keeps no records."""
    if value is None:
        return None
    value = _string(value, "records", where)
    if not value:
        raise GridError(f"{where}: records must name a folder (e.g. "
                        f"'docs/results/records/my_grid') or be left out.")
    path = Path(value).absolute()
    if path.exists() and not path.is_dir():
        raise GridError(f"{where}: records {value!r} is a file; name a folder.")
    return path


def _name(name: Any, kind: str, where: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise GridError(f"{where}: {kind} name {name!r} must be a non-empty string of "
                        f"letters, digits and _ . = + - (it names a folder).")
    return name


def _variants(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {DEFAULT_VARIANT: ""}
    if isinstance(value, (list, tuple)):
        value = {(_string(v, "variants", where).replace(",", "_") or DEFAULT_VARIANT): v
                 for v in value}
    if not isinstance(value, dict) or not value:
        raise GridError(f"{where}: 'variants' must be a non-empty list of config argument "
                        f"strings (e.g. ['ratio=100', 'ratio=10']) or a dict name -> "
                        f"argument string; got {value!r}.")
    return {_name(k, "variant", where): _string(v, f"variants[{k!r}]", where)
            for k, v in value.items()}


def _methods(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not value:
        raise GridError(f"{where}: 'methods' must be a non-empty dict name -> "
                        f"{{config field: value}}, e.g. {{'tlc': {{}}, 'tlc-focal': "
                        f"{{'train.loss': 'focal'}}}}; got {value!r}.")
    out = {}
    for name, fields in value.items():
        _name(name, "method", where)
        if name == BASELINE_METHOD:
            raise GridError(f"{where}: method name {name!r} is reserved for the "
                            f"scikit-learn sanity row; rename the method.")
        out[name] = _fields(fields, f"methods[{name!r}]", where)
    return out


def _fields(value: Any, key: str, where: str) -> dict[str, Any]:
    """{dotted config field: scalar or tuple} - the `--config.field=value` overrides."""
    if not isinstance(value, dict):
        raise GridError(f"{where}: {key} must be a dict of config fields, e.g. "
                        f"{{'train.loss': 'focal'}}; got {value!r}.")
    for field, v in value.items():
        if not isinstance(field, str) or not FIELD_RE.match(field):
            hint = (" (leave out the '--config.' prefix)"
                    if isinstance(field, str) and field.startswith("-") else "")
            raise GridError(f"{where}: {key}: {field!r} is not a dotted config field such "
                            f"as 'train.loss'{hint}.")
        if field == "seed":
            raise GridError(f"{where}: {key} sets 'seed'; seeds come from the grid's "
                            f"'seeds' list, remove it there.")
        items = v if isinstance(v, (tuple, list)) else (v,)
        if not all(isinstance(x, SCALARS) for x in items):
            raise GridError(f"{where}: {key}[{field!r}] = {v!r}: values must be bool, int, "
                            f"float, str or a tuple of those.")
    return dict(value)


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    ok = (isinstance(value, (list, tuple)) and value and
          all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value) and
          len(set(value)) == len(value))
    if not ok:
        raise GridError(f"{where}: 'seeds' must be a non-empty list of distinct integers "
                        f">= 0, e.g. [0, 1, 2]; got {value!r}.")
    return tuple(value)


def _check_cell(grid: Grid, cell: Cell, where: str) -> None:
    try:
        grid.config(cell)
    except Exception as e:  # absl / ml_collections raise several kinds.
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GridError(
            f"{where}: variant {cell.variant!r}, method {cell.method!r}: the config does "
            f"not accept {' '.join(grid.flag_args(cell))} ({type(e).__name__}: {message}). "
            f"Check the field names against tlc_jax/config.py and the argument names "
            f"against {grid.config_path.name}'s docstring.") from e
