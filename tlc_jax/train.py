"""The TLC training algorithm, top to bottom (Liu et al. 2023, Engineering Applications of AI).

    data     test set -> long tail -> train / contrast split   (tlc_jax.data.prepare)
    model    DenseNet (ImageNet weights, or an earlier run's)  (tlc_jax.models,
             with a new head for the target classes             tlc_jax.pretrained)
    stages   the list `tlc_jax.stages.stages_from_config` gives - warm-up (only the
             classifier trains, instance sampling), then fine-tuning (first stages
             frozen, SGD, every batch holds quotas[k] images of class k), and cRT when
             configured - each run by `run_stage` with the jitted step of
             `tlc_jax.step`; every epoch starts with its batch composition, static
             quotas and class weights (`begin_epoch`)
    quotas   after each update period of an active stage, Eq. 4 from the contrast
             set's per-class F1 (`tlc_jax.active_sampling.next_quotas`)
    report   test metrics (after post-hoc corrections, when configured), many / medium
             / few-shot accuracy, quota and F1 history

Everything runs sharded over a 1-D ("data",) mesh of all devices: the batch is split,
the state replicated, BatchNorm statistics are over the global batch. The state is
checkpointed atomically with orbax every epoch together with the sampler, so a killed
run resumes where it stopped.

The same code runs as several processes (one per host, `tlc_jax.distributed`): every
process reads only its slice of each global batch and of each evaluation batch, the
confusion matrices are reduced over all devices, so every process computes the same F1
and quotas (checked: a disagreement stops the run), orbax saves and restores with all
processes (each writes its own sampler file), and process 0 alone holds the work
directory's lock, moves unreadable checkpoints aside and writes the report, plots and
TensorBoard files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
import traceback
import weakref
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tlc_jax import distributed, losses, metrics, models, quotas
from tlc_jax.active_sampling import ActiveSampling, ActiveState, next_quotas
from tlc_jax.config import validate as validate_config
from tlc_jax.data import ImageDataset
from tlc_jax.data.prepare import augment_options, offline_augmented, prepare
from tlc_jax.fileio import atomic_file, read_json, write_json_atomic
from tlc_jax.inference import (BEST_METRIC, CHECKPOINT_DIR, ModelSpec, restore_state,
                               saved_state_target)
from tlc_jax.input_pipeline import ArrayBatchLoader, QuotaBatchIterator
from tlc_jax.pretrained import head_name, initial_weights
from tlc_jax.report import write_report_files
from tlc_jax.sampling import QuotaSampler
from tlc_jax.stages import (ACTIVE, CLASS_BALANCED, INSTANCE, PROGRESSIVE, SQRT, Stage,
                            stages_from_config)
from tlc_jax.step import (StepConfig, TrainState, init_state, make_eval_step,
                          make_optimizer, make_train_step)
from tlc_jax.data.prepare import SPLIT_FILE
from tlc_jax.workdir import (CONFIG_FILE, EVALUATION_FIELDS, claim_workdir, config_changes, lock_workdir,
                             training_changes)
from tlc_jax.writers import MetricWriter, Progress


_STOP = threading.Event()


class Stopped(KeyboardInterrupt):
    """The run stopped between two steps on request (`request_stop`); with several
    processes, all of them at the same step."""


def request_stop() -> None:
    """Asks a running trainer to stop before its next step (raising Stopped, a
    KeyboardInterrupt, there), so no checkpoint write is interrupted half-way; the same
    command resumes. The command line calls this on the first Ctrl-C. With several
    processes the request is honoured where they all agree to stop: at the first check
    (every `config.train.log_every_steps` steps and at each epoch's start) after it
    reached any of them."""
    _STOP.set()


def stop_requested() -> bool:
    return _STOP.is_set()


class Trainer:
    """Holds what the stages share: mesh, data, model, compiled steps, checkpoints."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                 overwrite: bool = False):
        validate_config(config)
        self.config = config
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._unlock = lambda: None
        # One lock per run: several processes share the work directory (on a shared
        # filesystem), and process 0 stands for them all; the others learn whether it
        # got the lock, so a busy directory stops every process with the same error.
        distributed.all_or_none("locking the work directory", self._lock, user_error)
        try:
            self._setup(overwrite)
        except BaseException:
            self._unlock()  # A failed start leaves the directory free.
            raise

    def _lock(self) -> None:
        if jax.process_index() == 0:
            lock = lock_workdir(self.workdir)  # Held until run() ends or collected.
            self._unlock = weakref.finalize(self, os.close, lock)

    def _claim(self, overwrite: bool) -> None:
        if jax.process_index() == 0:  # Alone: it may delete another run's files.
            claim_workdir(self.workdir, self.config, overwrite)

    def _setup(self, overwrite: bool) -> None:
        """Claims the work directory; prepares data, model and stages."""
        config = self.config
        distributed.all_or_none("claiming the work directory",
                                lambda: self._claim(overwrite), user_error)
        self.writer = MetricWriter(self.workdir)

        # --- mesh ---
        self.mesh = Mesh(np.array(distributed.process_major_devices()), ("data",))
        self.replicated = NamedSharding(self.mesh, P())
        self.data_sharding = NamedSharding(self.mesh, P("data"))
        self.num_devices = self.mesh.size

        # --- data --- (every process prepares it, and checks that all got the same)
        self.data = distributed.all_or_none(
            "preparing the data", lambda: prepare(config.data, config.seed, self.workdir),
            user_error)
        distributed.assert_same("the data (split, labels, a sample of the images)",
                                *data_fingerprint(self.data))
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
        spec = ModelSpec(config.model.name,
                         models.config_kwargs(config.model, self.num_classes,
                                              config.data.channels),
                         self.data.train.images.shape[1:], self.data.train.class_names)
        self.model = spec.build()
        self.image_shape = spec.image_shape
        if self.writer.enabled:  # What inference needs to rebuild the model.
            spec.write(self.workdir)
        self.eval_step = jax.jit(make_eval_step(self.model), donate_argnums=(4,),
                                 out_shardings=self.replicated)

        # --- the stages, and what they record ---
        self.stages = stages_from_config(config, self.num_classes, self.model.num_stages)
        self.epoch_records: list[dict] = []  # One record per trained epoch, all stages.
        self.active = ActiveState()  # Quota updates and contrast F1, all stages.
        self._contrast_cache: tuple = (None, None)

    # --- state ---------------------------------------------------------------------

    def init_variables(self, rng: jax.Array) -> dict:
        """Random init, ImageNet weights or an earlier run's, replicated on the mesh."""
        m = self.config.model
        variables = models.init_variables(self.model, rng, (1, *self.image_shape),
                                          out_shardings=self.replicated)
        if m.pretrained:
            loaded = initial_weights(self.model, m.pretrained, jax.device_get(variables),
                                     rng=rng, input_shape=(1, *self.image_shape),
                                     cache_dir=m.weights_dir or None)
            variables = jax.device_put(loaded, self.replicated)
        return variables

    def optimizers(self, stage: Stage, params: Any, steps_per_epoch: int):
        """(tx, cot_tx): the stage's optimizer, and COT's second one (else None)."""
        frozen = models.frozen_mask(self.model, params, stage.frozen_stages)
        lr = stage.learning_rate
        if stage.lr_schedule == "cosine":
            lr = optax.cosine_decay_schedule(lr, stage.epochs * steps_per_epoch)
        make = lambda: make_optimizer(stage.optimizer, lr, momentum=stage.momentum,
                                      weight_decay=stage.weight_decay, frozen=frozen)
        return make(), (make() if stage.loss == "cot" else None)

    def make_state(self, variables: dict, tx, cot_tx) -> TrainState:
        build = lambda v: init_state(v, tx, cot_tx)
        abstract = jax.eval_shape(build, variables)
        shardings = jax.tree.map(lambda _: self.replicated, abstract)
        return jax.jit(build, out_shardings=shardings)(variables)

    def compile_train_step(self, state: TrainState, tx, cot_tx, step_cfg: StepConfig):
        state_sh = jax.tree.map(lambda _: self.replicated, state)
        batch_sh = {"image": self.data_sharding, "label": self.data_sharding}
        return jax.jit(make_train_step(self.model, tx, cot_tx, step_cfg),
                       in_shardings=(state_sh, batch_sh, self.replicated, self.replicated,
                                     self.replicated),
                       out_shardings=(state_sh, self.replicated), donate_argnums=(0,))

    def step_config(self, stage: Stage) -> StepConfig:
        c = self.config
        online = c.augment.enabled and c.augment.offline_copies == 0
        return StepConfig(
            num_classes=self.num_classes, frozen_stages=stage.frozen_stages,
            loss=stage.loss, focal_gamma=c.train.focal_gamma,
            augment=augment_options(c.augment) if online else None,
            class_counts=tuple(int(n) for n in self.train_counts),
            ldam_max_margin=c.train.ldam_max_margin, ldam_scale=c.train.ldam_scale,
            logit_adjust_tau=c.train.logit_adjust_tau)

    # --- batches ---------------------------------------------------------------------

    def batches(self, stage: Stage) -> dict[str, QuotaBatchIterator]:
        """The stage's batch iterators by checkpoint name: "sampler" for its
        composition, and "early_sampler" (instance) for the epochs deferred re-sampling
        keeps back. Instance sampling is the quota sampler with every image in one
        class; the other compositions are class quotas."""
        if stage.batch_size % self.num_devices:
            raise ValueError(f"{stage.name} batch size {stage.batch_size} must divide "
                             f"evenly over {self.num_devices} devices.")
        out = {"sampler": self.iterator(stage, stage.composition)}
        if stage.defer_epochs:
            out["early_sampler"] = self.iterator(stage, INSTANCE)
        return out

    def iterator(self, stage: Stage, composition: str) -> QuotaBatchIterator:
        by_class = composition != INSTANCE
        labels = self.data.train.labels if by_class else np.zeros(len(self.data.train), int)
        # This process's slice of every global batch, as grain shards over processes;
        # the mesh is process-major, so the slice lands on this process's devices.
        sampler = QuotaSampler(labels, self.num_classes if by_class else 1,
                               stage.batch_size, seed=self.config.seed + stage.seed_offset,
                               shard_options=grain.sharding.ShardByJaxProcess(
                                   drop_remainder=True))
        return QuotaBatchIterator(sampler, ArrayBatchLoader(
            image=self.data.train.images, label=self.data.train.labels))

    def begin_epoch(self, stage: Stage, epoch: int,
                    iterators: dict[str, QuotaBatchIterator]):
        """(iterator, the step's quota input, its class weights) for `epoch`: sets the
        epoch's static quotas (square-root, progressive) on the sampler."""
        composition = stage.composition_at(epoch)
        iterator = iterators["early_sampler" if composition != stage.composition
                             else "sampler"]
        if composition == CLASS_BALANCED:
            iterator.set_quotas(quotas.class_balanced_quotas(
                stage.batch_size, self.num_classes, self.train_counts))
        elif composition == SQRT:
            iterator.set_quotas(quotas.sqrt_quotas(self.train_counts, stage.batch_size))
        elif composition == PROGRESSIVE:
            iterator.set_quotas(quotas.progressive_quotas(
                self.train_counts, stage.batch_size, epoch, stage.epochs))
        weights = (losses.class_balanced_weights(self.train_counts,
                                                 self.config.train.cb_beta)
                   if stage.reweights_at(epoch) else np.ones(self.num_classes))
        return (iterator, self.step_quotas(composition, stage, iterator),
                jax.device_put(np.asarray(weights, np.float32), self.replicated))

    def step_quotas(self, composition: str, stage: Stage,
                    iterator: QuotaBatchIterator) -> jax.Array:
        """The train step's quota input: the sampler's quotas, or under instance
        sampling the training set's prior times the batch size."""
        q = (quotas.instance_quotas(self.train_counts, stage.batch_size)
             if composition == INSTANCE else iterator.sampler.quotas)
        return jax.device_put(np.asarray(q, np.float32), self.replicated)

    # --- evaluation ----------------------------------------------------------------

    def confusion(self, variables: dict, ds: ImageDataset) -> np.ndarray:
        """Confusion matrix over `ds`, in fixed-size padded batches (no recompiles).
        Each process reads its slice of every batch; the matrix is summed over all
        devices, so every process holds the whole set's."""
        size = -(-self.config.eval.batch_size // self.num_devices) * self.num_devices
        rows = self.process_rows(size)
        confusion = jax.device_put(jnp.zeros((self.num_classes,) * 2, jnp.int32),
                                   self.replicated)
        for start in range(0, len(ds), size):
            idx = np.arange(start, start + size)[rows]
            valid = idx < len(ds)
            idx = np.where(valid, idx, 0)
            batch = [jax.make_array_from_process_local_data(
                self.data_sharding, a, (size, *a.shape[1:]))
                for a in (ds.images[idx], ds.labels[idx], valid)]
            confusion = self.eval_step(variables, *batch, confusion)
        return np.asarray(confusion)

    def process_rows(self, size: int) -> slice:
        """The rows of a global batch of `size` that this process's devices hold: the
        process's contiguous block of the process-major mesh."""
        n, i = jax.process_count(), jax.process_index()
        return slice(i * size // n, (i + 1) * size // n)

    def posthoc(self, variables: dict, tau_norm: float | None = None,
                logit_adjust_tau: float | None = None) -> dict:
        """`variables` as evaluated: the classifier tau-normalised (Kang et al. 2020)
        and its bias shifted by -tau * log(training prior) (post-hoc logit adjustment,
        Menon et al. 2021), each when on (tau > 0; the config's taus unless given)."""
        e = self.config.eval
        tau_norm = e.tau_norm if tau_norm is None else tau_norm
        la_tau = e.logit_adjust_tau if logit_adjust_tau is None else logit_adjust_tau
        if not (tau_norm or la_tau):
            return variables
        head = head_name(variables)
        params = dict(variables["params"][head])
        if tau_norm:
            params["kernel"] = losses.tau_normalized_kernel(params["kernel"], tau_norm)
        if la_tau:
            prior = jnp.asarray(self.train_counts / self.train_counts.sum(), jnp.float32)
            params["bias"] = losses.posthoc_logit_adjustment(  # One row of logits.
                params["bias"][None], prior, la_tau)[0]
        return {**variables, "params": {**variables["params"], head: params}}

    def choose_tau(self, variables: dict) -> tuple[dict, dict | None]:
        """With eval.tau_candidates: (`variables` corrected with the candidate tau of
        the best contrast-set balanced accuracy - the first listed on a tie - and a record
        of the choice); else (`posthoc(variables)`, None). The test set is not read."""
        e = self.config.eval
        if not e.tau_candidates:
            return self.posthoc(variables), None
        field = "tau_norm" if e.tau_norm else "logit_adjust_tau"
        scores = [metrics.classification_report(self.confusion(
            self.posthoc(variables, **{field: float(tau)}), self.data.contrast)
        )["balanced_accuracy"] for tau in e.tau_candidates]
        chosen = float(e.tau_candidates[int(np.argmax(scores))])
        logging.info("eval.%s = %g chosen on the contrast set (balanced accuracy %s for "
                     "%s)", field, chosen, np.round(scores, 4).tolist(),
                     list(e.tau_candidates))
        return self.posthoc(variables, **{field: chosen}), {
            "field": f"eval.{field}", "chosen": chosen,
            "candidates": [float(t) for t in e.tau_candidates],
            "contrast_balanced_accuracy": [float(x) for x in scores]}

    def contrast_confusion(self, state, stage: Stage, step: int) -> np.ndarray:
        """The contrast set's confusion matrix, computed once per (stage, step)."""
        if self._contrast_cache[0] != (stage.name, step):
            self._contrast_cache = ((stage.name, step), self.confusion(
                variables_of(state), self.data.contrast))
        return self._contrast_cache[1]

    def contrast_f1(self, state, stage: Stage, step: int) -> np.ndarray:
        """Per-class F1 on the contrast set (Eq. 3)."""
        return metrics.precision_recall_f1(self.contrast_confusion(state, stage, step))[2]

    def update_quotas(self, stage: Stage, state, iterator: QuotaBatchIterator,
                      step: int) -> jax.Array:
        """Eq. 4 from the contrast set's per-class score (F1 by default); applies from
        the next batch. Returns the step's new quota input."""
        s = self.config.sampling
        policy = ActiveSampling(stage.batch_size, self.train_counts, s.min_quota,
                                s.f1_momentum, signal=s.signal,
                                balanced=s.balanced_contrast, mix_balanced=s.mix_balanced)
        confusion = self.contrast_confusion(state, stage, step)
        self.active, new = next_quotas(policy, self.active, confusion)
        # Every process must go on with the same quotas (its slice of the same batch).
        distributed.assert_same(f"the contrast-set confusion matrix and the quotas after "
                                f"{stage.name} step {step}", confusion, new)
        iterator.set_quotas(new)
        f1 = self.contrast_f1(state, stage, step)
        self.writer.write(step, "quotas", {"contrast_macro_f1": f1.mean(),
                                           "contrast_f1": f1, "quotas": new})
        logging.debug("contrast F1 %s -> quotas %s", np.round(f1, 2).tolist(), new.tolist())
        return self.step_quotas(ACTIVE, stage, iterator)

    # --- checkpoints ---------------------------------------------------------------

    def checkpoint_manager(self) -> ocp.CheckpointManager:
        """Asynchronous, atomic; keeps the last two and the best by contrast macro-F1
        (the metric is written with each checkpoint, so `best_step` holds across
        restarts)."""
        policies = ocp.checkpoint_managers
        keep = policies.AnyPreservationPolicy([
            policies.LatestN(n=2),
            policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1)])
        return ocp.CheckpointManager(
            (self.workdir / CHECKPOINT_DIR).absolute(),
            options=ocp.CheckpointManagerOptions(
                create=True, preservation_policy=keep,
                best_fn=lambda m: m[BEST_METRIC], best_mode="max"))

    def find_resume(self, mngr) -> dict | None:
        """The newest checkpoint that restores completely, as {"step", "meta"}; None
        for a fresh run. Newer ones that do not restore (a truncated tensor file, a
        damaged JSON) are moved out of the way into checkpoints_unreadable/ - kept, not
        deleted - with a warning saying which and why.

        With several processes all of them try each checkpoint together (orbax reads
        collectively); one that fails on any process is set aside by process 0 alone,
        and all go on from the same step (checked)."""
        steps = sorted(mngr.all_steps(), reverse=True)
        distributed.assert_same("the checkpoints found in the work directory", steps)
        for step in steps:
            try:
                target = saved_state_target(self.workdir / CHECKPOINT_DIR, step,
                                            self.replicated)  # On whatever devices.
                restored = mngr.restore(step, args=ocp.args.Composite(
                    meta=ocp.args.JsonRestore(), state=ocp.args.StandardRestore(target)))
                meta = restored["meta"]
                if not isinstance(meta, dict) or "phase" not in meta:
                    raise ValueError(f"its meta data is not a tlc-jax record: {meta!r:.80}")
                error = None
            except Exception as e:  # noqa: BLE001 - any failure to read means skip it.
                error = e
            if not distributed.any_process(error is not None):
                distributed.assert_same("the checkpoint to resume from", step,
                                        json.dumps(meta, sort_keys=True))
                return {"step": step, "meta": meta}
            aside = self.workdir / "checkpoints_unreadable" / str(step)
            if jax.process_index() == 0:
                aside.parent.mkdir(exist_ok=True)
                os.replace(self.workdir / CHECKPOINT_DIR / str(step), aside)
            reason = ("it does not restore on another process" if error is None else
                      f"{type(error).__name__}: "
                      f"{str(error).splitlines()[0][:200] if str(error) else ''}")
            logging.warning("Checkpoint %d does not restore (%s); moved to %s, trying the "
                            "one before.", step, reason, aside)
            distributed.barrier(f"checkpoint {step} set aside")
            mngr.reload()
        return None

    def save(self, mngr, epoch_index: int, state, iterators: dict, meta: dict,
             contrast_macro_f1: float) -> None:
        samplers = {name: grain.checkpoint.CheckpointSave(it)
                    for name, it in iterators.items()}
        mngr.save(epoch_index, metrics={BEST_METRIC: contrast_macro_f1},
                  args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          meta=ocp.args.JsonSave(meta), **samplers))

    def checkpoint_meta(self, stage: Stage, epoch: int) -> dict:
        active = self.active.to_json()
        return {"phase": stage.name, "epoch": epoch, "f1_ema": active["f1_ema"],
                "history": self.history()}

    def restore(self, mngr, resume: dict, state: TrainState,
                iterators: dict) -> tuple[TrainState, int]:
        """The stage's state and samplers from the checkpoint; the epoch to go on from."""
        distributed.all_or_none(
            "restoring the samplers",
            lambda: self.check_process_count(resume["step"], iterators), user_error)
        samplers = {name: grain.checkpoint.CheckpointRestore(it)
                    for name, it in iterators.items()}
        restored = mngr.restore(resume["step"], args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state), **samplers))
        meta = resume["meta"]
        self.epoch_records = list(meta["history"]["epochs"])
        self.active = ActiveState.from_json({**meta["history"],
                                             "f1_ema": meta.get("f1_ema")})
        return restored["state"], meta["epoch"] + 1

    def check_process_count(self, step: int, iterators: dict) -> None:
        """Each process saved its own sampler file (grain's process_<i>-of-<n>.json);
        a run resumes with as many processes as wrote the checkpoint."""
        n = jax.process_count()
        for name in iterators:
            folder = self.workdir / CHECKPOINT_DIR / str(step) / name
            mine = folder / f"process_{jax.process_index()}-of-{n}.json"
            if folder.is_dir() and not mine.exists():
                found = sorted(p.name for p in folder.glob("process_*-of-*.json"))
                counts = sorted({f.rsplit("-of-", 1)[1][:-5] for f in found})
                raise ValueError(
                    f"Checkpoint {step} in {self.workdir / CHECKPOINT_DIR} was written by "
                    f"a run of {' or '.join(counts) or 'another number of'} processes; "
                    f"this run has {n}. Resume it with the same number of processes "
                    f"(each saved its own data-iterator state).")

    # --- one stage -------------------------------------------------------------------

    def run_stage(self, stage: Stage, variables: dict, mngr, resume: dict | None,
                  rng: jax.Array, epoch_offset: int) -> tuple[dict, TrainState]:
        """Trains `stage` from `variables` (or from its checkpoint when resuming)."""
        iterators = self.batches(stage)
        steps_per_epoch = iterators["sampler"].sampler.steps_per_epoch
        if stage.reinit_head:
            variables = self.fresh_head(variables, rng)
        tx, cot_tx = self.optimizers(stage, variables["params"], steps_per_epoch)
        state = self.make_state(variables, tx, cot_tx)
        start_epoch = 0
        if resume is not None and resume["meta"]["phase"] == stage.name:
            state, start_epoch = self.restore(mngr, resume, state, iterators)
            logging.info("Resumed %s after epoch %d of %d.", stage.name, start_epoch,
                         stage.epochs)
        train_step = self.compile_train_step(state, tx, cot_tx, self.step_config(stage))
        progress = Progress(stage.name, stage.epochs * steps_per_epoch, stage.batch_size,
                            done=start_epoch * steps_per_epoch)
        progress.begin()
        for epoch in range(start_epoch, stage.epochs):
            t0 = time.time()
            iterator, quota_input, class_weights = self.begin_epoch(stage, epoch, iterators)
            state, out = self.train_epoch(stage, epoch, state, train_step, iterator,
                                          quota_input, class_weights, rng, progress)
            self.end_epoch(stage, epoch, state, out, mngr, iterators, steps_per_epoch,
                           epoch_offset, time.time() - t0)
        mngr.wait_until_finished()
        for iterator in iterators.values():
            iterator.close()
        return variables_of(state), state

    def fresh_head(self, variables: dict, rng: jax.Array) -> dict:
        """`variables` with the classifier initialised afresh (cRT)."""
        head = head_name(variables)
        fresh = models.init_variables(self.model, jax.random.fold_in(rng, 2**31 - 1),
                                      (1, *self.image_shape),
                                      out_shardings=self.replicated)["params"][head]
        return {**variables, "params": {**variables["params"], head: fresh}}

    def train_epoch(self, stage: Stage, epoch: int, state, train_step, iterator,
                    quota_input: jax.Array, class_weights: jax.Array, rng: jax.Array,
                    progress: Progress):
        """One pass of `steps_per_epoch` steps; quota updates as they fall due."""
        steps_per_epoch = iterator.sampler.steps_per_epoch
        update_every = stage.update_every_steps or steps_per_epoch
        active = stage.composition_at(epoch) == ACTIVE
        last_step = stage.epochs * steps_per_epoch  # No update after it: none would be used.
        log_every = self.config.train.log_every_steps
        sums = {"loss": 0.0, "accuracy": 0.0}  # Device scalars: no wait per step.
        for i in range(steps_per_epoch):
            if self.stop_due(i, log_every):  # Ctrl-C (see request_stop).
                raise Stopped("stopped between two steps")
            state, out = train_step(state, self.device_batch(next(iterator)),
                                    quota_input, rng, class_weights)
            sums = {k: sums[k] + out[k] for k in sums}
            global_step = epoch * steps_per_epoch + i + 1
            if global_step % log_every == 0:
                self.writer.write(global_step, stage.name, out)
            progress.step(global_step, lambda: {"loss": out["loss"],
                                                "acc": out["accuracy"]})
            if active and global_step % update_every == 0 and global_step < last_step:
                quota_input = self.update_quotas(stage, state, iterator, global_step)
        return state, {k: v / steps_per_epoch for k, v in sums.items()}  # Epoch means.

    def device_batch(self, batch: dict) -> dict[str, jax.Array]:
        """This process's slice of a global batch (images, labels) as arrays sharded
        over the mesh's "data" axis."""
        return {k: jax.make_array_from_process_local_data(self.data_sharding, batch[k])
                for k in ("image", "label")}

    @staticmethod
    def stop_due(i: int, every: int) -> bool:
        """Whether to stop before step `i` of an epoch: at once when a stop was
        requested, for a single process; several processes must stop at the same step,
        so they agree at the epoch's first step and every `every` steps (a collective:
        not at every step, which would wait for the device each time)."""
        if not distributed.is_multiprocess():
            return _STOP.is_set()
        return i % every == 0 and distributed.any_process(_STOP.is_set())

    def end_epoch(self, stage: Stage, epoch: int, state, out: dict, mngr,
                  iterators: dict, steps_per_epoch: int, epoch_offset: int,
                  seconds: float) -> None:
        """Stops on a non-finite loss; records (the epoch's mean loss and accuracy),
        logs and checkpoints the epoch."""
        loss = float(out["loss"])
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"Loss became {loss} in {stage.name} epoch {epoch + 1}; the last good "
                f"checkpoint is kept in {self.workdir / CHECKPOINT_DIR}. Lower the "
                f"learning rate (config.train.learning_rate).")
        contrast_f1 = self.contrast_f1(state, stage, (epoch + 1) * steps_per_epoch)
        record = {"phase": stage.name, "epoch": epoch + 1, "loss": loss,
                  "train_accuracy": float(out["accuracy"]),
                  "contrast_macro_f1": float(contrast_f1.mean()),
                  "seconds": round(seconds, 3)}
        self.epoch_records.append(record)
        self.writer.write(epoch_offset + epoch + 1, "epoch",
                          {k: v for k, v in record.items() if k != "phase"})
        logging.info("%s epoch %d/%d: loss %.4f, train acc %.3f, contrast macro-F1 %.3f, "
                     "%.1fs%s", stage.name, epoch + 1, stage.epochs, loss,
                     record["train_accuracy"], record["contrast_macro_f1"],
                     record["seconds"], self.quota_text(stage, epoch))
        every = self.config.train.checkpoint_every_epochs
        if (epoch + 1) % every == 0 or epoch + 1 == stage.epochs:
            self.save(mngr, epoch_offset + epoch, state, iterators,
                      self.checkpoint_meta(stage, epoch), record["contrast_macro_f1"])

    def quota_text(self, stage: Stage, epoch: int) -> str:
        """", quotas [..]" after an active epoch: the quotas in effect from here on
        (min-max for many classes); the per-class F1 behind them is logged at debug
        level."""
        if stage.composition_at(epoch) != ACTIVE or not self.active.quotas:
            return ""
        q = self.active.quotas[-1]
        return (f", quotas {list(q)}" if len(q) <= 20 else
                f", quotas {min(q)}-{max(q)} per class")

    # --- everything ------------------------------------------------------------------

    def run(self) -> dict:
        """Every stage in order (a resumed run skips those it had finished), then the
        test report. The work directory's lock is released at the end, however it ends."""
        _STOP.clear()
        try:
            return self._run()
        finally:
            self._unlock()

    def _run(self) -> dict:
        rng_init, *stage_rngs = jax.random.split(jax.random.key(self.config.seed), 3)
        mngr = self.checkpoint_manager()
        resume = self.find_resume(mngr)
        variables = self.init_variables(rng_init)
        names = [s.name for s in self.stages]
        first = names.index(resume["meta"]["phase"]) if resume is not None else 0
        try:
            for i, stage in enumerate(self.stages[first:], start=first):
                # A resumed stage restores its state (optimizer included) and goes on
                # from the epoch after the checkpoint; later stages start from its
                # weights.
                offset = sum(s.epochs for s in self.stages[:i])
                o = stage.seed_offset
                rng = (stage_rngs[o] if o < len(stage_rngs) else
                       jax.random.fold_in(stage_rngs[-1], o))
                variables, state = self.run_stage(stage, variables, mngr, resume, rng,
                                                  offset)
                resume = None
            best = mngr.best_step()
        finally:  # Also on an error: finish the checkpoints already being written.
            mngr.wait_until_finished()
            mngr.close()
            self.writer.close()
        self.state = state  # The final train state, for callers that want the weights.
        return self.report(state, best)

    def history(self) -> dict:
        """Quotas and contrast F1 per update, and one record per epoch."""
        active = self.active.to_json()
        return {"quotas": active["quotas"], "contrast_f1": active["contrast_f1"],
                "epochs": self.epoch_records}

    def metrics_on(self, variables: dict, split: str = "test") -> dict:
        """Classification metrics of `variables` on a split ("test" or "contrast")."""
        return metrics.classification_report(
            self.confusion(variables, getattr(self.data, split)), self.train_counts,
            self.data.train.class_names)

    def report(self, state: TrainState, best_checkpoint: int | None) -> dict:
        """Test (and contrast-set) metrics of the final state, written to report.json."""
        return self.write_report(variables_of(state), best_checkpoint, self.history())

    def evaluate_run(self, source: Path) -> dict:
        """The report of the finished run in `source` (same training config: checked
        by `evaluate_trained`) under this config's evaluation: its final weights, best
        checkpoint and history, nothing trained. Written to this work directory."""
        src = read_json(source / "report.json")
        step, state = restore_state(source, "latest", self.replicated)
        logging.info("Evaluating %s's final weights (checkpoint %d) with this config's "
                     "post-hoc corrections.", source, step)
        return self.write_report(
            {"params": state["params"], "batch_stats": state["batch_stats"]},
            src.get("best_checkpoint"), src["history"],
            evaluated_from=str(source.absolute()))

    def write_report(self, variables: dict, best_checkpoint: int | None,
                     history: dict, **extra) -> dict:
        """Metrics of `variables` (after the configured post-hoc corrections) on the
        test and contrast sets, with the run's history; report.json, summary.md and
        plots written by process 0."""
        evaluated, tau_choice = self.choose_tau(variables)
        test = self.metrics_on(evaluated)
        distributed.assert_same("the test-set confusion matrix",
                                test["confusion_matrix"])
        report = {
            "test": test,
            # The same on the contrast set: what choices between runs may read.
            "contrast": self.metrics_on(evaluated, "contrast"),
            "best_checkpoint": best_checkpoint,  # By contrast macro-F1; in checkpoints/.
            "data": {name: getattr(self.data, name).class_counts().tolist()
                     for name in ("train", "contrast", "test")},
            "history": history,
            "config": self.config.to_dict(),
            **extra,
        }
        if tau_choice is not None:
            report["tau_choice"] = tau_choice
        if evaluated is not variables:  # Post-hoc corrections on: the plain model too.
            report["test_without_posthoc"] = self.metrics_on(variables)
        if self.writer.enabled:  # Process 0 writes the files.
            write_json_atomic(self.workdir / "report.json", report)
            write_report_files(report, self.workdir)  # summary.md and plots/*.png
        return report


def variables_of(state: TrainState) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


def data_fingerprint(data) -> list[np.ndarray]:
    """What must be the same on every process: each split's labels and a sample of
    its images (at most ~256 per split, spread over it: cheap for any size)."""
    out = []
    for ds in (data.train, data.contrast, data.test):
        out += [ds.labels, ds.images[::max(1, len(ds) // 256)]]
    return out


_TLC_JAX = str(Path(__file__).resolve().parent)


def raised_by_tlc_jax(error: BaseException) -> bool:
    """Whether tlc-jax's own code raised `error` on purpose (its innermost frame is in
    this package): a message written for the user, not a failure inside a library."""
    tb = error.__traceback__
    if tb is None:
        return False
    innermost = traceback.extract_tb(tb)[-1].filename
    return str(Path(innermost).resolve()).startswith(_TLC_JAX)


def user_error(error: BaseException) -> bool:
    """A mistake in the command line, config, data or work directory, or processes of
    one run that disagree (their data differ): one line for the user, no traceback."""
    from tlc_jax.fileio import DownloadError
    from tlc_jax.workdir import WorkdirBusyError

    if isinstance(error, (WorkdirBusyError, DownloadError,
                          distributed.ProcessMismatchError)):
        return True
    if isinstance(error, distributed.OtherProcessError):
        return error.usage
    return (isinstance(error, (ValueError, FileNotFoundError, NotADirectoryError,
                               ImportError)) and raised_by_tlc_jax(error))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overwrite: bool = False, reevaluate: bool = False) -> dict:
    """Runs (or resumes) the configured training in `workdir`; returns the report.

    A work directory holding a run of an incompatible config is refused unless
    `overwrite`, which deletes that run's outputs first. A finished run of this config
    returns its recorded report at once, unless `reevaluate` (then its final
    checkpoint is evaluated and the report written again).
    """
    validate_config(config)
    report = finished_report(config, workdir, overwrite, reevaluate)
    return report if report is not None else Trainer(config, workdir, overwrite).run()


def finished_report(config: ml_collections.ConfigDict, workdir: str, overwrite: bool,
                    reevaluate: bool) -> dict | None:
    """The recorded report of this config's finished run in `workdir`, or None (none
    there, another config's, or `overwrite` / `reevaluate` asked for a new one)."""
    report_path = Path(workdir) / "report.json"
    finished = False
    if report_path.exists() and not (overwrite or reevaluate):
        recorded = read_json(Path(workdir) / CONFIG_FILE)
        finished = recorded is not None and not config_changes(
            recorded, json.loads(config.to_json()))
    # Several processes: process 0's view of the shared work directory decides.
    if not distributed.broadcast(int(finished)):
        return None
    logging.info("%s holds this config's finished run: its report is read, not "
                 "recomputed (--reevaluate evaluates it again).", workdir)
    return json.loads(report_path.read_text())


def evaluate_trained(config: ml_collections.ConfigDict, workdir: str, source: str,
                     overwrite: bool = False, reevaluate: bool = False) -> dict:
    """`config`'s report from the finished run in `source`, without training: for a
    config that differs from that run's only in how the final weights are evaluated
    (`tlc_jax.workdir.EVALUATION_FIELDS`: post-hoc logit adjustment, tau-normalisation),
    the training would be the same, so its final weights are evaluated with this
    config's corrections. The report (with "evaluated_from": `source`) goes to
    `workdir`, with the source's data split (checked against this config's). A finished
    report of this config in `workdir` is returned as `train_and_evaluate` does."""
    validate_config(config)
    source_dir = Path(source)
    recorded = read_json(source_dir / CONFIG_FILE)
    if recorded is None or not (source_dir / "report.json").is_file():
        raise FileNotFoundError(
            f"--evaluate_from={source}: no finished run there (it needs config.json and "
            f"report.json); train that run to the end first, or leave the flag out to "
            f"train this one.")
    changed = training_changes(recorded, json.loads(config.to_json()))
    if changed:
        details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:8])
        raise ValueError(
            f"--evaluate_from={source}: that run was trained with another config "
            f"({details}); only evaluation fields ({', '.join(sorted(EVALUATION_FIELDS))})"
            f" may differ. Leave the flag out to train this config.")
    if Path(workdir).absolute() == source_dir.absolute():
        raise ValueError(f"--evaluate_from names the work directory itself ({workdir}); "
                         f"give the finished run's directory, and a new --workdir.")
    report = finished_report(config, workdir, overwrite, reevaluate)
    if report is not None:
        return report
    split = Path(workdir) / SPLIT_FILE
    if jax.process_index() == 0 and (source_dir / SPLIT_FILE).is_file() and (
            overwrite or not split.exists()):
        Path(workdir).mkdir(parents=True, exist_ok=True)
        with atomic_file(split) as tmp:  # prepare() checks the split against it.
            shutil.copyfile(source_dir / SPLIT_FILE, tmp)
    distributed.barrier("the source run's split copied")
    trainer = Trainer(config, workdir, overwrite)
    try:
        return trainer.evaluate_run(source_dir)
    finally:
        trainer.writer.close()
        trainer._unlock()
