"""The report's Errors section for speech recognition: WER and CER, and the worst utterances with
their reference beside the hypothesis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WORST = 15  # utterances listed


def errors_section(scores: dict[str, Any], predictions: Path | None) -> str:
    from runassist.htmlparts import e, missing, num, table
    from runassist.metrics.speech import normalize, utterance_rates

    head = (f"<p>WER {num(scores.get('wer'))} ({scores.get('word_errors', '?')} word errors in "
            f"{scores.get('reference_words', '?')} reference words), CER {num(scores.get('cer'))}; "
            f"{num(scores.get('exact'))} of utterances exactly right after normalisation (lower-case, punctuation "
            "removed, white space collapsed).</p>")
    if predictions is None:
        return head + missing("No predictions file (eval/<split>.jsonl): utterances cannot be shown.")
    rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if not r.get("skipped")]
    rates = utterance_rates([r.get("gold") or "" for r in rows], [r.get("text") or "" for r in rows])
    wrong = sorted(((rate, r) for rate, r in zip(rates, rows) if rate > 0), key=lambda item: -item[0])
    if not wrong:
        return head + "<p>Every test utterance is transcribed exactly (after normalisation).</p>"
    body = [[e(Path(str(r.get("file", ""))).name), num(rate, 3), e(normalize(r.get("gold") or "")),
             '<span class="bad">' + e(normalize(r.get("text") or "") or "(empty)") + "</span>"]
            for rate, r in wrong[:WORST]]
    return (head + f'<p class="small">{len(wrong)} utterances have errors; the {min(WORST, len(wrong))} worst:</p>'
            + table(["file", "WER", "reference", "hypothesis"], body, cls="mistakes"))
