"""train(cfg) -> RunResult: wires data -> task -> loop -> callbacks -> run folder."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from runassist.atomic import atomic_write, read_json, write_json
from runassist import runs
from runassist.cache import cached_encode
from runassist.config import Config
from runassist.errors import ConfigError, DataError, RunassistError
from runassist.inference import predict_examples, write_eval
from runassist.tasks import make_task
from runassist.tasks.base import TaskState
from runassist.train import checkpoint, packing
from runassist.train.callbacks import (BestModel, Callback, Checkpoint, EarlyStopping, MetricsLog, Progress,
                                       TrainContext, save_model_dir)
from runassist.train.engine import Engine
from runassist.train.loop import Position, StepInfo, plan, train_steps
from runassist.train.setup import apply_freeze, apply_lora, build_optimizer, build_scheduler, class_weights
from runassist.train.trackers import trackers


@dataclass(frozen=True)
class RunResult:
    run: Path
    summary: dict[str, Any]


@dataclass(frozen=True)
class Splits:
    train: list[Any]
    dev: list[Any] | None
    test: list[Any] | None


def replay_sample(old: list[Any], n_new: int, ratio: float, seed: int) -> list[Any]:
    """``ratio`` old examples per new one, drawn without replacement (seeded): the old labels keep
    being seen while the model learns the new data, so they are not forgotten."""
    import random

    k = min(len(old), round(ratio * n_new))
    return random.Random(seed).sample(old, k) if k < len(old) else list(old)


def read_splits(task: Any, cfg: Config, extra_known: Sequence[str] = ()) -> Splits:
    """Read every split and check labels before any compute is spent."""
    if not cfg.data.train:
        raise RunassistError("data.train: not set; give a file or an asset alias, e.g. data.train=wnut16:train")
    d = cfg.data
    train = task.read(d.train)[:d.max_train_examples]
    if d.train_fraction is not None and d.train_fraction < 1:
        train = sample_covering(task, train, d.train_fraction, seed=cfg.train.seed)
    if d.replay:
        train = train + replay_sample(task.read(d.replay), len(train), d.replay_ratio, cfg.train.seed)
    dev = task.read(d.dev)[:d.max_eval_examples] if d.dev else None
    test = task.read(d.test)[:d.max_eval_examples] if d.test else None
    known = set(task.label_counts(train)) | set(extra_known)
    for spec, examples in ((cfg.data.dev, dev), (cfg.data.test, test)):
        if examples is None:
            continue
        unseen = sorted(set(task.label_counts(examples)) - known)
        if unseen:
            raise DataError(spec, None, f"labels never seen in training data: {', '.join(unseen)} "
                                        f"(run `runassist check-data` for the lines)")
    return Splits(train, task.dev_examples(dev) if dev is not None else None, test)


def sample_covering(task: Any, examples: list[Any], fraction: float, *, seed: int) -> list[Any]:
    """A seeded sample of ``fraction`` of the examples, in file order, that still holds every label
    the full set has (a label missing from training would fail the run at the dev check): the
    first example of each missing label is added."""
    import math
    import random

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    chosen = set(order[:max(1, math.ceil(fraction * len(examples)))])
    seen = set(task.label_counts([examples[i] for i in chosen]))
    for i, example in enumerate(examples):
        missing = set(task.label_counts([example])) - seen
        if missing:
            chosen.add(i)
            seen |= missing
    return [examples[i] for i in sorted(chosen)]


def train(cfg: Config, *, resume: Path | None = None, progress: bool = True, callbacks: Sequence[Callback] = (),
          parent_run: str | None = None) -> RunResult:
    """``callbacks``: more callbacks after the run's own (a search trial's pruning); ``parent_run``: the
    MLflow run this run's MLflow run is a child of (a search study's)."""
    from runassist import env
    from runassist.assets import resolve_model

    found = None
    if resume is not None:
        resume = runs.require(Path(resume), "config.yaml")
        # None: killed before its first checkpoint; the run starts over, with its own config and seed.
        found = checkpoint.find(resume / "checkpoints" / "last")
        status = read_json(resume / "summary.json").get("status") if (resume / "summary.json").exists() else None
        if status == "finished":
            raise RunassistError(f"{resume}: the run already finished; nothing to resume (to train on, start a "
                                 f"new run with model.source={resume}/model)")
        cfg = runs.load_config(resume)

    tc = cfg.train
    facts = env.collect(check_hub=False)  # now, not at `env` time: the cores free as training starts
    torch.set_num_threads(tc.threads or env.choose_threads(facts))
    torch.manual_seed(tc.seed)

    task = make_task(cfg)
    source = resolve_model(cfg.model.source)
    kept = _kept_labels(source) if tc.extend_labels else None
    splits = read_splits(task, cfg, kept or ())
    task.check_source(source)
    processor = task.load_processor(source)
    state = TaskState(labels=task.label_set(splits.train), extras=task.initial_extras(splits.train))
    if kept is not None and state.labels is not None:
        state.labels = kept + [label for label in state.labels if label not in kept]

    engine = Engine(precision=tc.precision, bf16_fast_cpu=env.bf16_fast(facts))
    run = resume or _create_run(cfg, engine, facts)
    if engine.is_main:
        write_json(run / "labels.json", {"task": task.name, "labels": state.labels})
        write_json(run / "summary.json", {"task": task.name, "model": cfg.model.source, "status": "running",
                                          "owner": runs.owner()})

    # Tokenised once per (data, tokenizer, settings) and shared by every run under output.dir.
    cache_dir = Path(cfg.output.dir) / ".cache"
    train_features = cached_encode(task, splits.train, processor, state, cache_dir=cache_dir)
    dev_features = cached_encode(task, splits.dev, processor, state, cache_dir=cache_dir) if splits.dev else None
    if not train_features:
        raise DataError(cfg.data.train, None, "no training examples")

    model = task.build_model(source, state, dropout=tc.dropout)
    if kept is not None and state.labels is not None and len(state.labels) > len(kept):
        from runassist.tasks.hf import keep_head_rows

        keep_head_rows(model, source, len(kept), len(state.labels))
    frozen = apply_freeze(model, tc.freeze)
    lora = tc.lora if tc.lora is not None else task.default_lora(model)  # a large chat model: LoRA by default
    if lora is not None:
        if task.peft_task_type is None:
            raise ConfigError(f"train.lora: a {task.name} model has no LoRA task type (its head is runassist's own); "
                              "leave train.lora empty, or freeze layers with train.freeze")
        model = apply_lora(model, lora, task_type=task.peft_task_type)
    if tc.gradient_checkpointing:
        if not hasattr(model, "gradient_checkpointing_enable"):
            raise ConfigError(f"train.gradient_checkpointing: {type(model).__name__} cannot recompute activations")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(getattr(model, "config", None), "use_cache"):
            model.config.use_cache = False  # a cache is useless while training and clashes with checkpointing
    model.to(engine.device)
    step_kernels = engine.fast_cpu_step(model)
    batching, why, pack_settings = packing.choose(
        tc.batching, packs=task.capabilities.packs, model=model, features=train_features,
        collate=lambda fs: task.collate(fs, processor), forward=task.forward,
        pad_id=getattr(processor, "pad_token_id", None))
    optimizer = build_optimizer(model, tc, engine.device)
    model = engine.prepare(model)
    if tc.compile:
        model = torch.compile(model)

    n_batches = -(-len(train_features) // tc.batch_size) // engine.world
    if n_batches < 1:
        raise DataError(cfg.data.train, None, f"{len(train_features)} training inputs make fewer batches of "
                                              f"{tc.batch_size} than there are processes ({engine.world})")
    schedule = plan(n_batches, grad_accum=tc.grad_accum, epochs=tc.epochs, max_steps=tc.max_steps)
    scheduler = build_scheduler(optimizer, tc, schedule.total_steps)
    weights = class_weights(tc.class_weights, state.labels, task.label_counts(splits.train))
    weights = weights.to(engine.device) if weights is not None else None

    es = tc.early_stopping
    metric = (es.metric if es and es.metric else task.headline)
    mode = (es.mode if es and es.mode else None) or (task.headline_mode if metric == task.headline else "max")
    ctx = TrainContext(run=run, engine=engine, model=model, optimizer=optimizer, scheduler=scheduler,
                       processor=processor, task=task, state=state, metric=metric,
                       mode=mode, total_steps=schedule.total_steps,
                       merge_lora=lora.merge if lora else True, train_features=train_features,
                       threads_seen=_threads_seen(facts, tc.threads), batching={"mode": batching, "why": why},
                       step_kernels=step_kernels)
    start = Position()
    pending_eval: float | None = None  # the epoch of an evaluation an interrupt cut short
    if resume is not None and found is None and engine.is_main:
        atomic_write(run / "metrics.jsonl", "")  # what the killed start logged is logged again
    if found is not None:
        start, saved = checkpoint.load(found, model=ctx.bare, optimizer=optimizer, scheduler=scheduler)
        _restore(ctx, saved)
        pending_eval = saved.get("pending_epoch") if saved.get("pending_eval") else None
        if engine.is_main:
            _truncate_metrics(run, start.step, evaluated=pending_eval is None)

    bar = Progress(enabled=progress)
    extra = list(callbacks)
    callbacks = [MetricsLog(tc.log_every), EarlyStopping(patience=es.patience if es else None,
                                                         min_delta=es.min_delta if es else 0.0),
                 BestModel(), Checkpoint(tc.checkpoint_every), bar,
                 *trackers(cfg.output, every=tc.log_every, parent_run=parent_run), *extra]
    eval_every = tc.eval_every
    loss_fn = lambda outputs, batch: task.loss(outputs, batch, weights)  # noqa: E731
    # Training batches get the task's augmentation (training_collate); evaluation uses collate, never augmented.
    collate = lambda fs, rng: task.training_collate(fs, processor, rng)  # noqa: E731
    if batching == "packed":
        pad_id = processor.pad_token_id
        collate = lambda fs, rng: packing.pack(fs, pad_id, **pack_settings)  # noqa: E731

    def evaluate(info: StepInfo) -> None:
        ctx.evaluation_starts(info.epoch_float)
        scores = _dev_scores(ctx, splits.dev, dev_features)
        for cb in callbacks:
            cb.on_eval(ctx, info, scores)
        ctx.evaluation_ends()

    if task.evaluate_before_training and splits.dev and found is None and start.step == 0:
        # What the model scored before any training: the figure the run's result is read against.
        ctx.dev_before = _headline(_dev_scores(ctx, splits.dev, dev_features))
        if engine.is_main:
            runs.append_metrics(run, {"kind": "before_training", "split": "dev", "step": 0, **ctx.dev_before})

    bar.start(ctx, start.step)
    for cb in callbacks:
        cb.on_start(ctx, resumed=resume is not None)
    info = None
    stopped = ctx.stop_reason or "completed"
    memory = contextlib.ExitStack()  # the heap as training wants it, until the loop ends
    memory.enter_context(engine.memory_for_training())
    try:
        if pending_eval is not None and splits.dev:  # interrupted while evaluating: finish that evaluation first
            info = StepInfo(position=start, loss=torch.zeros(()), lr=scheduler.get_last_lr()[0], tokens=0,
                            padded_tokens=0, epoch_float=pending_eval, end_of_epoch=start.batch == 0,
                            last=start.step >= schedule.total_steps)
            evaluate(info)
            stopped = ctx.stop_reason or stopped
        tick = time.perf_counter()
        for info in ([] if ctx.stop_reason else train_steps(model=model, optimizer=optimizer, scheduler=scheduler, engine=engine,
                                features=train_features, collate=collate, forward=task.forward, loss_fn=loss_fn,
                                batch_size=tc.batch_size, grad_accum=tc.grad_accum, grad_clip=tc.grad_clip,
                                seed=tc.seed, batching=batching,
                                total_steps=schedule.total_steps, start=start)):
            ctx.train_seconds += time.perf_counter() - tick
            ctx.tokens += info.tokens
            ctx.padded_tokens += info.padded_tokens
            ctx.rng = checkpoint.rng_state()
            due = info.end_of_epoch if eval_every == "epoch" else info.position.step % eval_every == 0
            ctx.eval_due = bool(splits.dev) and (due or info.last)
            for cb in callbacks:
                cb.on_step(ctx, info)
            if ctx.eval_due:
                evaluate(info)
            if ctx.stop_reason:
                stopped = ctx.stop_reason
                break
            tick = time.perf_counter()
        if info is not None and info.last and not ctx.stop_reason:
            stopped = "max_steps reached" if tc.max_steps and info.position.step >= tc.max_steps else "completed"
    except KeyboardInterrupt:
        bar.stop()
        if info is not None:
            Checkpoint.save(ctx, info.position, pending=ctx.in_eval)
        summary = _write_summary(ctx, cfg, status="interrupted", stopped="interrupted (Ctrl-C); resume with --resume",
                                 frozen=frozen, n_train=len(splits.train))
        _ended(callbacks, ctx, summary, "interrupted")
        raise
    except Exception as exc:
        _ended(callbacks, ctx, {"error": f"{type(exc).__name__}: {exc}"}, "failed")
        if isinstance(exc, RuntimeError) and ("out of memory" in str(exc).lower()
                                              or "can't allocate" in str(exc).lower()):
            raise RunassistError(f"train.batch_size={tc.batch_size} does not fit in memory; try a smaller "
                                 f"batch with train.grad_accum to keep the effective size") from None
        raise
    finally:
        bar.stop()
        memory.close()

    if not splits.dev or ctx.best_state is None:
        # No dev split: the last model is the kept one.
        ctx.best = ctx.best or {"step": info.position.step if info else 0, "metric": metric, "value": None}
        if engine.is_main:
            save_model_dir(ctx)
    else:
        ctx.bare.load_state_dict(ctx.best_state)
        if ctx.best_extras is not None:  # and the dev-fitted values that go with those weights
            ctx.state.extras.clear()
            ctx.state.extras.update(ctx.best_extras)
    reference = splits.dev or splits.test
    if reference and engine.is_main and state.labels is not None:  # generative tasks: no label mix to watch
        _write_profile(run, task, ctx.bare, processor, reference, state, engine)
    test_scores = None
    try:
        if splits.test is not None:
            predictions = predict_examples(task, ctx.bare, processor, splits.test, state,
                                           autocast=engine.autocast())
            test_scores = task.score(splits.test, predictions, state)
            if engine.is_main:
                write_eval(run, runs.split_name(cfg.data.test), task, splits.test, predictions, test_scores)
        in_sync = engine.replicas_in_sync(model)
        if in_sync is False:
            raise RunassistError("processes ended with different weights; the run is not trustworthy")
        summary = _write_summary(ctx, cfg, status="finished", stopped=stopped, frozen=frozen,
                                 n_train=len(splits.train), test=test_scores, replicas_in_sync=in_sync)
    except BaseException as exc:
        _ended(callbacks, ctx, {"error": f"{type(exc).__name__}: {exc}"},
               "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
        raise
    _ended(callbacks, ctx, summary, "finished")
    engine.wait()
    return RunResult(run=run, summary=summary)


def _write_profile(run: Path, task: Any, model: Any, processor: Any, examples: list[Any], state: TaskState,
                   engine: Engine) -> None:
    """RUN/model/profile.json: inputs and predictions of the kept model on dev, the reference drift is
    measured against (data_profile.py)."""
    from runassist.data_profile import build

    predictions = predict_examples(task, model, processor, examples, state, autocast=engine.autocast())
    outputs = [task.to_json(ex, p) for ex, p in zip(examples, predictions)]
    profile = build(task, examples, outputs, [task.confidence(p) for p in predictions], processor)
    write_json(run / "model" / "profile.json", {**profile, "split": "dev", "run": run.name})


def _kept_labels(source: str) -> list[str] | None:
    """The labels of a trained run's model folder (its task.json), in their order; None otherwise."""
    saved = Path(source) / "task.json"
    if not saved.exists():
        raise ConfigError(f"train.extend_labels: model.source {source} is not a trained run's model folder "
                          "(no task.json); give RUN/model")
    labels = read_json(saved).get("labels")
    return list(labels) if labels is not None else None


def _threads_seen(facts: dict[str, Any], configured: int | None) -> dict[str, Any]:
    """What summary.json says about the thread count: set in the config, or chosen from what the
    CPU looked like as training started (cores usable, held by others, and how that was seen)."""
    cpu = facts.get("cpu") or {}
    return {"set_by": "config" if configured else "free cores",
            **{k: cpu.get(k) for k in ("cores_usable", "busy_cores", "others_cores", "busy_source", "load_1m")}}


def _ended(callbacks: list[Callback], ctx: TrainContext, summary: dict[str, Any], status: str) -> None:
    for cb in callbacks:
        cb.on_end(ctx, summary, status=status)


def _create_run(cfg: Config, engine: Engine, facts: dict[str, Any]) -> Path:
    from accelerate.utils import broadcast_object_list

    holder = [str(runs.create(cfg, facts)) if engine.is_main else None]
    if engine.world > 1:
        broadcast_object_list(holder)
    return Path(holder[0])


def _dev_scores(ctx: TrainContext, examples: list[Any], features: list[Any]) -> dict[str, Any]:
    predictions = predict_examples(ctx.task, ctx.bare, ctx.processor, examples, ctx.state, features=features,
                                   autocast=ctx.engine.autocast(), fit=True)
    scores = ctx.task.score(examples, predictions, ctx.state)
    if ctx.metric not in scores:
        names = ", ".join(k for k, v in scores.items() if isinstance(v, (int, float)))
        raise RunassistError(f"train.early_stopping.metric: '{ctx.metric}' is not a score of this task; "
                             f"choose one of: {names}")
    return scores


def _restore(ctx: TrainContext, saved: dict[str, Any]) -> None:
    ctx.best = saved.get("best") or {}
    ctx.bad_evals = saved.get("bad_evals", 0)
    ctx.state.extras.update(saved.get("extras") or {})
    ctx.train_seconds = saved.get("train_seconds", 0.0)
    ctx.tokens = saved.get("tokens", 0)
    ctx.padded_tokens = saved.get("padded_tokens", 0)
    ctx.stop_reason = saved.get("stop_reason")
    ctx.best_state = saved.get("best_state")  # the best weights so far, as an uninterrupted run holds them
    ctx.best_extras = saved.get("best_extras")
    ctx.elapsed_offset = saved.get("elapsed", 0.0)
    ctx.dev_before = saved.get("dev_before")


def _truncate_metrics(run: Path, step: int, *, evaluated: bool = True) -> None:
    """Drop rows a killed run wrote after its last checkpoint; the resumed run writes them again.
    ``evaluated=False``: the evaluation at ``step`` is done again, so its row goes too."""
    import json

    rows = [r for r in runs.read_metrics(run)
            if r.get("step", 0) < step or (r.get("step", 0) == step and (evaluated or r.get("kind") != "eval"))]
    atomic_write(run / "metrics.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _headline(scores: dict[str, Any] | None) -> dict[str, Any] | None:
    if scores is None:
        return None
    return {k: v for k, v in scores.items() if isinstance(v, (int, float))}


def _inputs(ctx: TrainContext, n_train: int) -> dict[str, int] | None:
    """How the training examples became model inputs; ``examples_dropped``: those that gave none (a
    conversation with no assistant token within max_length)."""
    if not ctx.train_features:
        return None
    stats = ctx.task.feature_stats(ctx.train_features)
    return {**stats, "examples_dropped": n_train - stats["examples"]}


def _write_summary(ctx: TrainContext, cfg: Config, *, status: str, stopped: str, frozen: list[str], n_train: int,
                   test: dict[str, Any] | None = None, replicas_in_sync: bool | None = None) -> dict[str, Any]:
    total = ctx.padded_tokens
    trainable = sum(p.numel() for p in ctx.bare.parameters() if p.requires_grad)
    params = sum(p.numel() for p in ctx.bare.parameters())
    best = {k: v for k, v in ctx.best.items() if k != "scores"}
    summary = {
        "task": ctx.task.name,
        "model": cfg.model.source,
        "status": status,
        "stopped_because": stopped,
        "best": best,
        "dev": _headline(ctx.best.get("scores")),
        "dev_before_training": ctx.dev_before,
        "test": _headline(test),
        "steps": ctx.scheduler.last_epoch if hasattr(ctx.scheduler, "last_epoch") else None,
        "total_steps": ctx.total_steps,
        "train_examples": n_train,
        "inputs": _inputs(ctx, n_train),
        "train_seconds": round(ctx.train_seconds, 2),
        "tokens": ctx.tokens,
        "tokens_per_second": round(ctx.tokens / max(ctx.train_seconds, 1e-9), 1),
        "padding_fraction": round(1 - ctx.tokens / total, 4) if total else 0.0,
        "peak_memory_mb": round(ctx.engine.peak_memory_mb(), 1),
        "parameters": params,
        "trainable_parameters": trainable,
        "frozen_parameters": len(frozen),
        "engine": {**ctx.engine.describe(), "replicas_in_sync": replicas_in_sync},
        "threads": torch.get_num_threads(),
        "threads_chosen_from": ctx.threads_seen,
        "choices": {"optimizer": cfg.train.optimizer, "fused_optimizer": cfg.train.optimizer == "adamw",
                    "batching": ctx.batching, "compile": cfg.train.compile, "step_kernels": ctx.step_kernels,
                    "precision": ctx.engine.precision, "lora": hasattr(ctx.bare, "peft_config")},
        "extras": ctx.state.extras,
    }
    if ctx.engine.is_main:
        write_json(ctx.run / "summary.json", summary)
    return summary
