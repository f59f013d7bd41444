"""`runassist init TASK`: a config file that teaches, with a comment on every key."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from runassist.config import Config
from runassist.tasks import task_class, validate_config

COMMENTS: dict[str, str] = {
    "task": "what the model learns; its keys are the task's own (`runassist init NAME` for another task)",
    "model": "the pretrained model and how text is cut for it",
    "model.source": "minilm (packaged), a local model folder, a hub name, or runs/NAME/model to continue training",
    "model.max_length": "sub-tokens per model input, special tokens included; longer inputs are windowed or cut",
    "model.stride": "sub-tokens shared by neighbouring windows, so every word has context; empty: max_length // 4",
    "data": "where the examples are: a file path or a packaged alias (runassist assets)",
    "data.train": "training split: a file (.conll/.txt token-per-line, .jsonl, .csv, .tsv) or a packaged alias",
    "data.dev": "used for early stopping and choosing the kept model; leave empty to keep the last model",
    "data.test": "scored once at the end with the kept model; never used for choices",
    "data.format": "auto (from the extension) | conll | jsonl | csv | tsv",
    "data.scheme": "tag scheme of token-tagged files: auto | iob1 | iob2 | bioes (all converted to IOB2)",
    "data.text_column": "tabular data: column (or JSON key) with the text",
    "data.text_pair_column": "tabular data: second text for sentence-pair tasks (NLI, paraphrase); empty for none",
    "data.label_column": "tabular data: column with the label (a list, or joined by label_separator, for several)",
    "data.label_separator": "several labels in one CSV cell: e.g. '|' for 'sports|politics'",
    "data.max_train_examples": "use only the first N training examples (a quick experiment); empty: all",
    "data.max_eval_examples": "use only the first N examples of dev and of test; empty: all",
    "data.replay": "earlier training data replayed beside data.train so old labels are not forgotten "
                   "(runassist retrain sets it); empty: none",
    "data.replay_ratio": "old examples replayed per new one (a seeded sample)",
    "train": "hyperparameters",
    "train.epochs": "passes over the training data; early stopping usually ends sooner",
    "train.max_steps": "optional cap on optimizer updates (handy for smoke tests)",
    "train.batch_size": "examples per micro-batch; lower it and raise grad_accum if memory is short",
    "train.lr": "peak learning rate: ~5e-5 for base-size models, 1e-4..3e-4 for small ones like MiniLM",
    "train.optimizer": "adamw (fused kernel where available) | sgd (with momentum)",
    "train.momentum": "sgd only",
    "train.scheduler": "linear | cosine | constant, each after warm-up",
    "train.warmup_ratio": "share of steps spent ramping the learning rate up from 0",
    "train.weight_decay": "AdamW decay, not applied to biases and LayerNorm weights",
    "train.dropout": "override the model's dropout (e.g. 0.1-0.3 for small data); empty keeps the model's",
    "train.grad_clip": "clip the gradient norm; empty to disable",
    "train.grad_accum": "micro-batches per update: effective batch = batch_size x grad_accum x processes",
    "train.precision": "auto (bf16 where the CPU/GPU runs it fast) | fp32 | bf16 | fp16 (GPU only in practice)",
    "train.seed": "same seed, same data order and initialisation",
    "train.eval_every": "epoch, or a number of steps between dev evaluations",
    "train.log_every": "steps between lines in metrics.jsonl (logging syncs the device, so not every step)",
    "train.checkpoint_every": "steps between extra checkpoints; one is also written at every evaluation",
    "train.class_weights": "none | balanced | {label: weight}: weigh rare labels up in the loss",
    "train.freeze": "none | embeddings | bottom:N (embeddings + N lowest layers) | head_only",
    "train.lora": "LoRA adapters instead of full fine-tuning, e.g. {r: 8, alpha: 16}; empty for full (chat: LoRA "
                  "for large models anyway, see task.lora)",
    "train.lora.target_modules": "linear layers to adapt; empty: the attention's query and value projections",
    "train.early_stopping": "stop when the dev metric stops improving; empty to always run every epoch",
    "train.early_stopping.metric": "empty for the task's headline score (f1 for entities, accuracy for labels)",
    "train.early_stopping.mode": "max (higher is better) | min",
    "train.early_stopping.patience": "evaluations without improvement before stopping",
    "train.early_stopping.min_delta": "smallest change that counts as an improvement",
    "train.batching": ("auto | packed | grouped | random. packed: random batches, several sentences per row, "
                       "little padding (per-token tasks: NER); grouped: similar lengths together, fast, but cost "
                       "~0.02 F1 on WNUT-16 and nothing on Rotten Tomatoes; auto packs where the task and model "
                       "can and groups otherwise"),
    "train.gradient_checkpointing": "recompute activations during backward: much less memory, ~30% slower",
    "train.compile": ("torch.compile the model. On CPU it measured 0.89-0.96x eager's speed, plus 25-180 s of "
                      "compiling (bench/README.md), so it is off by default; maybe worth trying on a GPU"),
    "train.extend_labels": ("model.source is a trained run's model: keep its labels and head rows, add new "
                            "labels after them (runassist retrain sets it)"),
    "train.threads": "CPU threads; empty picks the free cores (a busy core makes 2 threads much slower than 1)",
    "data.train_fraction": "train on this fraction of the training examples (a seeded sample that keeps every "
                           "label); `runassist search --budget` sets it",
    "output": "where the run folder goes",
    "output.dir": "parent folder of run folders",
    "output.name": "run folder name; empty for a timestamp plus the task",
    "output.track": "also send metrics to: [] (none), mlflow, tensorboard (RUN/tb/), or [mlflow, tensorboard]",
    "output.tracking_uri": "MLflow tracking URI; empty for sqlite:///<output.dir>/mlflow.db (a server URL works too)",
    "output.experiment": "MLflow experiment the runs go into",
    "search": "`runassist search` only: the hyperparameter search; ignored by train",
    "search.space": "section.key: {low, high, log} or {choices: [...]}, e.g. train.lr: {low: 1e-5, high: 1e-3, log: true}",
    "search.metric": "the one dev score to optimise; empty for the task's headline",
    "search.direction": "max or min; empty for the headline's own direction",
    "search.seed": "sampler seed: the same seed repeats the same trials",
    "search.pruner": "stop bad trials early: auto (median; Hyperband from 30 trials), median, hyperband, none",
    "search.prune_after": "finished trials before the pruner judges any",
    "search.keep": "trials whose weights are kept (the best); the others keep scores and logs only",
}


def task_comments(task: str) -> dict[str, str]:
    """``task.KEY`` -> the comment the task's section gives its key (its ``Field`` description)."""
    comments = _field_comments("task", task_class(task).Section)
    comments["task.name"] = f"{task}; other tasks: `runassist init --list`"
    return comments


def _field_comments(prefix: str, model: type[BaseModel]) -> dict[str, str]:
    """``prefix.KEY`` -> its ``Field`` description, and the same for the keys of a nested section
    (``task.generation.max_new_tokens``)."""
    comments = {}
    for key, field in model.model_fields.items():
        comments[f"{prefix}.{key}"] = field.description or ""
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            comments.update(_field_comments(f"{prefix}.{key}", field.annotation))
    return comments


def render(task: str) -> str:
    cfg = default_config(task)
    comments = {**COMMENTS, **task_comments(task)}
    data = cfg.model_dump(mode="json")
    lines = [f"# runassist config for {task}. Any key can be overridden on the command line:",
             "#   runassist train this.yaml train.lr=3e-5 data.train=my.conll", ""]
    for section, values in data.items():
        lines.append(f"{section}:  # {comments[section]}")
        _render_mapping(lines, section, values, comments, indent=2)
        lines.append("")
    return "\n".join(lines)


def _render_mapping(lines: list[str], prefix: str, values: dict[str, Any], comments: dict[str, str], *,
                    indent: int) -> None:
    pad = " " * indent
    for key, value in values.items():
        path = f"{prefix}.{key}"
        comment = comments.get(path, "")
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:  # {comment}")
            _render_mapping(lines, path, value, comments, indent=indent + 2)
            continue
        text = "" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")
        if text.endswith("..."):
            text = text[:-3].strip()
        lines.append(f"{pad}{key}: {text}  # {comment}".replace(": " + "  #", ":  #"))


def default_config(task: str) -> Config:
    return validate_config(task_class(task).init_defaults())
