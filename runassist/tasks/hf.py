"""Loading Hugging Face models and tokenizers the same way for every task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from runassist.errors import RunassistError


LOOKED_FOR = "a packaged model (`runassist assets`), a local model folder, or a hub name (org/name)"


def check_model_folder(source: str) -> None:
    """A local folder must hold weights, and a hub name must be reachable (or cached); say so in one
    line before any compute is spent."""
    path = Path(source).expanduser()
    if not path.exists():
        if source.startswith((".", "/", "~")) or path.suffix or source.count("/") > 1 or "\\" in source:
            raise RunassistError(f"model.source: no folder '{source}' (looked for {LOOKED_FOR})")
        _check_hub_name(source)
        return
    if not path.is_dir():
        raise RunassistError(f"model.source: '{source}' is a file; expected a model folder")
    if not (path / "config.json").is_file():
        raise RunassistError(f"model.source: '{source}' has no config.json")
    weights = [p for p in path.iterdir() if p.name.endswith((".safetensors", ".bin", ".pt", ".gguf"))]
    if not weights:
        raise RunassistError(f"model.source: '{source}' has no weights (expected model.safetensors)")
    if not any(p.name.endswith(".safetensors") for p in weights) and not (path / "adapter_config.json").exists():
        raise RunassistError(
            f"model.source: '{source}' has weights only in pickle formats; runassist loads safetensors only "
            "(convert with `model.save_pretrained(dir, safe_serialization=True)`)"
        )


def _check_hub_name(source: str) -> None:
    """Offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE), a hub name works only if it is cached."""
    import os

    offline = any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on")
                  for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    if not offline:
        return  # from_pretrained downloads it, and load_* below turns a failure into one line
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(source, "config.json"), str):
        raise RunassistError(f"model.source: '{source}' is not a local folder, and as a hub name it is not in the "
                             f"cache while HF_HUB_OFFLINE is set (looked for {LOOKED_FOR})")


def _loading(source: str, what: str):
    """transformers reports a missing or unreachable model with a long traceback; one line instead."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RunassistError(f"model.source: cannot load the {what} of '{source}' ({first[:300]}; "
                                 f"looked for {LOOKED_FOR})") from None
    return guard()


def quiet_transformers() -> None:
    """The load report (MISSING classifier.weight ...) and shard progress bars are noise for our
    users: a new head is always freshly initialised. Real errors still raise."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    quiet_transformers()
    with _loading(source, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(source)
    if not getattr(tokenizer, "is_fast", False):
        raise RunassistError(f"model.source: '{source}' has no fast tokenizer (tokenizer.json); runassist needs "
                             "word_ids() and offsets, which only fast tokenizers give")
    return tokenizer


def load_config(source: str) -> Any:
    """The model's ``config.json`` (``AutoConfig``), a missing or unreachable one as one line: for a task
    whose encoding depends on the kind of model (encoder-decoder or decoder-only)."""
    from transformers import AutoConfig

    quiet_transformers()
    with _loading(source, "config"):
        return AutoConfig.from_pretrained(source)


def load_model(auto_cls: Any, source: str, labels: list[str] | None, *, dropout: float | None = None,
               **config_kwargs: Any) -> Any:
    """``auto_cls.from_pretrained`` from safetensors, with the head sized for ``labels`` (None: the
    model's own head, e.g. a language model's)."""
    from transformers import AutoConfig

    quiet_transformers()
    with _loading(source, "config"):
        config = AutoConfig.from_pretrained(source)
    if labels is not None:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    for key, value in config_kwargs.items():
        setattr(config, key, value)
    # ignore_mismatched_sizes: continuing from a run's model with a different label set
    # replaces the head instead of failing.
    model = auto_cls.from_pretrained(source, config=config, ignore_mismatched_sizes=True, use_safetensors=True)
    if dropout is not None:
        # Model families name their dropout config keys differently (hidden_dropout_prob,
        # dropout, attention_dropout, ...); every one of them builds nn.Dropout modules.
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = dropout
    return model


def keep_head_rows(model: torch.nn.Module, source: str, n_old: int, n_new: int) -> list[str]:
    """After ``load_model`` gave a head sized for ``n_new`` labels (new head: random), put back the
    first ``n_old`` rows from the source's trained head, so the old labels predict as before while the
    new ones learn. A head parameter is any tensor whose first dimension is the label count in both
    (``classifier.weight``/``.bias`` in every Hugging Face family). Returns the names restored."""
    from safetensors import safe_open

    path = Path(source) / "model.safetensors"
    if not path.exists():
        raise RunassistError(f"{source}: no model.safetensors to keep the trained head rows from")
    restored = []
    params = dict(model.named_parameters())
    with safe_open(str(path), framework="pt") as f, torch.no_grad():
        for name in f.keys():  # noqa: SIM118 -- safe_open has keys(), not iteration
            param = params.get(name)
            if param is None or param.shape[0] != n_new:
                continue
            old = f.get_tensor(name)
            if old.shape[0] == n_old and old.shape[1:] == param.shape[1:]:
                param[:n_old] = old.to(param.dtype)
                restored.append(name)
    if not restored:
        raise RunassistError(f"{source}: found no head of {n_old} labels to extend to {n_new}")
    return restored
