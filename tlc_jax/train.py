"""The TLC training algorithm, top to bottom (Liu et al. 2023, Engineering Applications of AI).

    data: load -> balanced test set -> long tail -> train / contrast split
    model: DenseNet (ImageNet weights when configured), new head for the target classes
    warm-up: only the classifier trains (Adam), uniform instance sampling
    fine-tuning: the first stages stay frozen; SGD; every batch holds `quotas[k]` images
        of class k, and after each update period the quotas follow Eq. 4 from the
        per-class F1 on the contrast set
    report: test metrics, many / medium / few-shot accuracy, quota and F1 history

Everything runs sharded over a 1-D ("data",) mesh of all devices: the batch is split,
the state replicated, BatchNorm statistics are over the global batch. The state is
checkpointed atomically with orbax every epoch together with the sampler, so a killed
run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import grain
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tlc_jax import augment, losses, metrics, quotas as quota_maths
from tlc_jax.fileio import write_json_atomic
from tlc_jax.config import validate as validate_config
from tlc_jax.data import ImageDataset, load_dataset, longtail_indices, split_indices
from tlc_jax.input_pipeline import ArrayBatchLoader, QuotaBatchIterator
from tlc_jax.models import create_model, frozen_mask
from tlc_jax.report import write_report_files
from tlc_jax.sampling import QuotaSampler
from tlc_jax.writers import MetricWriter, Progress

# ----------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------

_HAS_TEST_SET = {"cifar10", "cifar100", "mnist", "fashion_mnist", "kmnist"}
SPLIT_FILE = "data_split.json"


@dataclasses.dataclass(frozen=True)
class Splits:
    train: ImageDataset
    contrast: ImageDataset
    test: ImageDataset


def _load(cfg: ml_collections.ConfigDict, **kwargs) -> ImageDataset:
    """The loader's options that the config sets, by dataset kind."""
    opts: dict[str, Any] = {}
    if cfg.name == "digits":
        opts.update(image_size=cfg.image_size or None, channels=cfg.channels)
    elif cfg.name in ("image_folder", "caltech101", "ham10000"):
        opts.update(image_size=cfg.image_size or 224, skip_corrupt=cfg.skip_corrupt,
                    cache_dir=cfg.cache_dir or None)
        if cfg.name != "ham10000":
            opts.update(exclude_classes=tuple(cfg.exclude_classes))
    elif cfg.name in ("cifar10", "cifar100"):
        opts.update(download=cfg.download)
    return load_dataset(cfg.name, cfg.root or None, **opts, **kwargs)


def _fit_channels(ds: ImageDataset, channels: int) -> ImageDataset:
    have = ds.images.shape[-1]
    if have == channels:
        return ds
    if have == 1 and channels == 3:
        return dataclasses.replace(ds, images=np.repeat(ds.images, 3, axis=-1))
    raise ValueError(f"Dataset has {have}-channel images; config.data.channels={channels}. "
                     f"Set config.data.channels={have}.")


def prepare_data(cfg: ml_collections.ConfigDict, seed: int, workdir: Path) -> Splits:
    """Test set (official, or a stratified balanced share), long tail, contrast split.

    The chosen indices (into the loaded training source, and into the source's own test
    set unless it has none) are written to `workdir/data_split.json`; a resumed run
    checks that it recomputed the very same split.
    """
    has_test_set = cfg.name in _HAS_TEST_SET
    source = _load(cfg, **({"split": "train"} if has_test_set else {}))
    pool = np.arange(len(source))  # Indices into `source` still in play.
    if has_test_set:
        test, test_idx = _load(cfg, split="test"), "the source's test set"
    else:
        if cfg.test_fraction <= 0:
            raise ValueError(f"Dataset {cfg.name!r} has no test set of its own: set "
                             f"config.data.test_fraction > 0.")
        split = split_indices(source.labels, test_fraction=cfg.test_fraction,
                              contrast_fraction=0.0, groups=source.groups, seed=seed)
        test_idx, pool = split["test"], split["train"]
        test = source.subset(test_idx)
    if cfg.imbalance_ratio > 1:
        kept, _ = longtail_indices(source.labels[pool], cfg.imbalance_ratio,
                                   num_classes=source.num_classes, n_max=cfg.n_max or None,
                                   profile=cfg.longtail_profile, seed=seed,
                                   class_names=source.class_names)
        pool = pool[kept]
    groups = None if source.groups is None else source.groups[pool]
    split = split_indices(source.labels[pool], test_fraction=0.0,
                          contrast_fraction=cfg.contrast_fraction,
                          min_contrast_per_class=cfg.min_contrast_per_class,
                          groups=groups, seed=seed + 1, num_classes=source.num_classes)
    train_idx, contrast_idx = pool[split["train"]], pool[split["contrast"]]
    _save_or_check_split(workdir / SPLIT_FILE, {
        "source_size": len(source), "train": train_idx.tolist(),
        "contrast": contrast_idx.tolist(),
        "test": test_idx if isinstance(test_idx, str) else test_idx.tolist()})
    return Splits(*(_fit_channels(ds, cfg.channels) for ds in
                    (source.subset(train_idx), source.subset(contrast_idx), test)))


def _save_or_check_split(path: Path, chosen: dict[str, Any]) -> None:
    if path.exists():
        if json.loads(path.read_text()) != json.loads(json.dumps(chosen)):
            raise ValueError(f"{path} records another data split than this config and "
                             f"data give; use a fresh workdir or restore the old data.")
        return
    write_json_atomic(path, chosen)


def normalize(images: jax.Array) -> jax.Array:
    """[0, 1] -> roughly zero-mean unit-variance (ImageNet statistics for RGB)."""
    if images.shape[-1] == 3:
        mean = jnp.array([0.485, 0.456, 0.406])[None, None, None, :]
        std = jnp.array([0.229, 0.224, 0.225])[None, None, None, :]
        return (images - mean) / std
    return (images - 0.5) / 0.25


def augment_options(cfg: ml_collections.ConfigDict) -> augment.AugmentOptions:
    return augment.AugmentOptions(cfg.crop_padding, cfg.flip, cfg.color_jitter, cfg.cutout)


def offline_augmented(train: ImageDataset, copies: int, seed: int,
                      options: augment.AugmentOptions) -> ImageDataset:
    """The paper's offline mode: the training set plus `copies` augmented copies."""
    extra = augment.materialize(train.images, copies, seed, options)
    return ImageDataset(
        images=np.concatenate([train.images, extra.reshape(-1, *train.images.shape[1:])]),
        labels=np.tile(train.labels, copies + 1), class_names=train.class_names,
        groups=None if train.groups is None else np.tile(train.groups, copies + 1))


# ----------------------------------------------------------------------------------
# The work directory
# ----------------------------------------------------------------------------------

CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
BEST_METRIC = "contrast_macro_f1"
# Fields that may change between a run and its resumption: where things are, cadence.
RESUMABLE_FIELDS = {"data.root", "data.download", "data.cache_dir", "model.weights_dir",
                    "train.log_every_steps", "train.checkpoint_every_epochs",
                    "eval.batch_size"}
_RUN_OUTPUTS = ("checkpoints", "tensorboard", "plots", SPLIT_FILE, "metrics.jsonl",
                "report.json", "summary.md", CONFIG_FILE, MODEL_FILE)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def claim_workdir(workdir: Path, config: ml_collections.ConfigDict,
                  overwrite: bool) -> None:
    """Records the resolved config; refuses a workdir that holds another config's run."""
    path = workdir / CONFIG_FILE
    current = json.loads(config.to_json())
    if path.exists():
        old, new = _flat(json.loads(path.read_text())), _flat(current)
        changed = sorted(k for k in old.keys() | new.keys()
                         if old.get(k) != new.get(k) and k not in RESUMABLE_FIELDS)
        if changed and not overwrite:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
            raise ValueError(
                f"{workdir} holds a run with another config ({details}). Use a new "
                f"--workdir, or pass --overwrite to delete that run and start afresh.")
        if changed:
            import shutil

            for name in _RUN_OUTPUTS:
                target = workdir / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    write_json_atomic(path, current)


def transfer_from_run(run: Path, template: dict) -> dict:
    """Backbone (and, when the classes match, head) from an earlier tlc-jax run.

    `run` is a work directory or its checkpoints/ folder; its latest checkpoint is
    used. Layers whose shapes differ from `template` (the head, for other classes) keep
    the template's fresh initialisation; any other mismatch is an error.
    """
    folder = run / "checkpoints" if (run / "checkpoints").is_dir() else run
    with ocp.CheckpointManager(folder.absolute(), options=ocp.CheckpointManagerOptions(
            read_only=True)) as mngr:
        step = mngr.latest_step()
        if step is None:
            raise FileNotFoundError(f"No tlc-jax checkpoint in {folder}; point "
                                    f"config.model.pretrained at a run's work directory.")
        saved = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore()))["state"]
    out = {}
    for collection in ("params", "batch_stats"):
        out[collection] = dict(template[collection])
        for name, fresh in template[collection].items():
            old = saved[collection].get(name)
            if old is None:
                raise ValueError(f"{folder}: the checkpoint has no {collection}/{name}; "
                                 f"it is a run of another architecture.")
            same = jax.tree.structure(old) == jax.tree.structure(fresh) and all(
                np.shape(a) == np.shape(b)
                for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(fresh)))
            if same:
                out[collection][name] = jax.tree.map(np.asarray, old)
            elif name not in ("classifier", "fc"):
                raise ValueError(f"{folder}: {collection}/{name} differs in shape from "
                                 f"this model's; it is a run of another architecture.")
            else:
                logging.info("Head %s re-initialised: the classes differ.", name)
    return out


# ----------------------------------------------------------------------------------
# Train state, optimizers and the two jitted steps
# ----------------------------------------------------------------------------------

@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    cot_opt_state: Any  # The complement step's own optimizer state (COT), else None.


def make_optimizer(kind: str, learning_rate: float | optax.Schedule, *,
                   momentum: float = 0.9, weight_decay: float = 0.0,
                   frozen: Any) -> optax.GradientTransformation:
    """`kind` ("adam" or "sgd") on trained parameters; frozen ones get no update."""
    if kind == "adam":
        tx = optax.adam(learning_rate)
    else:
        tx = optax.sgd(learning_rate, momentum=momentum)
    if weight_decay:
        tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
    labels = jax.tree.map(lambda f: "frozen" if f else "trained", frozen)
    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the jitted train step closes over (static for compilation)."""

    num_classes: int
    frozen_stages: int
    loss: str  # "ce", "focal" or "cot"
    focal_gamma: float
    augment: augment.AugmentOptions | None  # None: no augmentation.


def make_train_step(model, tx, cot_tx, cfg: StepConfig) -> Callable:
    """(state, batch, quotas, rng) -> (state, metrics); pure, for jax.jit.

    `quotas` is traced: a new quota vector never recompiles. The step reports the
    class counts it saw and how far they are from the quotas (0 under active sampling).
    """

    def forward(params, batch_stats, images):
        logits, new = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                  train=True, frozen_stages=cfg.frozen_stages,
                                  mutable=["batch_stats"])
        return logits.astype(jnp.float32), new["batch_stats"]

    def primary_loss(params, batch_stats, images, labels):
        logits, new_stats = forward(params, batch_stats, images)
        if cfg.loss == "focal":
            per_example = losses.focal_loss(logits, labels, cfg.focal_gamma)
        else:  # "ce", and COT's first update.
            per_example = losses.cross_entropy(logits, labels)
        return per_example.mean(), (logits, new_stats)

    def complement_loss(params, batch_stats, images, labels):
        logits, new_stats = forward(params, batch_stats, images)
        return losses.complement_entropy(logits, labels).mean(), new_stats

    def train_step(state: TrainState, batch: dict, quotas: jax.Array, rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        images = augment.to_float(batch["image"])
        if cfg.augment is not None:
            images = augment.augment_batch(rng, images, cfg.augment)
        images, labels = normalize(images), batch["label"]

        grad_fn = jax.value_and_grad(primary_loss, has_aux=True)
        (loss, (logits, batch_stats)), grads = grad_fn(state.params, state.batch_stats,
                                                       images, labels)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        out = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        cot_opt_state = state.cot_opt_state
        if cfg.loss == "cot":  # Second update: a fresh forward pass, its own optimizer.
            (c_loss, batch_stats), c_grads = jax.value_and_grad(
                complement_loss, has_aux=True)(params, batch_stats, images, labels)
            c_updates, cot_opt_state = cot_tx.update(c_grads, cot_opt_state, params)
            params = optax.apply_updates(params, c_updates)
            out["complement_loss"] = c_loss
        counts = jnp.bincount(labels, length=cfg.num_classes)
        out.update(accuracy=jnp.mean(jnp.argmax(logits, -1) == labels),
                   class_counts=counts,
                   # 0 under active sampling; instance sampling passes no quotas.
                   quota_mismatch=jnp.where(quotas.sum() > 0,
                                            jnp.sum(jnp.abs(counts - quotas)), -1))
        return TrainState(state.step + 1, params, batch_stats, opt_state,
                          cot_opt_state), out

    return train_step


def make_eval_step(model) -> Callable:
    """(variables, images, labels, valid, confusion) -> confusion, accumulated on device."""

    def eval_step(variables, images, labels, valid, confusion):
        logits = model.apply(variables, normalize(augment.to_float(images)), train=False)
        return metrics.accumulate_confusion(confusion, labels, jnp.argmax(logits, -1),
                                            valid)

    return eval_step


# ----------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------

class Trainer:
    """Holds what the phases share: mesh, data, model, compiled steps, checkpoints."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                 overwrite: bool = False):
        validate_config(config)
        self.config = config
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        claim_workdir(self.workdir, config, overwrite)
        self.writer = MetricWriter(self.workdir)

        # --- mesh ---
        self.mesh = Mesh(np.array(jax.devices()), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.data_sharding = NamedSharding(self.mesh, P("data"))
        self.num_devices = self.mesh.size

        # --- data ---
        self.data = prepare_data(config.data, config.seed, self.workdir)
        self.num_classes = self.data.train.num_classes
        self.train_counts = self.data.train.class_counts()  # Before offline copies.
        logging.info("train %d images %s, contrast %d, test %d", len(self.data.train),
                     self.train_counts.tolist(), len(self.data.contrast),
                     len(self.data.test))
        if config.augment.offline_copies > 0:
            self.data = dataclasses.replace(self.data, train=offline_augmented(
                self.data.train, config.augment.offline_copies, config.seed,
                augment_options(config.augment)))

        # --- model ---
        m = config.model
        kwargs = dict(num_classes=self.num_classes, in_channels=config.data.channels,
                      dtype=m.dtype, memory=m.memory, remat_policy=m.remat_policy)
        if m.name == "densenet_bc":
            kwargs.update(depth=m.depth, growth_rate=m.growth_rate)
        self.model = create_model(m.name, **{**kwargs, "dtype": jnp.dtype(m.dtype)})
        self.image_shape = self.data.train.images.shape[1:]
        if self.writer.enabled:  # What inference needs to rebuild the model (live/).
            write_json_atomic(self.workdir / MODEL_FILE, {
                "name": m.name, "kwargs": kwargs, "image_shape": list(self.image_shape),
                "class_names": list(self.data.train.class_names)})
        self.eval_step = jax.jit(make_eval_step(self.model), donate_argnums=(4,))
        self.history: dict[str, list] = {"quotas": [], "contrast_f1": [], "epochs": []}
        self._contrast_cache: tuple = (None, None)

    # --- state ---------------------------------------------------------------------

    def init_variables(self, rng: jax.Array) -> dict:
        """Random init, ImageNet weights or an earlier run's, replicated on the mesh."""
        m = self.config.model
        dummy = jnp.zeros((1, *self.image_shape), jnp.float32)
        init = lambda key: self.model.init(key, dummy, train=False)
        shardings = jax.tree.map(lambda _: self.replicated, jax.eval_shape(init, rng))
        variables = jax.jit(init, out_shardings=shardings)(rng)
        if m.pretrained and Path(m.pretrained).is_dir():  # An earlier tlc-jax run.
            loaded = transfer_from_run(Path(m.pretrained), jax.device_get(variables))
            variables = jax.device_put(loaded, shardings)
        elif m.pretrained:  # torchvision weights: "imagenet" or a file.
            from tlc_jax.pretrained import load_pretrained

            weights = None if m.pretrained == "imagenet" else m.pretrained
            loaded = load_pretrained(self.model, weights, rng=rng, head="replace",
                                     input_shape=(1, *self.image_shape),
                                     cache_dir=m.weights_dir or None)
            variables = jax.device_put(loaded, shardings)
        return variables

    def phase_optimizers(self, phase: str, params: Any, steps_per_epoch: int):
        t = self.config.train
        if phase == "warmup":
            frozen_stages = self.model.num_stages  # Everything but the classifier.
            tx = make_optimizer("adam", self.config.warmup.learning_rate,
                                frozen=frozen_mask(self.model, params, frozen_stages))
            return frozen_stages, tx, None
        frozen = frozen_mask(self.model, params, t.frozen_stages)
        lr = t.learning_rate
        if t.lr_schedule == "cosine":
            lr = optax.cosine_decay_schedule(t.learning_rate, t.epochs * steps_per_epoch)
        make = lambda: make_optimizer("sgd", lr, momentum=t.momentum,
                                      weight_decay=t.weight_decay, frozen=frozen)
        return t.frozen_stages, make(), (make() if t.loss == "cot" else None)

    def make_state(self, variables: dict, tx, cot_tx) -> TrainState:
        def build(params, batch_stats):
            return TrainState(jnp.zeros((), jnp.int32), params, batch_stats,
                              tx.init(params), cot_tx.init(params) if cot_tx else None)

        abstract = jax.eval_shape(build, variables["params"], variables["batch_stats"])
        shardings = jax.tree.map(lambda _: self.replicated, abstract)
        return jax.jit(build, out_shardings=shardings)(variables["params"],
                                                       variables["batch_stats"])

    def compile_train_step(self, state: TrainState, tx, cot_tx, step_cfg: StepConfig):
        state_sh = jax.tree.map(lambda _: self.replicated, state)
        batch_sh = {"image": self.data_sharding, "label": self.data_sharding}
        return jax.jit(make_train_step(self.model, tx, cot_tx, step_cfg),
                       in_shardings=(state_sh, batch_sh, self.replicated, self.replicated),
                       out_shardings=(state_sh, self.replicated), donate_argnums=(0,))

    # --- evaluation ----------------------------------------------------------------

    def confusion(self, state: TrainState, ds: ImageDataset) -> np.ndarray:
        """Confusion matrix over `ds`, in fixed-size padded batches (no recompiles)."""
        size = -(-self.config.eval.batch_size // self.num_devices) * self.num_devices
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        confusion = jax.device_put(jnp.zeros((self.num_classes,) * 2, jnp.int32),
                                   self.replicated)
        for start in range(0, len(ds), size):
            idx = np.arange(start, start + size)
            valid = idx < len(ds)
            idx = np.where(valid, idx, 0)
            batch = [jax.device_put(a, self.data_sharding)
                     for a in (ds.images[idx], ds.labels[idx], valid)]
            confusion = self.eval_step(variables, *batch, confusion)
        return np.asarray(confusion)

    # --- checkpoints ---------------------------------------------------------------

    def checkpoint_manager(self) -> ocp.CheckpointManager:
        """Asynchronous, atomic; keeps the last two and the best by contrast macro-F1."""
        policies = ocp.checkpoint_managers
        keep = policies.AnyPreservationPolicy([
            policies.LatestN(n=2),
            policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1)])
        return ocp.CheckpointManager(
            (self.workdir / "checkpoints").absolute(),
            options=ocp.CheckpointManagerOptions(create=True, preservation_policy=keep))

    def save(self, mngr, epoch_index: int, state, iterator, meta: dict,
             contrast_macro_f1: float) -> None:
        mngr.save(epoch_index, metrics={BEST_METRIC: contrast_macro_f1},
                  args=ocp.args.Composite(
                      state=ocp.args.StandardSave(state),
                      sampler=grain.checkpoint.CheckpointSave(iterator),
                      meta=ocp.args.JsonSave(meta)))

    # --- one phase -----------------------------------------------------------------

    def run_phase(self, phase: str, state_variables: dict, mngr, resume: dict | None,
                  rng: jax.Array) -> dict:
        c = self.config
        warmup = phase == "warmup"
        epochs = c.warmup.epochs if warmup else c.train.epochs
        active = (not warmup) and c.sampling.active
        if warmup:
            batch_size = c.warmup.batch_size
        else:
            batch_size = c.train.images_per_class * self.num_classes
        if batch_size % self.num_devices:
            raise ValueError(f"{phase} batch size {batch_size} must divide evenly over "
                             f"{self.num_devices} devices.")
        # Class-quota batches under active sampling; else uniform instance sampling
        # (the same sampler with every image in one class).
        labels = self.data.train.labels if active else np.zeros(len(self.data.train), int)
        sampler = QuotaSampler(labels, self.num_classes if active else 1, batch_size,
                               seed=c.seed + (0 if warmup else 1),
                               shard_index=jax.process_index(),
                               shard_count=jax.process_count())
        steps_per_epoch = sampler.steps_per_epoch
        frozen_stages, tx, cot_tx = self.phase_optimizers(phase, state_variables["params"],
                                                          steps_per_epoch)
        state = self.make_state(state_variables, tx, cot_tx)
        iterator = QuotaBatchIterator(sampler, ArrayBatchLoader(
            image=self.data.train.images, label=self.data.train.labels))
        start_epoch, f1_ema = 0, None
        if resume is not None and resume["meta"]["phase"] == phase:
            restored = mngr.restore(resume["step"], args=ocp.args.Composite(
                state=ocp.args.StandardRestore(state),
                sampler=grain.checkpoint.CheckpointRestore(iterator)))
            state = restored["state"]
            start_epoch = resume["meta"]["epoch"] + 1
            self.history = resume["meta"]["history"]
            f1_ema = resume["meta"].get("f1_ema")
            logging.info("Resumed %s after epoch %d of %d.", phase, start_epoch, epochs)

        online = c.augment.enabled and c.augment.offline_copies == 0
        step_cfg = StepConfig(
            num_classes=self.num_classes, frozen_stages=frozen_stages, loss=c.train.loss,
            focal_gamma=c.train.focal_gamma,
            augment=augment_options(c.augment) if online else None)
        if warmup and step_cfg.loss == "cot":  # COT's complement step only in fine-tuning.
            step_cfg = dataclasses.replace(step_cfg, loss="ce")
        train_step = self.compile_train_step(state, tx, cot_tx, step_cfg)
        self.train_step = train_step  # Exposed for tests (compilation counting).
        update_every = c.sampling.update_every_steps or steps_per_epoch
        epoch_offset = 0 if warmup else (c.warmup.epochs if c.warmup.enabled else 0)

        def device_quotas():  # Zeros under instance sampling: no quotas to meet.
            return jax.device_put(sampler.quotas if active else
                                  np.zeros(self.num_classes, np.int64), self.replicated)

        quotas = device_quotas()
        progress = Progress(phase, epochs * steps_per_epoch, batch_size,
                            done=start_epoch * steps_per_epoch)
        for epoch in range(start_epoch, epochs):
            t0 = time.time()
            for i in range(steps_per_epoch):
                batch = next(iterator)
                device_batch = {k: jax.make_array_from_process_local_data(
                    self.data_sharding, batch[k]) for k in ("image", "label")}
                state, out = train_step(state, device_batch, quotas, rng)
                global_step = epoch * steps_per_epoch + i + 1
                if global_step % c.train.log_every_steps == 0:
                    self.writer.write(global_step, phase, out)
                    progress.log(global_step, {"loss": out["loss"],
                                               "acc": out["accuracy"]})
                if active and global_step % update_every == 0:
                    f1_ema = self.update_quotas(state, iterator, f1_ema, phase,
                                                global_step)
                    quotas = device_quotas()
            loss = float(out["loss"])
            if not np.isfinite(loss):
                raise FloatingPointError(
                    f"Loss became {loss} in {phase} epoch {epoch + 1}; the last good "
                    f"checkpoint is kept in {self.workdir / 'checkpoints'}. Lower the "
                    f"learning rate (config.train.learning_rate).")
            contrast_f1 = self.contrast_f1(state, phase, (epoch + 1) * steps_per_epoch)
            record = {"phase": phase, "epoch": epoch + 1, "loss": loss,
                      "train_accuracy": float(out["accuracy"]),
                      "contrast_macro_f1": float(contrast_f1.mean()),
                      "seconds": round(time.time() - t0, 3)}
            self.history["epochs"].append(record)
            self.writer.write(epoch_offset + epoch + 1, "epoch",
                              {k: v for k, v in record.items() if k != "phase"})
            logging.info("%s epoch %d/%d: loss %.4f, train acc %.3f, contrast macro-F1 "
                         "%.3f, %.1fs", phase, epoch + 1, epochs, loss,
                         record["train_accuracy"], record["contrast_macro_f1"],
                         record["seconds"])
            if ((epoch + 1) % c.train.checkpoint_every_epochs == 0 or epoch + 1 == epochs):
                self.save(mngr, epoch_offset + epoch, state, iterator,
                          {"phase": phase, "epoch": epoch, "history": self.history,
                           "f1_ema": None if f1_ema is None else f1_ema.tolist()},
                          record["contrast_macro_f1"])
        mngr.wait_until_finished()
        iterator.close()
        return {"params": state.params, "batch_stats": state.batch_stats}, state

    def contrast_f1(self, state, phase: str, step: int) -> np.ndarray:
        """Per-class F1 on the contrast set, computed once per (phase, step)."""
        if self._contrast_cache[0] != (phase, step):
            confusion = self.confusion(state, self.data.contrast)
            self._contrast_cache = ((phase, step),
                                    quota_maths.precision_recall_f1(confusion)[2])
        return self._contrast_cache[1]

    def update_quotas(self, state, iterator: QuotaBatchIterator, f1_ema, phase: str,
                      step: int):
        """Eq. 4 from the contrast set's per-class F1; applies from the next batch."""
        c = self.config.sampling
        f1 = self.contrast_f1(state, phase, step)
        f1_ema = quota_maths.smooth_f1(f1_ema, f1, c.f1_momentum)
        new = quota_maths.update_quotas(f1_ema, iterator.sampler.batch_size,
                                        min_quota=c.min_quota)
        new[self.train_counts == 0] = 0  # Defensive: splits never empty a class.
        iterator.set_quotas(new)
        self.history["contrast_f1"].append(np.round(f1, 4).tolist())
        self.history["quotas"].append(new.tolist())
        self.writer.write(step, "quotas", {"contrast_macro_f1": f1.mean(),
                                           "contrast_f1": f1, "quotas": new})
        logging.info("contrast F1 %s -> quotas %s", np.round(f1, 2).tolist(), new.tolist())
        return f1_ema

    # --- everything ------------------------------------------------------------------

    def run(self) -> dict:
        c = self.config
        rng_init, rng_warm, rng_train = jax.random.split(jax.random.key(c.seed), 3)
        mngr = self.checkpoint_manager()
        resume = None
        if mngr.latest_step() is not None:
            step = mngr.latest_step()
            meta = mngr.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]
            resume = {"step": step, "meta": meta}
        variables = self.init_variables(rng_init)
        phases = (["warmup"] if c.warmup.enabled and c.warmup.epochs > 0 else []) + [
            "finetune"]
        if resume is not None:  # Skip the phases finished before the interruption.
            phases = phases[phases.index(resume["meta"]["phase"]):]
        try:
            for phase in phases:
                # A resumed phase restores its state (optimizer included) and goes on
                # from the epoch after the checkpoint; later phases start from its weights.
                variables, state = self.run_phase(
                    phase, variables, mngr, resume,
                    rng_warm if phase == "warmup" else rng_train)
                resume = None
            best = mngr.best_step()
        finally:  # Also on an error: finish the checkpoints already being written.
            mngr.wait_until_finished()
            mngr.close()
            self.writer.close()
        self.state = state  # The final train state, for callers that want the weights.
        return self.report(state, best)

    def report(self, state: TrainState, best_checkpoint: int | None) -> dict:
        """Test metrics of the final state, written to report.json."""
        test = metrics.classification_report(self.confusion(state, self.data.test),
                                             self.train_counts, self.data.train.class_names)
        report = {
            "test": test,
            "best_checkpoint": best_checkpoint,  # By contrast macro-F1; in checkpoints/.
            "data": {name: getattr(self.data, name).class_counts().tolist()
                     for name in ("train", "contrast", "test")},
            "history": self.history,
            "config": self.config.to_dict(),
        }
        if self.writer.enabled:  # Process 0 writes the files.
            write_json_atomic(self.workdir / "report.json", report)
            write_report_files(report, self.workdir)  # summary.md and plots/*.png
        return report


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False) -> dict:
    """Runs (or resumes) the configured training in `workdir`; returns the report.

    A work directory holding a run of an incompatible config is refused unless
    `overwrite`, which deletes that run's outputs first.
    """
    return Trainer(config, workdir, overwrite).run()
