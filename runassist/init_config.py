"""`runassist init TASK`: a config file that teaches, with a comment on every key."""

from __future__ import annotations

from typing import Any

import yaml

from runassist.config import TASK_NAMES, Config, validate
from runassist.errors import ConfigError

# Defaults that differ by task. The NER demo values were chosen on WNUT-16 with MiniLM: small
# models need a higher learning rate and more epochs than the BERT-base recipe (5e-5 x 3 reaches
# test F1 0.27 there; 1e-4+ with early stopping reaches 0.45+).
_TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "ner": {"task": {"name": "ner"},
            "model": {"source": "minilm", "max_length": 128},
            "data": {"train": "wnut16:train", "dev": "wnut16:dev", "test": "wnut16:test"},
            "train": {"epochs": 8, "lr": 2e-4, "batch_size": 16}},
    "classify": {"task": {"name": "classify"},
                 "model": {"source": "minilm", "max_length": 64},
                 "data": {"train": "rotten-tomatoes:train", "dev": "rotten-tomatoes:dev",
                          "test": "rotten-tomatoes:test"},
                 "train": {"epochs": 2, "lr": 1e-4, "batch_size": 32}},
}

COMMENTS: dict[str, str] = {
    "task": "what the model learns",
    "task.name": "ner (tag words) | classify (label whole texts)",
    "task.multi_label": "classify: a text may carry several labels (sigmoid + thresholds tuned on dev)",
    "task.scoring": "ner: conlleval (the CoNLL-2000 rules, the usual one to report) | strict (exact IOB2 spans)",
    "model": "the pretrained model and how text is cut for it",
    "model.source": "minilm (packaged), a local model folder, a hub name, or runs/NAME/model to continue training",
    "model.max_length": "sub-tokens per window; longer inputs are windowed (ner) or cut (classify)",
    "model.stride": "sub-tokens shared by neighbouring windows, so every word has context; empty: max_length // 4",
    "model.long_text": "classify: truncate (keep the head) | windows (average logits over windows)",
    "data": "where the examples are: a file path or a packaged alias (runassist assets)",
    "data.train": "training split: .conll/.txt (token TAG per line) or .jsonl for ner; .csv/.tsv/.jsonl for classify",
    "data.dev": "used for early stopping and choosing the kept model; leave empty to keep the last model",
    "data.test": "scored once at the end with the kept model; never used for choices",
    "data.format": "auto (from the extension) | conll | jsonl | csv | tsv",
    "data.scheme": "ner tag scheme of the files: auto | iob1 | iob2 | bioes (all converted to IOB2)",
    "data.text_column": "classify: column (or JSON key) with the text",
    "data.text_pair_column": "classify: second text for sentence-pair tasks (NLI, paraphrase); empty for none",
    "data.label_column": "classify: column with the label (a list, or joined by label_separator, for multi-label)",
    "data.label_separator": "classify multi-label in CSV: e.g. '|' for 'sports|politics'",
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
    "train.lora": "LoRA adapters instead of full fine-tuning, e.g. {r: 8, alpha: 16}; empty for full",
    "train.early_stopping": "stop when the dev metric stops improving; empty to always run every epoch",
    "train.early_stopping.metric": "empty for the task's headline (ner: f1, classify: accuracy)",
    "train.early_stopping.mode": "max (higher is better) | min",
    "train.early_stopping.patience": "evaluations without improvement before stopping",
    "train.early_stopping.min_delta": "smallest change that counts as an improvement",
    "train.group_by_length": ("batch similar lengths together: less padding, faster; on WNUT-16 (1,916 tweets) "
                              "false gave +0.02 test F1 over 4 seeds at ~30% fewer tokens/s"),
    "train.compile": "torch.compile the model: sometimes faster on GPU, slower to start",
    "train.threads": "CPU threads; empty picks the free cores (a busy core makes 2 threads much slower than 1)",
    "output": "where the run folder goes",
    "output.dir": "parent folder of run folders",
    "output.name": "run folder name; empty for a timestamp plus the task",
}


def render(task: str) -> str:
    if task not in TASK_NAMES:
        raise ConfigError(f"unknown task '{task}'; choose one of: {', '.join(TASK_NAMES)}")
    cfg = validate(_TASK_DEFAULTS[task])
    data = cfg.model_dump(mode="json")
    lines = [f"# runassist config for {task}. Any key can be overridden on the command line:",
             "#   runassist train this.yaml train.lr=3e-5 data.train=my.conll", ""]
    for section, values in data.items():
        lines.append(f"{section}:  # {COMMENTS[section]}")
        _render_mapping(lines, section, values, indent=2)
        lines.append("")
    return "\n".join(lines)


def _render_mapping(lines: list[str], prefix: str, values: dict[str, Any], *, indent: int) -> None:
    pad = " " * indent
    for key, value in values.items():
        path = f"{prefix}.{key}"
        comment = COMMENTS.get(path, "")
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:  # {comment}")
            _render_mapping(lines, path, value, indent=indent + 2)
            continue
        text = "" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")
        if text.endswith("..."):
            text = text[:-3].strip()
        lines.append(f"{pad}{key}: {text}  # {comment}".replace(": " + "  #", ":  #"))


def default_config(task: str) -> Config:
    return validate(_TASK_DEFAULTS[task])
