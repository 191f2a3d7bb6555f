"""A trained run, as inference sees it: the model it trained, its weights, a predict
function.

A run of `tlc_jax.main` writes into its work directory `model.json` (a `ModelSpec`:
what `create_model` needs to rebuild the network, the input shape and the class names)
and `checkpoints/` (orbax). This module reads both back without the trainer, its data
pipeline or its optimizer:

    run = load_run("workdir/digits_lt")            # or which="best"
    predict = make_predict(run.model, top_k=3)      # jitted
    probabilities, classes = predict(run.variables, images_uint8_nhwc)

The live analyzer uses this; so does transfer from an earlier run (`restore_state`).
`save_run` writes weights trained elsewhere (ImageNet's, say) as such a folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

from tlc_jax.fileio import write_json_atomic
from tlc_jax.models import create_model
from tlc_jax.preprocess import model_input

MODEL_FILE = "model.json"
CHECKPOINT_DIR = "checkpoints"
BEST_METRIC = "contrast_macro_f1"  # The trainer's best checkpoint is the highest.


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a run's network: `create_model(name, **kwargs)` on images of
    `image_shape` (H, W, C), predicting `class_names`."""

    name: str
    kwargs: dict[str, Any]  # JSON values only (dtype by name).
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]

    def build(self) -> nn.Module:
        return create_model(self.name, **self.kwargs)

    def write(self, workdir: str | Path) -> None:
        write_json_atomic(Path(workdir) / MODEL_FILE, {
            "name": self.name, "kwargs": self.kwargs,
            "image_shape": list(self.image_shape), "class_names": list(self.class_names)})

    @classmethod
    def read(cls, workdir: str | Path) -> "ModelSpec":
        path = Path(workdir) / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: point at the work directory of a "
                                    f"run of tlc_jax.main.")
        spec = json.loads(path.read_text())
        return cls(spec["name"], spec["kwargs"], tuple(spec["image_shape"]),
                   tuple(spec["class_names"]))


def checkpoint_folder(run: str | Path) -> Path:
    """`run` is a work directory or its checkpoints/ folder."""
    run = Path(run)
    return (run / CHECKPOINT_DIR if (run / CHECKPOINT_DIR).is_dir() else run).absolute()


def restore_state(run: str | Path, which: str = "latest",
                  sharding: jax.sharding.Sharding | None = None) -> tuple[int, dict]:
    """(step, saved train state) of a run's latest or best checkpoint, read-only,
    whatever devices or processes saved it; every array with `sharding` (default: on
    this process's first device). The best is by
    contrast-set macro-F1, as the trainer keeps it. One that does not restore
    (truncated, damaged) is skipped with a warning for the newest other that does."""
    if which not in ("latest", "best"):
        raise ValueError(f"which={which!r}: use 'latest' or 'best'.")
    folder = checkpoint_folder(run)
    options = ocp.CheckpointManagerOptions(
        read_only=True, best_fn=lambda m: m[BEST_METRIC], best_mode="max")
    with ocp.CheckpointManager(folder, options=options) as mngr:
        steps = sorted(mngr.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"No tlc-jax checkpoint in {folder}; point at a run's "
                                    f"work directory.")
        best = mngr.best_step() if which == "best" else None
        if best is not None:  # Then the newest others, should it not restore.
            steps = [best] + [s for s in steps if s != best]
        failures = []
        for step in steps:
            try:
                state = mngr.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(
                        saved_state_target(folder, step, sharding))))[
                    "state"]
            except Exception as e:  # noqa: BLE001 - an unreadable one: try the next.
                failures.append(f"{step} ({type(e).__name__}: {str(e)[:160]})")
                logging.warning("Checkpoint %s of %s does not restore (%s); trying the "
                                "next newest.", step, folder, failures[-1])
                continue
            return int(step), state
    raise ValueError(f"No checkpoint in {folder} restores: {'; '.join(failures)}.")


def saved_state_target(folder: Path, step: int,
                       sharding: jax.sharding.Sharding | None = None) -> Any:
    """The saved train state's shapes and dtypes as a restore target, every array with
    `sharding` (default: this process's first device). Orbax refuses to restore
    without a target on other devices than saved it; with one, a run saved from any
    number of devices or processes (multi-GPU, multi-host) restores anywhere."""
    handler = ocp.StandardCheckpointHandler()  # Reads the metadata file; no threads.
    try:
        metadata = handler.metadata(Path(folder) / str(step) / "state")
    finally:
        handler.close()
    tree = getattr(metadata, "item_metadata", metadata)
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), tree)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    spec: ModelSpec
    model: nn.Module
    variables: dict  # {"params", "batch_stats"} on the default device.
    step: int  # The checkpoint's step (the trainer's epoch index).


def load_run(run_dir: str | Path, which: str = "latest") -> TrainedRun:
    """A run's model and the weights of its latest (or best) checkpoint."""
    spec = ModelSpec.read(run_dir)
    step, state = restore_state(run_dir, which)
    variables = jax.device_put({"params": state["params"],
                                "batch_stats": state["batch_stats"]})
    return TrainedRun(spec, spec.build(), variables, step)


def make_predict(model: nn.Module, top_k: int) -> Callable:
    """Jitted `(variables, images_u8 NHWC) -> (probabilities, class indices)`, each
    (B, top_k), most probable first."""

    def predict(variables, images_u8):
        logits = model.apply(variables, model_input(images_u8, model), train=False)
        return jax.lax.top_k(jax.nn.softmax(logits.astype(jnp.float32)), top_k)

    return jax.jit(predict)


def save_run(workdir: str | Path, spec: ModelSpec, variables: dict, step: int = 0) -> Path:
    """Writes `variables` ({"params", "batch_stats"}) of the network `spec` describes as
    a run folder - model.json and one checkpoint - that `load_run`, the live analyzer
    and `--config.model.pretrained=<folder>` read like a trained run's. For serving or
    transferring weights that were not trained here (e.g. ImageNet weights from
    tlc_jax.pretrained). The folder must not hold a checkpoint of that step yet."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec.write(workdir)
    state = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    options = ocp.CheckpointManagerOptions(create=True)
    with ocp.CheckpointManager((workdir / CHECKPOINT_DIR).absolute(),
                               options=options) as mngr:
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        mngr.wait_until_finished()
    return workdir
