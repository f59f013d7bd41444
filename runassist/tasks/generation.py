"""Text generation, shared by the generative tasks (seq2seq, chat): the settings every run saves, the
``GenerationConfig`` made from them, batched generation, and streaming that a client can stop.

``max_new_tokens`` is always passed explicitly: a model whose config has no length set would
otherwise stop at transformers' default of 20 tokens (transformers #10032), which silently cuts
summaries and replies.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field


class GenerationSettings(BaseModel):
    """``task.generation``: how predictions are generated; saved with the run (model/generation_config.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(128, ge=1, le=8192, description="longest output, in tokens (never the default 20)")
    num_beams: int = Field(1, ge=1, le=16, description="beam search width; 1: greedy or sampling")
    length_penalty: float = Field(1.0, description="beam search: > 1 favours longer outputs, < 1 shorter")
    no_repeat_ngram_size: int = Field(0, ge=0, description="forbid repeating any n-gram of this size; 0: off")
    repetition_penalty: float = Field(1.0, gt=0, description="> 1 makes repeated tokens less likely")
    do_sample: bool = Field(False, description="sample instead of taking the most likely token")
    temperature: float = Field(1.0, gt=0, description="sampling: < 1 sharper, > 1 more varied")
    top_p: float = Field(1.0, gt=0, le=1, description="sampling: keep the most likely tokens up to this probability")
    top_k: int = Field(50, ge=0, description="sampling: keep this many most likely tokens; 0: all")


PADDING = Literal["left", "right"]
# Kept from a model's own generation config: what it needs to write well-formed text at all.
_STRUCTURAL = ("forced_bos_token_id", "forced_eos_token_id", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens")


def generation_config(settings: GenerationSettings, processor: Any, model: Any,
                      overrides: dict[str, Any] | None = None) -> Any:
    """A ``transformers.GenerationConfig`` from the run's settings (and a request's overrides)."""
    from transformers import GenerationConfig

    values = {**settings.model_dump(), **(overrides or {})}
    if not values["do_sample"]:  # transformers warns about sampling settings it would ignore
        for key in ("temperature", "top_p", "top_k"):
            values.pop(key)
    if values["num_beams"] == 1:  # a beam-only setting without beams makes save_pretrained refuse the config
        values.pop("length_penalty")
    tokenizer = getattr(processor, "tokenizer", processor)
    own = getattr(model, "generation_config", None)
    eos = getattr(own, "eos_token_id", None) or tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if isinstance(eos, list) else eos)
    start = getattr(getattr(model, "config", None), "decoder_start_token_id", None)
    # What the model needs to write well-formed text at all (Marian never writes its pad token, mBART-50
    # starts with the target language) is kept; lengths, beams and sampling are the run's settings alone.
    kept = {key: getattr(own, key) for key in _STRUCTURAL if getattr(own, key, None) is not None}
    return GenerationConfig(**values, **kept, eos_token_id=eos, pad_token_id=pad,
                            **({"decoder_start_token_id": start} if start is not None else {}))


class _StopOnEvent:
    """A stopping criterion: ends generation when ``event`` is set (the client went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_text(model: Any, processor: Any, inputs: dict[str, torch.Tensor], config: Any, *,
                stop: threading.Event | None = None, usage: dict[str, Any] | None = None) -> Iterator[str]:
    """Generate for one input and yield the text as it is made (``TextIteratorStreamer`` in a thread).
    Setting ``stop`` ends generation within a token; leaving the iterator early sets it. ``usage``, when
    given, is filled once generation ends: ``prompt_tokens``, ``completion_tokens`` (counted as they are
    made, the end-of-sequence token included) and ``ended``: ``eos``, ``length`` (max_new_tokens
    reached) or ``stopped`` (``stop`` was set)."""
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        tokens, last = 0, None

        def put(self, value: torch.Tensor) -> None:
            if not (self.skip_prompt and self.next_tokens_are_prompt):
                self.tokens += value.numel()  # one sequence: one token a step
                self.last = int(value.reshape(-1)[-1])
            super().put(value)

    tokenizer = getattr(processor, "tokenizer", processor)
    stop = stop or threading.Event()
    streamer = CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    failure: list[BaseException] = []
    mask = inputs.get("attention_mask")
    prompt_tokens = int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**inputs, generation_config=config, streamer=streamer,
                               stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]))
        except BaseException as exc:  # noqa: BLE001 -- handed to the consumer below
            failure.append(exc)
            streamer.end()
            return
        if usage is not None:
            eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
            ended = "eos" if streamer.last in eos else "length" if streamer.tokens >= config.max_new_tokens \
                else "stopped"
            usage.update(prompt_tokens=prompt_tokens, completion_tokens=streamer.tokens, ended=ended)

    thread = threading.Thread(target=run, daemon=True, name="runassist-generate")
    thread.start()
    try:
        for piece in streamer:
            if piece:
                yield piece
    finally:
        stop.set()
        thread.join(timeout=60)
    if failure:
        raise failure[0]
